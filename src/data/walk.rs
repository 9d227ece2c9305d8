//! Listing an image folder and stat'ing its files, which is all a warm run does per image.
//!
//! A warm run at 25,000 images is bound by the kernel's work for `getdents` and `stat`
//! (about 8 ms and 40 ms of CPU here), so the two overlap: while the folder is being listed,
//! each batch of names already read is stat'ed on the thread pool, by name within its open
//! folder (`fstatat`, no path lookup per file). The result is sorted by relative path.
//!
//! Listing is skipped for a folder whose entries cannot have changed: `Listings` remembers
//! each folder's sorted names with its inode, mtime and ctime (`folders.tsv` in the cache).
//! Creating, removing or renaming an entry updates both times (ctime cannot be set back by
//! hand), so matching ones mean the same names; the files themselves are still stat'ed, so
//! an edit in place is seen. A folder changed within `SETTLE` of its listing is not
//! remembered, since a second change within the same clock tick could leave its times as
//! they were (git's "racy" case).

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use crate::data::file::{FileStat, nanos};

/// Deepest folder nesting searched for images.
const MAX_DEPTH: usize = 32;

/// Names stat'ed per task.
const BATCH: usize = 512;

/// Folders kept open at once for `fstatat` (well under the usual limit of 1,024 open files);
/// past it, files are stat'ed by path.
const MAX_OPEN_FOLDERS: usize = 128;

/// How long before its listing a folder must have last changed to be remembered.
const SETTLE: Duration = Duration::from_secs(2);

/// A file found by `walk`: its path relative to the root (`/`-separated) and its stat, or
/// why it has none.
pub type Found = (String, Result<FileStat, String>);

/// The files under `root` whose extension (any case) is in `exts`, sorted by relative path,
/// each stat'ed (following symlinks). Hidden entries are skipped and symlinked folders not
/// followed.
pub fn walk(root: &Path, exts: &[String], listings: &Listings) -> Result<Vec<Found>> {
    let walker = Walker {
        exts,
        listings,
        open: AtomicUsize::new(0),
        found: Mutex::new(Vec::new()),
    };
    rayon::scope(|scope| walker.folder(scope, root, "", 0))?;
    let mut parts = walker.found.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut found: Vec<Found> = match parts.len() {
        1 => parts.remove(0),
        _ => parts.concat(),
    };
    // A remembered folder's files come in order already.
    if !found.is_sorted_by(|a, b| a.0 <= b.0) {
        found.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(found)
}

struct Walker<'a> {
    exts: &'a [String],
    listings: &'a Listings,
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
        let started = SystemTime::now();
        let handle = fs::File::open(dir).with_context(cannot)?;
        let stat = FolderStat::of(&handle.metadata().with_context(cannot)?);
        let key = dir.to_string_lossy();
        let folder = Arc::new(Folder::new(dir, handle, &self.open));
        if let Some(entries) = self.listings.remembered(&key, stat) {
            tracing::trace!(folder = %dir.display(), "listing remembered");
            // Listed before and unchanged since: its images are stat'ed in order, in parallel.
            let mut images = Vec::new();
            for (name, is_dir) in entries {
                if let Some((rel, is_dir)) = self.entry(prefix, name, is_dir) {
                    if is_dir {
                        self.subfolder(scope, dir, &rel, depth)?;
                    } else {
                        images.push(rel);
                    }
                }
            }
            let found: Vec<Found> = images
                .into_par_iter()
                .with_min_len(BATCH / 4)
                .map(|rel| {
                    let stat = folder.stat(rel.rsplit('/').next().unwrap_or(&rel));
                    (rel, stat)
                })
                .collect();
            self.found.lock().unwrap_or_else(|e| e.into_inner()).push(found);
            return Ok(());
        }
        // Listed afresh; its non-hidden entries are remembered if it is settled and each name
        // fits on a line.
        let mut entries = Some(Vec::new());
        let mut batch = Vec::new();
        for e in fs::read_dir(dir).with_context(cannot)? {
            let e = e.with_context(cannot)?;
            // A name that is not UTF-8 is kept in its lossy form and then fails to stat, with
            // the error listed.
            let (name, utf8) = match e.file_name().into_string() {
                Ok(n) => (n, true),
                Err(n) => (n.to_string_lossy().into_owned(), false),
            };
            if name.starts_with('.') {
                continue;
            }
            let is_dir = e.file_type().with_context(cannot)?.is_dir();
            match &mut entries {
                Some(list) if utf8 && !name.contains(['\n', '\t']) => list.push((name.clone(), is_dir)),
                _ => entries = None,
            }
            let Some((rel, is_dir)) = self.entry(prefix, name, is_dir) else {
                continue;
            };
            if is_dir {
                self.subfolder(scope, dir, &rel, depth)?;
                continue;
            }
            batch.push(rel);
            if batch.len() == BATCH {
                self.stat_batch(scope, folder.clone(), std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            self.stat_batch(scope, folder.clone(), batch);
        }
        self.listings.listed(
            key.into_owned(),
            stat,
            entries.filter(|_| stat.settled_before(started, self.listings.settle)),
        );
        Ok(())
    }

    /// Walks the folder `rel` found in `dir` (at `depth`).
    fn subfolder<'s>(&'s self, scope: &rayon::Scope<'s>, dir: &Path, rel: &str, depth: usize) -> Result<()>
    where
        'w: 's,
    {
        self.folder(scope, &dir.join(rel.rsplit('/').next().unwrap_or(rel)), rel, depth + 1)
    }

    /// The image or folder `name` (in the folder at `prefix`) as a relative path, or `None`
    /// for what the walk skips: hidden entries and files without an image extension.
    fn entry(&self, prefix: &str, name: String, is_dir: bool) -> Option<(String, bool)> {
        if name.starts_with('.') {
            return None;
        }
        if !is_dir
            && !name
                .rsplit_once('.')
                .is_some_and(|(_, x)| self.exts.iter().any(|e| e.eq_ignore_ascii_case(x)))
        {
            return None;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        Some((rel, is_dir))
    }

    /// Stats `rels` (files of `folder`) on the pool.
    fn stat_batch<'s>(&'s self, scope: &rayon::Scope<'s>, folder: Arc<Folder<'s>>, rels: Vec<String>)
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
    /// The folder at `path`, keeping `handle` open to stat by name unless too many are.
    fn new(path: &Path, handle: fs::File, open: &'a AtomicUsize) -> Folder<'a> {
        let file = (open.fetch_add(1, Ordering::Relaxed) < MAX_OPEN_FOLDERS).then_some(handle);
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
            mtime_ns: nanos(st.st_mtime, st.st_mtime_nsec),
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

/// A folder's entries: each name and whether it is a folder.
type Entries = Vec<(String, bool)>;

/// What decides whether a folder's remembered listing still holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FolderStat {
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl FolderStat {
    fn of(meta: &fs::Metadata) -> FolderStat {
        use std::os::unix::fs::MetadataExt;
        FolderStat {
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
        }
    }

    /// Whether the folder last changed at least `settle` before `listed`.
    fn settled_before(&self, listed: SystemTime, settle: Duration) -> bool {
        let Some(listed) = listed
            .checked_sub(settle)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        else {
            return false;
        };
        let listed = listed.as_nanos() as i128;
        self.mtime_ns < listed && self.ctime_ns < listed
    }
}

/// Folder listings remembered from earlier walks (see the module documentation), kept as
/// `folders.tsv`: a line `mtime_ns ctime_ns inode path` (tab-separated) per folder, then a
/// line per entry: a tab and its name, with a `/` after a folder's.
pub struct Listings {
    /// The file as read, mapped (it is only ever replaced by a rename).
    map: Option<memmap2::Mmap>,
    /// Each remembered folder: its stat and the byte range of its entry lines.
    folders: HashMap<String, (FolderStat, std::ops::Range<usize>)>,
    /// Folders listed in this run: their stat and entries (`None`: not to be remembered).
    listed: Mutex<Vec<(String, FolderStat, Option<Entries>)>>,
    /// Whether `listed` holds anything not yet saved (a run saves after every stage).
    unsaved: AtomicBool,
    /// How long before its listing a folder must have last changed to be remembered.
    settle: Duration,
}

impl Default for Listings {
    fn default() -> Listings {
        Listings {
            map: None,
            folders: HashMap::new(),
            listed: Mutex::default(),
            unsaved: AtomicBool::new(false),
            settle: SETTLE,
        }
    }
}

impl Listings {
    /// Reads `path`; an unreadable or malformed file remembers nothing (folders are listed).
    pub fn load(path: &Path) -> Listings {
        let map = crate::data::file::map_file(path);
        let mut folders = HashMap::new();
        let text = map.as_deref().unwrap_or_default();
        let mut current: Option<(String, FolderStat, usize)> = None;
        let mut at = 0;
        while at < text.len() {
            let end = text[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |e| at + e);
            let line = &text[at..end];
            if line.first() != Some(&b'\t') {
                if let Some((path, stat, from)) = current.take() {
                    folders.insert(path, (stat, from..at));
                }
                current = parse_folder_line(line).map(|(path, stat)| (path, stat, (end + 1).min(text.len())));
            }
            at = end + 1;
        }
        if let Some((path, stat, from)) = current {
            folders.insert(path, (stat, from..text.len()));
        }
        Listings {
            map,
            folders,
            ..Listings::default()
        }
    }

    /// The remembered entries of `folder` (name, is a folder), sorted, if its stat is `stat`.
    fn remembered(&self, folder: &str, stat: FolderStat) -> Option<Entries> {
        let (was, range) = self.folders.get(folder)?;
        if *was != stat {
            return None;
        }
        let text = std::str::from_utf8(&self.map.as_deref()?[range.clone()]).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.strip_prefix('\t'))
                .map(|name| match name.strip_suffix('/') {
                    Some(dir) => (dir.to_string(), true),
                    None => (name.to_string(), false),
                })
                .collect(),
        )
    }

    /// Notes that `folder` was listed, with the entries to remember (if any).
    fn listed(&self, folder: String, stat: FolderStat, entries: Option<Entries>) {
        if entries.is_some() || self.folders.contains_key(&folder) {
            self.listed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((folder, stat, entries));
            self.unsaved.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the file again if a folder was listed in this run.
    pub fn save(&self, path: &Path, write: impl FnOnce(&Path, &[u8]) -> Result<()>) -> Result<()> {
        if !self.unsaved.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        let text = self.map.as_deref().unwrap_or_default();
        let mut blocks: std::collections::BTreeMap<&str, String> = self
            .folders
            .iter()
            .map(|(path, (stat, range))| {
                let entries = String::from_utf8_lossy(&text[range.clone()]);
                (path.as_str(), folder_block(path, *stat, entries.trim_end_matches('\n')))
            })
            .collect();
        for (path, stat, entries) in listed.iter() {
            blocks.remove(path.as_str());
            if let Some(entries) = entries {
                let mut lines: Vec<String> = entries
                    .iter()
                    .map(|(name, dir)| format!("\t{name}{}", if *dir { "/" } else { "" }))
                    .collect();
                lines.sort_unstable();
                blocks.insert(path, folder_block(path, *stat, &lines.join("\n")));
            }
        }
        // A failed write is tried again at the next save.
        write(path, blocks.into_values().collect::<String>().as_bytes())
            .inspect_err(|_| self.unsaved.store(true, Ordering::Relaxed))
    }
}

/// A folder's lines in `folders.tsv`.
fn folder_block(path: &str, stat: FolderStat, entries: &str) -> String {
    let sep = if entries.is_empty() { "" } else { "\n" };
    format!(
        "{}\t{}\t{}\t{path}\n{entries}{sep}",
        stat.mtime_ns, stat.ctime_ns, stat.inode
    )
}

/// A folder line: its path and stat.
fn parse_folder_line(line: &[u8]) -> Option<(String, FolderStat)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut f = line.splitn(4, '\t');
    let stat = FolderStat {
        mtime_ns: f.next()?.parse().ok()?,
        ctime_ns: f.next()?.parse().ok()?,
        inode: f.next()?.parse().ok()?,
    };
    Some((f.next()?.to_string(), stat))
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
        let found = walk(&root, &exts, &Listings::default()).unwrap();
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

    /// A remembered folder is not listed again until it changes, while its files are still
    /// stat'ed; a folder that changed just before its listing is not remembered.
    #[test]
    fn remembered_listings() {
        let root = std::env::temp_dir().join(format!("pipeline-listings-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sub")).unwrap();
        for rel in ["a.jpg", "b.jpg", "c.png", "sub/d.jpg", "notes.txt"] {
            fs::write(root.join(rel), rel).unwrap();
        }
        std::thread::sleep(Duration::from_millis(150));
        let exts: Vec<String> = ["jpg", "png"].map(String::from).to_vec();
        let saved = root.with_extension("tsv");
        let save = |l: &Listings| l.save(&saved, |p, b| Ok(fs::write(p, b)?)).unwrap();
        let load = || Listings {
            settle: Duration::from_millis(100),
            ..Listings::load(&saved)
        };
        let rels = |found: &[Found]| found.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
        let remembered = |l: &Listings, dir: &Path| {
            let stat = FolderStat::of(&fs::metadata(dir).unwrap());
            l.remembered(&dir.to_string_lossy(), stat).is_some()
        };

        let first = load();
        let found = walk(&root, &exts, &first).unwrap();
        assert_eq!(rels(&found), ["a.jpg", "b.jpg", "c.png", "sub/d.jpg"]);
        save(&first);
        let second = load();
        assert!(remembered(&second, &root) && remembered(&second, &root.join("sub")));
        assert_eq!(walk(&root, &exts, &second).unwrap(), found);

        // Edited in place: the folder is unchanged, the file's new stat is seen.
        fs::write(root.join("b.jpg"), "longer than before").unwrap();
        assert!(remembered(&second, &root));
        let edited = walk(&root, &exts, &second).unwrap();
        assert_eq!(edited[1].1.as_ref().unwrap().size, 18);

        // Added, removed, renamed: the folder changed, so it is listed again.
        fs::write(root.join("e.jpg"), "e").unwrap();
        fs::remove_file(root.join("a.jpg")).unwrap();
        fs::rename(root.join("sub/d.jpg"), root.join("sub/f.jpg")).unwrap();
        assert!(!remembered(&second, &root) && !remembered(&second, &root.join("sub")));
        let changed = walk(&root, &exts, &second).unwrap();
        assert_eq!(rels(&changed), ["b.jpg", "c.png", "e.jpg", "sub/f.jpg"]);
        // Changed just now: not remembered (a change within the same clock tick could leave
        // its times as they are), so the next walk lists them again.
        save(&second);
        let third = load();
        assert!(!remembered(&third, &root) && !remembered(&third, &root.join("sub")));
        assert_eq!(walk(&root, &exts, &third).unwrap(), changed);
        fs::remove_dir_all(&root).unwrap();
        fs::remove_file(&saved).unwrap();
    }
}
