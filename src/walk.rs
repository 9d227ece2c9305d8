//! Listing an image folder and stat'ing its files, which is all a warm run does per image.
//!
//! A warm run at 25,000 images is bound by the kernel's work for `getdents` and `stat`
//! (about 8 ms and 40 ms of CPU here), so the two overlap: while the folder is being listed,
//! each batch of names already read is stat'ed on the thread pool, by name within its open
//! folder (`fstatat`, no path lookup per file). The result is sorted by relative path.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use crate::stat_cache::FileStat;

/// Deepest folder nesting searched for images.
const MAX_DEPTH: usize = 32;

/// Names stat'ed per task.
const BATCH: usize = 512;

/// Folders kept open at once for `fstatat` (well under the usual limit of 1,024 open files);
/// past it, files are stat'ed by path.
const MAX_OPEN_FOLDERS: usize = 128;

/// A file found by `walk`: its path relative to the root (`/`-separated) and its stat, or
/// why it has none.
pub type Found = (String, Result<FileStat, String>);

/// The files under `root` whose extension (any case) is in `exts`, sorted by relative path,
/// each stat'ed (following symlinks). Hidden entries are skipped and symlinked folders not
/// followed.
pub fn walk(root: &Path, exts: &[String]) -> Result<Vec<Found>> {
    let walker = Walker {
        exts,
        open: AtomicUsize::new(0),
        found: Mutex::new(Vec::new()),
    };
    rayon::scope(|scope| walker.folder(scope, root, "", 0))?;
    let mut found: Vec<Found> = walker.found.into_inner().unwrap_or_else(|e| e.into_inner()).concat();
    found.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

struct Walker<'a> {
    exts: &'a [String],
    /// Folders open now.
    open: AtomicUsize,
    found: Mutex<Vec<Vec<Found>>>,
}

impl<'w> Walker<'w> {
    fn folder<'s>(&'s self, scope: &rayon::Scope<'s>, dir: &Path, prefix: &str, depth: usize) -> Result<()>
    where
        'w: 's,
    {
        if depth > MAX_DEPTH {
            bail!("{} is nested more than {MAX_DEPTH} folders deep", dir.display());
        }
        let cannot = || format!("cannot list {}", dir.display());
        let mut at: Option<std::sync::Arc<Folder<'s>>> = None;
        let mut batch = Vec::new();
        for e in fs::read_dir(dir).with_context(cannot)? {
            let e = e.with_context(cannot)?;
            // A name that is not UTF-8 is kept in its lossy form and then fails to stat, with
            // the error listed.
            let name = e
                .file_name()
                .into_string()
                .unwrap_or_else(|n| n.to_string_lossy().into_owned());
            if name.starts_with('.') {
                continue;
            }
            let is_dir = e.file_type().with_context(cannot)?.is_dir();
            let image = !is_dir
                && name
                    .rsplit_once('.')
                    .is_some_and(|(_, x)| self.exts.iter().any(|e| e.eq_ignore_ascii_case(x)));
            if !is_dir && !image {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if is_dir {
                let sub = dir.join(rel.rsplit('/').next().unwrap_or(&rel));
                self.folder(scope, &sub, &rel, depth + 1)?;
                continue;
            }
            batch.push(rel);
            if batch.len() == BATCH {
                let folder = at.get_or_insert_with(|| std::sync::Arc::new(Folder::open(dir, &self.open)));
                self.stat_batch(scope, folder.clone(), std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            let folder = at.get_or_insert_with(|| std::sync::Arc::new(Folder::open(dir, &self.open)));
            self.stat_batch(scope, folder.clone(), batch);
        }
        Ok(())
    }

    /// Stats `rels` (files of `folder`) on the pool.
    fn stat_batch<'s>(&'s self, scope: &rayon::Scope<'s>, folder: std::sync::Arc<Folder<'s>>, rels: Vec<String>)
    where
        'w: 's,
    {
        scope.spawn(move |_| {
            let found: Vec<Found> = rels
                .into_iter()
                .map(|rel| {
                    let stat = folder.stat(rel.rsplit('/').next().unwrap_or(&rel));
                    (rel, stat)
                })
                .collect();
            self.found.lock().unwrap_or_else(|e| e.into_inner()).push(found);
        });
    }
}

/// A folder whose files are being stat'ed: open (to stat by name) unless too many are.
struct Folder<'a> {
    path: PathBuf,
    file: Option<fs::File>,
    open: &'a AtomicUsize,
}

impl<'a> Folder<'a> {
    fn open(path: &Path, open: &'a AtomicUsize) -> Folder<'a> {
        let file = (open.fetch_add(1, Ordering::Relaxed) < MAX_OPEN_FOLDERS)
            .then(|| fs::File::open(path).ok())
            .flatten();
        if file.is_none() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        Folder {
            path: path.to_path_buf(),
            file,
            open,
        }
    }

    /// The stat of the regular file `name` in this folder.
    fn stat(&self, name: &str) -> Result<FileStat, String> {
        let Some(file) = &self.file else {
            return regular_file_stat(&self.path.join(name));
        };
        // The name, NUL-terminated, on the stack (Linux file names are at most 255 bytes).
        let mut c_name = [0u8; 256];
        if name.len() >= c_name.len() || name.contains('\0') {
            return regular_file_stat(&self.path.join(name));
        }
        c_name[..name.len()].copy_from_slice(name.as_bytes());
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `file` is an open folder, `c_name` NUL-terminated and `st` a buffer of the
        // size `fstatat` fills; it is read only after a successful call.
        let st = unsafe {
            if libc::fstatat(file.as_raw_fd(), c_name.as_ptr().cast(), st.as_mut_ptr(), 0) != 0 {
                return Err(format!("cannot read: {}", std::io::Error::last_os_error()));
            }
            st.assume_init()
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err("not a regular file".to_string());
        }
        Ok(FileStat {
            size: st.st_size as u64,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            inode: st.st_ino,
        })
    }
}

impl Drop for Folder<'_> {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The stat of a regular file by its path (following symlinks).
pub fn regular_file_stat(path: &Path) -> Result<FileStat, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    Ok(FileStat::of(&meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_nested_filtered_and_stat_errors_listed() {
        let root = std::env::temp_dir().join(format!("pipeline-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a/deep")).unwrap();
        fs::create_dir_all(root.join(".hidden")).unwrap();
        let mut expected = Vec::new();
        for i in 0..(BATCH * 2 + 3) {
            let name = format!("cat.{i}.JPG");
            fs::write(root.join(&name), [i as u8]).unwrap();
            expected.push(name);
        }
        for rel in ["a/x.png", "a/deep/y.jpeg", "a.jpg"] {
            fs::write(root.join(rel), b"12").unwrap();
            expected.push(rel.to_string());
        }
        for rel in ["notes.txt", ".hidden/z.jpg", ".dot.jpg", "a/deep/noext"] {
            fs::write(root.join(rel), b"x").unwrap();
        }
        std::os::unix::fs::symlink("nowhere.jpg", root.join("dangling.jpg")).unwrap();
        expected.push("dangling.jpg".into());
        expected.sort();
        let exts: Vec<String> = ["jpg", "jpeg", "png"].map(String::from).to_vec();
        let found = walk(&root, &exts).unwrap();
        let rels: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rels, expected);
        for (rel, stat) in &found {
            match rel.as_str() {
                "dangling.jpg" => assert!(stat.as_ref().unwrap_err().contains("No such file"), "{stat:?}"),
                _ => {
                    let meta = fs::metadata(root.join(rel)).unwrap();
                    assert_eq!(stat.as_ref().unwrap(), &FileStat::of(&meta), "{rel}");
                }
            }
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
