//! A source or cache file as the tool sees it without reading it: its stat identity (size,
//! modification and change times, inode), and its bytes mapped into memory for reading.
//!
//! The stat cache, the folder walk and the artifact checks all decide "unchanged" from the
//! same [`FileStat`], so one definition keeps them agreeing.

use std::fs;
use std::path::Path;
/// The stat of a file that decides whether its remembered hash still holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// A file time as nanoseconds since the epoch, from its seconds and nanoseconds.
pub fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

impl FileStat {
    pub fn of(meta: &fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            size: meta.len(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            inode: meta.ino(),
        }
    }
}

/// `path` mapped into memory, or `None` if it is absent, empty or unreadable. Only for the
/// cache's own files, which are replaced by renaming a new one over them, never written in
/// place, so the mapped bytes never change.
pub fn map_file(path: &Path) -> Option<memmap2::Mmap> {
    let file = fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() == 0 {
        return None;
    }
    // SAFETY: see above: the file is never modified in place while mapped.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}
