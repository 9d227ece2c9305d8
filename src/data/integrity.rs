//! Checking an artifact's bytes as they are read, at any size: the file is cut into chunks of
//! [`CHUNK_BYTES`], each chunk's BLAKE3 chaining value is recorded when the file is written
//! ([`ChunkHasher`]), and a reader checks every chunk it touches before handing out a byte of
//! it ([`Verifier`], [`CheckAhead`]). So nothing damaged reaches a stage, yet opening an
//! artifact costs no more than before: a chunk is hashed when it is first used, once.
//!
//! The chunks are aligned subtrees of BLAKE3's own tree, so the whole file's BLAKE3 (the
//! record's `blake3`, what `b3sum` prints) is merged from the chunk values: writing hashes
//! each byte once. The sums live in the cache's records; a reader gets them, and reports what
//! it found damaged, through [`Integrity`], which the cache implements.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};
use serde::{Deserialize, Serialize};

use crate::data::hash::hex;

/// The size of a checked chunk: a power of two, so every chunk is a subtree of BLAKE3's tree.
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Hex digits kept of each chunk's chaining value (128 bits: far beyond what random damage
/// could collide with, and half the record's size).
const SUM_HEX: usize = 32;

/// The chunk sums of one file, as its record keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSums {
    /// Bytes per chunk (the last may be shorter).
    pub bytes: u64,
    /// The file's length.
    pub len: u64,
    /// Per chunk, in order: the first 128 bits of its BLAKE3 chaining value, in hex.
    pub blake3: Vec<String>,
}

impl ChunkSums {
    /// The sums of `bytes` (a whole file) and its BLAKE3.
    pub fn of(bytes: &[u8]) -> (ChunkSums, String) {
        let mut hasher = ChunkHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Why these sums cannot describe a file of `len` bytes, if they cannot (a damaged
    /// record must be refused, not trusted or indexed out of bounds).
    pub fn problem(&self, len: u64) -> Option<String> {
        if !self.bytes.is_power_of_two() || !(1024..=1 << 30).contains(&self.bytes) {
            return Some(format!("its record gives a chunk size of {} bytes", self.bytes));
        }
        if self.len != len {
            return Some(format!(
                "its data file has {len} bytes, its chunk sums are for {}",
                self.len
            ));
        }
        let chunks = len.div_ceil(self.bytes);
        if self.blake3.len() as u64 != chunks || self.blake3.iter().any(|s| s.len() != SUM_HEX) {
            return Some(format!(
                "its record holds {} chunk sums for {chunks} chunks",
                self.blake3.len()
            ));
        }
        None
    }

    /// The byte range of chunk `i` in the file.
    fn span(&self, i: usize) -> Range<usize> {
        let start = i as u64 * self.bytes;
        start as usize..(start + self.bytes).min(self.len) as usize
    }
}

/// Hashes a file as it is written: chunk sums and the whole file's BLAKE3, each byte once.
pub struct ChunkHasher {
    chunk: u64,
    current: blake3::Hasher,
    in_current: u64,
    cvs: Vec<ChainingValue>,
}

impl Default for ChunkHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkHasher {
    pub fn new() -> Self {
        Self::with_chunk(CHUNK_BYTES)
    }

    fn with_chunk(chunk: u64) -> Self {
        ChunkHasher {
            chunk,
            current: blake3::Hasher::new(),
            in_current: 0,
            cvs: Vec::new(),
        }
    }

    pub fn update(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            // A full chunk is closed only when more bytes come: the last chunk of a file of
            // one chunk must give the root hash, not a chaining value.
            if self.in_current == self.chunk {
                self.cvs.push(self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
                self.current.set_input_offset(self.cvs.len() as u64 * self.chunk);
                self.in_current = 0;
            }
            let take = ((self.chunk - self.in_current) as usize).min(buf.len());
            self.current.update(&buf[..take]);
            self.in_current += take as u64;
            buf = &buf[take..];
        }
    }

    /// The chunk sums and the file's BLAKE3 (hex).
    pub fn finish(mut self) -> (ChunkSums, String) {
        let len = self.cvs.len() as u64 * self.chunk + self.in_current;
        let root = if self.cvs.is_empty() {
            let root = self.current.finalize();
            if len > 0 {
                self.cvs.push(self.current.finalize_non_root());
            }
            root
        } else {
            self.cvs.push(self.current.finalize_non_root());
            root_of(&self.cvs, len, self.chunk)
        };
        (sums_of(&self.cvs, len, self.chunk), root.to_hex().to_string())
    }
}

/// As [`ChunkSums::of`], the chunks hashed on every core: for checking a whole file.
pub fn sums_on_every_core(bytes: &[u8]) -> (ChunkSums, String) {
    use rayon::prelude::*;
    let chunk = CHUNK_BYTES;
    if bytes.len() as u64 <= chunk {
        return ChunkSums::of(bytes);
    }
    let cvs: Vec<ChainingValue> = bytes
        .par_chunks(chunk as usize)
        .enumerate()
        .map(|(i, part)| {
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(i as u64 * chunk);
            hasher.update(part);
            hasher.finalize_non_root()
        })
        .collect();
    let len = bytes.len() as u64;
    (
        sums_of(&cvs, len, chunk),
        root_of(&cvs, len, chunk).to_hex().to_string(),
    )
}

/// The root hash of a file of `len` bytes (more than one chunk) made of the chunks `cvs`.
fn root_of(cvs: &[ChainingValue], len: u64, chunk: u64) -> blake3::Hash {
    let left = left_subtree_len(len);
    let (l, r) = cvs.split_at((left / chunk) as usize);
    merge_subtrees_root(&subtree(l, left, chunk), &subtree(r, len - left, chunk), Mode::Hash)
}

fn sums_of(cvs: &[ChainingValue], len: u64, chunk: u64) -> ChunkSums {
    ChunkSums {
        bytes: chunk,
        len,
        blake3: cvs.iter().map(|cv| hex(&cv[..SUM_HEX / 2])).collect(),
    }
}

/// The chaining value of the subtree of `len` bytes made of the chunks `cvs`.
fn subtree(cvs: &[ChainingValue], len: u64, chunk: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let k = (left / chunk) as usize;
    let (l, r) = cvs.split_at(k);
    merge_subtrees_non_root(&subtree(l, left, chunk), &subtree(r, len - left, chunk), Mode::Hash)
}

/// The sum of chunk `i` holding `bytes`, as [`ChunkSums`] keeps it.
fn chunk_sum(i: usize, chunk: u64, bytes: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(i as u64 * chunk);
    hasher.update(bytes);
    hex(&hasher.finalize_non_root()[..SUM_HEX / 2])
}

/// Where readers get the chunk sums of an artifact file, whom they tell when its bytes do
/// not match them, and what has been checked already.
pub trait Integrity: Send + Sync {
    /// The sums of the artifact file at `file`; an error when there are none to trust.
    fn sums(&self, file: &Path) -> anyhow::Result<ChunkSums>;
    /// Called when bytes of `file` do not match their sums (`why` says which), before the
    /// read fails: the artifact must not be used again until it is recomputed.
    fn damaged(&self, file: &Path, why: &str);
    /// The chunks this process found intact, shared by every reader of this source: a file
    /// read by several stages of one run is checked once, by the first.
    fn checked(&self) -> &Checked;
}

/// A chunk's state in [`Checked`].
const UNCHECKED: u8 = 0;
const CHECKING: u8 = 1;
const INTACT: u8 = 2;

/// What a file is, for [`Checked`]: an artifact is never changed in place (a recompute
/// renames a new file over it), so the same device, inode, length and modification time,
/// with the same recorded sums, mean the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The state of each chunk of a file ([`UNCHECKED`], [`CHECKING`], [`INTACT`]).
type States = Arc<[AtomicU8]>;

/// Per file, its sums and the state of each chunk.
#[derive(Default)]
pub struct Checked {
    files: Mutex<HashMap<FileId, (ChunkSums, States)>>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = self.files.lock().map_or(0, |m| m.len());
        write!(f, "Checked({files} files)")
    }
}

impl Checked {
    /// Records that the file whose metadata is `meta` was just checked whole against `sums`
    /// (a lookup did it): its readers in this process need not check it again.
    pub fn mark_intact(&self, meta: &std::fs::Metadata, sums: &ChunkSums) {
        for state in self.states(FileId::of(meta), sums).iter() {
            state.store(INTACT, Ordering::Release);
        }
    }

    /// The chunk states of the file `id` with `sums`, shared with earlier readers of it.
    fn states(&self, id: FileId, sums: &ChunkSums) -> States {
        let fresh = || -> States { (0..sums.blake3.len()).map(|_| AtomicU8::new(UNCHECKED)).collect() };
        let Ok(mut files) = self.files.lock() else {
            return fresh();
        };
        match files.get(&id) {
            Some((known, states)) if known == sums => states.clone(),
            _ => {
                let states = fresh();
                files.insert(id, (sums.clone(), states.clone()));
                states
            }
        }
    }
}

/// Bytes that do not match their recorded sums: the error every reader returns for them.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {why}; the artifact is damaged and marked so: run again to recompute it")]
pub struct Damaged {
    pub file: PathBuf,
    pub why: String,
}

/// Time spent checking chunks in this process, in nanoseconds (what a stage's record reports
/// as its checking cost).
static CHECK_NANOS: AtomicU64 = AtomicU64::new(0);

/// Seconds this process has spent checking chunks so far.
pub fn seconds_checking() -> f64 {
    CHECK_NANOS.load(Ordering::Relaxed) as f64 / 1e9
}

/// The chunks of one file and which of them have been checked; shared by the threads that
/// read the file.
pub struct Verifier {
    file: PathBuf,
    sums: ChunkSums,
    states: States,
    integrity: Arc<dyn Integrity>,
}

impl Verifier {
    /// The verifier of the artifact file at `file`, whose metadata (of the very file mapped)
    /// is `meta`; an error (the artifact marked damaged) when its sums do not describe it.
    pub fn new(file: &Path, meta: &std::fs::Metadata, integrity: &Arc<dyn Integrity>) -> anyhow::Result<Verifier> {
        let sums = integrity.sums(file)?;
        let verifier = Verifier {
            file: file.to_path_buf(),
            states: integrity.checked().states(FileId::of(meta), &sums),
            sums,
            integrity: integrity.clone(),
        };
        if let Some(why) = verifier.sums.problem(meta.len()) {
            return Err(verifier.fail(why).into());
        }
        Ok(verifier)
    }

    fn fail(&self, why: String) -> Damaged {
        self.integrity.damaged(&self.file, &why);
        Damaged {
            file: self.file.clone(),
            why,
        }
    }

    /// Checks (once) every chunk that bytes `range` of `data`, the whole file, fall in.
    pub fn ensure(&self, data: &[u8], range: Range<usize>) -> Result<(), Damaged> {
        if range.is_empty() {
            return Ok(());
        }
        if range.end > data.len() || data.len() as u64 != self.sums.len {
            return Err(self.fail(format!(
                "a read of bytes {range:?} falls outside its {} bytes",
                data.len()
            )));
        }
        let chunk = self.sums.bytes as usize;
        (range.start / chunk..=(range.end - 1) / chunk).try_for_each(|i| self.check_chunk(data, i))
    }

    /// Checks chunk `i` of `data` unless it was found intact before; waits while another
    /// thread checks it.
    fn check_chunk(&self, data: &[u8], i: usize) -> Result<(), Damaged> {
        if cfg!(feature = "unchecked-reads") {
            return Ok(());
        }
        let state = &self.states[i];
        loop {
            match state.compare_exchange(UNCHECKED, CHECKING, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => break,
                Err(INTACT) => return Ok(()),
                Err(_) => std::thread::yield_now(),
            }
        }
        let started = Instant::now();
        let span = self.sums.span(i);
        let sum = chunk_sum(i, self.sums.bytes, &data[span.clone()]);
        CHECK_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if sum != self.sums.blake3[i] {
            state.store(UNCHECKED, Ordering::Release);
            return Err(self.fail(format!(
                "bytes {}..{} do not match their recorded BLAKE3 (chunk {i})",
                span.start, span.end
            )));
        }
        state.store(INTACT, Ordering::Release);
        Ok(())
    }

    /// Bytes per chunk.
    pub fn chunk_bytes(&self) -> u64 {
        self.sums.bytes
    }

    /// The byte range, in `data`, of `part`, a slice of it (how a reader names what it is
    /// about to use of a zero-copy buffer).
    pub fn range_of(data: &[u8], part: &[u8]) -> Range<usize> {
        let start = (part.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        start..start + part.len()
    }
}

/// A helper thread that checks a file's chunks in order, ahead of a reader passing over it
/// (at most [`AHEAD`] chunks ahead), so that on a machine with a core to spare the pass does
/// not wait for its checks: the reader still checks (or finds checked) every chunk it uses.
pub struct CheckAhead {
    /// The chunk the reader is at.
    at: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    helper: Option<std::thread::JoinHandle<()>>,
}

/// How many chunks [`CheckAhead`] checks ahead of the reader.
const AHEAD: usize = 32;

impl CheckAhead {
    pub fn start(map: Arc<memmap2::Mmap>, verifier: Arc<Verifier>) -> CheckAhead {
        let at = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let helper = (verifier.states.len() > 1 && !cfg!(feature = "unchecked-reads"))
            .then(|| {
                let (at, stop) = (at.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("check-ahead".into())
                    .spawn(move || {
                        for i in 0..verifier.states.len() {
                            while i > at.load(Ordering::Relaxed) + AHEAD {
                                if stop.load(Ordering::Relaxed) {
                                    return;
                                }
                                std::thread::park_timeout(Duration::from_millis(20));
                            }
                            // A damaged chunk ends the help: the reader finds it when it gets there.
                            if stop.load(Ordering::Relaxed) || verifier.check_chunk(&map, i).is_err() {
                                return;
                            }
                        }
                    })
                    .ok()
            })
            .flatten();
        CheckAhead { at, stop, helper }
    }

    /// Tells the helper the reader is at byte `offset` of a file of `chunk`-byte chunks.
    pub fn reader_at(&self, offset: usize, chunk: u64) {
        self.at.store(offset / chunk as usize, Ordering::Relaxed);
        if let Some(helper) = &self.helper {
            helper.thread().unpark();
        }
    }
}

impl Drop for CheckAhead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(helper) = self.helper.take() {
            helper.thread().unpark();
            let _ = helper.join();
        }
    }
}

/// Maps the artifact file at `path` (an empty file maps to an empty slice).
pub fn map(path: &Path) -> anyhow::Result<Arc<memmap2::Mmap>> {
    Ok(map_with_metadata(path)?.0)
}

/// Maps the artifact file at `path`, with the metadata of the very file mapped.
pub fn map_with_metadata(path: &Path) -> anyhow::Result<(Arc<memmap2::Mmap>, std::fs::Metadata)> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open artifact {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    // SAFETY: artifacts are immutable once committed (written to a temporary name and
    // renamed into place, never modified), so the mapped bytes do not change under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    Ok((Arc::new(map), meta))
}

/// Sums computed from the files themselves: for tests of the readers, which trust whatever
/// a file holds when it is first opened, and remember what was reported damaged.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct FromFiles {
        pub sums: Mutex<std::collections::HashMap<PathBuf, ChunkSums>>,
        pub damaged: Mutex<Vec<String>>,
        checked: Checked,
    }

    impl FromFiles {
        /// Records the sums of the file at `path` as it is now.
        pub(crate) fn learn(&self, path: &Path) {
            self.learn_bytes(path, &std::fs::read(path).unwrap());
        }

        /// Records `bytes` as what the file at `path` holds.
        pub(crate) fn learn_bytes(&self, path: &Path, bytes: &[u8]) {
            self.sums
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), ChunkSums::of(bytes).0);
        }
    }

    impl Integrity for FromFiles {
        fn sums(&self, file: &Path) -> anyhow::Result<ChunkSums> {
            if !self.sums.lock().unwrap().contains_key(file) {
                self.learn(file);
            }
            Ok(self.sums.lock().unwrap()[file].clone())
        }
        fn damaged(&self, file: &Path, why: &str) {
            self.damaged.lock().unwrap().push(format!("{}: {why}", file.display()));
        }
        fn checked(&self) -> &Checked {
            &self.checked
        }
    }

    /// A fresh trusting source, as the readers take it.
    pub(crate) fn trusting() -> Arc<dyn Integrity> {
        Arc::new(FromFiles::default())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FromFiles;
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect()
    }

    #[test]
    fn the_merged_root_is_the_files_blake3_at_every_length() {
        let data = bytes(5 * 4096 + 17);
        for chunk in [1024u64, 4096] {
            for len in [
                0,
                1,
                1023,
                1024,
                1025,
                2048,
                4095,
                4096,
                4097,
                8192,
                12288,
                12289,
                5 * 4096 + 17,
            ] {
                for split in [1, 7, 1000, 5000] {
                    let mut h = ChunkHasher::with_chunk(chunk);
                    for part in data[..len].chunks(split) {
                        h.update(part);
                    }
                    let (sums, root) = h.finish();
                    assert_eq!(
                        root,
                        blake3::hash(&data[..len]).to_hex().to_string(),
                        "len {len} chunk {chunk}"
                    );
                    assert_eq!(sums.problem(len as u64), None, "len {len} chunk {chunk}");
                    for (i, sum) in sums.blake3.iter().enumerate() {
                        assert_eq!(*sum, chunk_sum(i, chunk, &data[sums.span(i)]), "len {len} chunk {i}");
                    }
                }
            }
        }
        for len in [
            1,
            CHUNK_BYTES as usize,
            CHUNK_BYTES as usize + 1,
            3 * CHUNK_BYTES as usize + 17,
        ] {
            let big = bytes(len);
            assert_eq!(sums_on_every_core(&big), ChunkSums::of(&big), "{len} bytes");
        }
        let (sums, root) = ChunkSums::of(&data);
        assert_eq!((sums.bytes, sums.blake3.len()), (CHUNK_BYTES, 1));
        assert_eq!(root, blake3::hash(&data).to_hex().to_string());
    }

    #[test]
    fn sums_that_do_not_fit_the_file_are_refused() {
        let (sums, _) = ChunkSums::of(&bytes(3000));
        assert_eq!(sums.problem(3000), None);
        assert!(sums.problem(3001).unwrap().contains("3001 bytes"));
        for bad in [
            ChunkSums {
                bytes: 1000,
                ..sums.clone()
            },
            ChunkSums {
                bytes: 0,
                ..sums.clone()
            },
            ChunkSums {
                blake3: vec![],
                ..sums.clone()
            },
            ChunkSums {
                blake3: vec!["ab".into()],
                ..sums.clone()
            },
        ] {
            assert!(bad.problem(3000).is_some(), "{bad:?}");
        }
    }

    /// A file of `n` bytes in a temporary folder, its sums learnt, and a reader of it.
    fn setup(n: usize) -> (tempfile::TempDir, PathBuf, Arc<FromFiles>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.arrow");
        std::fs::write(&path, bytes(n)).unwrap();
        let source = Arc::new(FromFiles::default());
        source.learn(&path);
        (dir, path, source)
    }

    #[test]
    fn a_damaged_chunk_is_refused_and_the_others_still_read() {
        let n = 3 * CHUNK_BYTES as usize + 100;
        let (_dir, path, _) = setup(n);
        let mut damaged = bytes(n);
        damaged[2 * CHUNK_BYTES as usize + 5] ^= 4;
        std::fs::write(&path, &damaged).unwrap();
        let source = Arc::new(FromFiles::default());
        source.learn_bytes(&path, &bytes(n));
        let integrity: Arc<dyn Integrity> = source.clone();
        let (map, meta) = map_with_metadata(&path).unwrap();
        let v = Arc::new(Verifier::new(&path, &meta, &integrity).unwrap());
        // A helper checking ahead finds the damage too, and only tells of it.
        let ahead = CheckAhead::start(map.clone(), v.clone());
        v.ensure(&map, CHUNK_BYTES as usize + 3..CHUNK_BYTES as usize + 1003)
            .unwrap();
        v.ensure(&map, n - 50..n).unwrap();
        let err = v
            .ensure(&map, 2 * CHUNK_BYTES as usize - 10..2 * CHUNK_BYTES as usize + 10)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bytes 2097152..3145728 do not match their recorded BLAKE3 (chunk 2)"),
            "{text}"
        );
        assert!(text.contains("marked so: run again"), "{text}");
        drop(ahead);
        let told = source.damaged.lock().unwrap().clone();
        assert!(
            (1..=2).contains(&told.len()) && told.iter().all(|t| t.contains("(chunk 2)")),
            "{told:?}"
        );
    }

    #[test]
    fn a_file_of_another_length_than_its_sums_is_refused_at_open() {
        let (_dir, path, source) = setup(5000);
        std::fs::write(&path, bytes(5001)).unwrap();
        let integrity: Arc<dyn Integrity> = source.clone();
        let meta = std::fs::metadata(&path).unwrap();
        let err = format!("{:#}", Verifier::new(&path, &meta, &integrity).map(|_| ()).unwrap_err());
        assert!(err.contains("has 5001 bytes, its chunk sums are for 5000"), "{err}");
        assert_eq!(source.damaged.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_chunk_is_checked_once_however_often_it_is_read() {
        let (_dir, path, source) = setup(2 * CHUNK_BYTES as usize);
        let integrity: Arc<dyn Integrity> = source;
        let data = std::fs::read(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let v = Verifier::new(&path, &meta, &integrity).unwrap();
        v.ensure(&data, 10..20).unwrap();
        let state = |v: &Verifier, i: usize| v.states[i].load(Ordering::Relaxed);
        assert_eq!((state(&v, 0), state(&v, 1)), (INTACT, UNCHECKED));
        // Another reader of the same file in this process knows what the first checked.
        let again = Verifier::new(&path, &meta, &integrity).unwrap();
        assert_eq!((state(&again, 0), state(&again, 1)), (INTACT, UNCHECKED));
        // Damage in a checked chunk is not seen again (it was read before it changed)...
        let mut changed = data.clone();
        changed[5] ^= 1;
        v.ensure(&changed, 0..100).unwrap();
        // ...damage in an unchecked one is.
        changed[CHUNK_BYTES as usize + 5] ^= 1;
        assert!(v.ensure(&changed, 0..data.len()).is_err());
        assert!(
            v.ensure(&data, data.len() - 1..data.len() + 1).is_err(),
            "outside the file"
        );
        assert_eq!(Verifier::range_of(&data, &data[7..19]), 7..19);
        // A whole-file check (a lookup's) counts for every chunk.
        integrity.checked().mark_intact(&meta, &ChunkSums::of(&data).0);
        assert_eq!((state(&again, 0), state(&again, 1)), (INTACT, INTACT));
    }
}
