//! The artifact cache: immutable artifacts named by fingerprint, written atomically.
//!
//! Layout under the cache directory:
//!
//! ```text
//! artifacts/<fingerprint>.arrow   the data (Arrow IPC file)
//! artifacts/<fingerprint>.json    its record: what was hashed, rows, bytes, BLAKE3, chunk
//!                                 sums, timings
//! artifacts/<fingerprint>.damaged  why a reader found its bytes damaged (until recomputed)
//! pipelines/<name>/<stage>.json   the fingerprint a pipeline's stage last produced, so a
//!                                 miss can be explained by comparing records
//! stat-cache.tsv                  (path, size, mtime, inode) -> SHA-256, to skip re-hashing
//! tmp/                            files being written; never trusted
//! ```
//!
//! An artifact is written to `tmp/`, synced, and renamed into `artifacts/`; its record is
//! written the same way afterwards and is the commit point: an artifact counts as present
//! only when its record exists and the data file has the recorded size (and, up to
//! [`VERIFY_ON_LOOKUP_BYTES`], the recorded BLAKE3 checksum). A killed run can
//! therefore leave litter in `tmp/`, never a half file that a later run trusts. All access
//! goes through [`Cache`], the one place a shared (e.g. object-store) cache would plug in.
//!
//! Whatever its size, no byte of an artifact is used unchecked: readers check a dataset's
//! chunks against the record's chunk sums as they read them ([`Integrity`], implemented
//! here), and whole files (reports, models) are read through [`Cache::read_checked`]. What
//! fails the check is marked damaged, and the next lookup says so, so the stage reruns.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::cache::remote::{self, Created, Storage, Url};
use crate::cache::stat_cache::StatCache;
use crate::data::integrity::{Checked, ChunkHasher, ChunkSums, Damaged, Integrity};
use serde::{Deserialize, Serialize};

/// Artifacts up to this size are checked against their BLAKE3 checksum whenever they are
/// looked up (about 15 ms for 64 MiB here); larger ones by size only, and fully by
/// `pipeline cache verify`.
pub const VERIFY_ON_LOOKUP_BYTES: u64 = 64 << 20;

/// The JSON record kept next to each artifact.
/// What an artifact's data file holds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A dataset: Arrow IPC file (`<fingerprint>.arrow`).
    #[default]
    Arrow,
    /// A report: JSON (`<fingerprint>.report.json`), e.g. from `validate`.
    Report,
    /// Model weights: safetensors (`<fingerprint>.safetensors`), from `train`.
    Model,
}

impl Format {
    /// The data file's extension (after `<fingerprint>.`).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Arrow => "arrow",
            Format::Report => "report.json",
            Format::Model => "safetensors",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub fingerprint: String,
    #[serde(default)]
    pub format: Format,
    pub kind: String,
    pub version: u32,
    /// Pipeline and stage that first produced it (informational; not hashed).
    pub pipeline: String,
    pub stage: String,
    pub params: serde_json::Value,
    /// Input stage name -> fingerprint, in input order.
    pub inputs: Vec<(String, String)>,
    /// For `ingest`: number of files and the hash of their list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub blake3: String,
    /// What readers check the data file's chunks against; records written before chunk
    /// sums existed have none until the file is first read (checked whole, then upgraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkSums>,
    #[serde(default)]
    pub fitted: serde_json::Value,
    /// Stage-specific numbers worth showing (e.g. rows per partition).
    #[serde(default)]
    pub summary: serde_json::Value,
    pub seconds: f64,
    /// Of `seconds`, the time spent checking the input's bytes against their chunk sums.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub check_seconds: f64,
    pub created_unix: u64,
}

impl Record {
    /// The record of `fingerprint` that a shared cache holds as `text`, if it is one.
    pub fn shared(text: &[u8], fingerprint: &str) -> Option<Record> {
        serde_json::from_slice::<Record>(text)
            .ok()
            .filter(|r| r.fingerprint == fingerprint)
    }

    /// Where a shared cache keeps this artifact's data.
    pub fn shared_data_key(&self) -> String {
        remote::data_key(&self.fingerprint, &self.blake3, self.format.extension())
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The cache directory, with the shared cache on object storage it copies from and
/// publishes to, if any.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    /// The shared cache (`s3://…`): artifacts found there are copied here, verified; what is
    /// made or found here is published there.
    remote: Option<Arc<dyn Storage>>,
    /// Artifacts this process knows the shared cache holds (copied from it or published).
    published: Arc<Mutex<HashSet<String>>>,
    /// What this process found intact, shared by the clones (every stage of a run).
    checked: std::sync::Arc<Checked>,
    /// The cache folder is group-writable: so is everything made in it.
    shared: bool,
    /// Artifacts can be stored (else the cache is only read).
    writable: bool,
    /// Lookups only look at the shared cache (its record and the data object's size),
    /// copying nothing: what `status` needs.
    look_only: bool,
}

/// Whether this process may create files in `dir` (false on a read-only file system).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl Cache {
    /// Opens (creating if needed) a cache directory.
    pub fn open(root: &Path) -> Result<Cache> {
        if root.exists() && !root.is_dir() {
            anyhow::bail!(
                "the cache path {} exists but is not a directory; point `cache:` elsewhere or remove it",
                root.display()
            );
        }
        // A cache folder that is group-writable is shared: what is made in it is too,
        // whatever the umask of the user who makes it.
        let shared = fs::metadata(root).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o020 != 0
        });
        let cache = Cache {
            root: root.to_path_buf(),
            remote: None,
            published: Default::default(),
            checked: Default::default(),
            shared,
            writable: true,
            look_only: false,
        };
        for sub in ["artifacts", "pipelines", "tmp"] {
            let dir = root.join(sub);
            if !dir.is_dir() {
                fs::create_dir_all(&dir).with_context(|| format!("cannot create cache directory {}", dir.display()))?;
                cache.share(&dir);
            }
        }
        Ok(Cache {
            writable: writable(&root.join("artifacts")) && writable(&root.join("tmp")),
            ..cache
        })
    }

    /// Opens the local cache directory `root` with the shared cache `remote` (if any) behind
    /// it. The shared cache is asked once here, so an unreachable endpoint, refused
    /// credentials or a missing bucket stop a command before it computes anything.
    pub fn open_with(root: &Path, remote: Option<&Url>) -> Result<Cache> {
        let mut cache = Cache::open(root)?;
        if let Some(url) = remote {
            let unusable = |e: anyhow::Error| anyhow::Error::new(remote::Unusable(format!("{e:#}")));
            let storage = remote::open(url).map_err(unusable)?;
            storage.list("probe").map_err(unusable)?;
            cache.remote = Some(storage);
        }
        Ok(cache)
    }

    /// This cache, whose lookups only look at the shared cache behind it: an artifact there
    /// counts as present when its record is valid and its data object has the recorded size,
    /// and nothing is copied (`status`; a run then copies and checks it whole).
    pub fn looking_only(self) -> Cache {
        Cache {
            look_only: true,
            ..self
        }
    }

    /// The shared cache behind this one, if any.
    pub fn shared_storage(&self) -> Option<&dyn Storage> {
        self.remote.as_deref()
    }

    /// Whether artifacts can be stored here (a read-only cache is still read).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Makes `path`, just created in a shared cache, group-readable and -writable (folders
    /// also keep their group for what is made in them).
    fn share(&self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if !self.shared {
            return;
        }
        if let Ok(meta) = fs::metadata(path) {
            let extra = if meta.is_dir() { 0o2070 } else { 0o060 };
            let mode = meta.permissions().mode() | extra;
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
                tracing::debug!(path = %path.display(), error = %e, "not shared with the group");
            }
        }
    }

    /// What readers check this cache's artifacts with (the cache itself, shared).
    pub fn integrity(&self) -> std::sync::Arc<dyn Integrity> {
        std::sync::Arc::new(self.clone())
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data file of a dataset artifact.
    pub fn data_path(&self, fingerprint: &str) -> PathBuf {
        self.data_file(fingerprint, Format::Arrow)
    }

    pub fn data_file(&self, fingerprint: &str, format: Format) -> PathBuf {
        self.root
            .join("artifacts")
            .join(format!("{fingerprint}.{}", format.extension()))
    }

    fn record_path(&self, fingerprint: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{fingerprint}.json"))
    }

    /// Where a reader's finding that an artifact is damaged is kept until it is recomputed.
    fn damage_path(&self, fingerprint: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{fingerprint}.damaged"))
    }

    /// Reads a whole-file artifact (a report, a model), checked against its record's BLAKE3;
    /// damaged bytes are an error and mark the artifact for recomputing.
    pub fn read_checked(&self, fingerprint: &str, format: Format) -> Result<Vec<u8>> {
        let path = self.data_file(fingerprint, format);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let record = self
            .record(fingerprint)
            .with_context(|| format!("{}: its record is missing or not valid JSON", path.display()))?;
        if blake3::hash(&bytes).to_hex().as_str() != record.blake3 {
            let why = "its bytes do not match their recorded BLAKE3 checksum".to_string();
            self.damaged(&path, &why);
            return Err(Damaged { file: path, why }.into());
        }
        Ok(bytes)
    }

    /// Where a `train` stage of this fingerprint keeps the checkpoint of its last completed
    /// epoch while it runs (`checkpoints/<fingerprint>.safetensors`), so a killed run
    /// resumes; `None` when this cache is only read.
    pub fn checkpoint_path(&self, fingerprint: &str) -> Option<PathBuf> {
        self.writable
            .then(|| self.root.join("checkpoints").join(format!("{fingerprint}.safetensors")))
    }

    /// The checkpoints of interrupted `train` runs whose fingerprint `keep` rejects, as
    /// orphans: what `cache gc` removes with the artifacts no pipeline needs.
    pub fn stale_checkpoints(&self, keep: impl Fn(&str) -> bool) -> Vec<Garbage> {
        let Ok(dir) = fs::read_dir(self.root.join("checkpoints")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name.strip_suffix(".safetensors").is_some_and(&keep)
            })
            .map(|e| Garbage::Orphan {
                path: e.path(),
                bytes: e.metadata().map_or(0, |m| m.len()),
            })
            .collect()
    }

    /// A fresh temporary path in `tmp/` for writing a file that will be renamed into place.
    pub fn temp_path(&self, stem: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{stem}.{}.{n}.partial", std::process::id()))
    }

    /// Removes temporary files left by processes that no longer run (a killed run's
    /// litter); returns how many. Files of live processes (the name carries the pid) stay.
    pub fn remove_stale_temps(&self) -> usize {
        let Ok(dir) = fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        let mut removed = 0;
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_suffix(".partial")
                .and_then(|s| s.rsplit('.').nth(1)?.parse::<i32>().ok());
            // SAFETY: kill(2) with signal 0 only checks whether the process exists.
            let dead = pid.is_some_and(|p| {
                p > 0
                    && unsafe { libc::kill(p, 0) } != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            });
            if dead && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The record of a present artifact: record readable and data file of the recorded size.
    /// With a shared cache, an artifact absent or damaged here is copied from there when it
    /// is there (with what it reads its pixels from), checked against its record first.
    pub fn lookup(&self, fingerprint: &str) -> Lookup {
        let local = self.lookup_here(fingerprint);
        let Some(remote) = self.remote.as_deref() else {
            return local;
        };
        if matches!(local, Lookup::Present(_)) {
            return local;
        }
        if self.look_only {
            return match self.peek(remote, fingerprint) {
                Ok(Some(record)) => Lookup::Present(Box::new(record)),
                Ok(None) => local,
                Err(why) => Lookup::Damaged(why),
            };
        }
        match self.fetch(remote, fingerprint) {
            Ok(true) => self.lookup_here(fingerprint),
            Ok(false) => local,
            Err(why) => Lookup::Damaged(why),
        }
    }

    /// Copies an artifact from the shared cache: record, then data streamed into `tmp/` and
    /// hashed as it comes, then the artifacts it reads its pixels from. `Ok(false)` when the
    /// shared cache does not have it. A copy that does not match its record is removed from
    /// the shared cache (record first), so what this run computes instead can replace it.
    fn fetch(&self, remote: &dyn Storage, fingerprint: &str) -> std::result::Result<bool, String> {
        let key = remote::record_key(fingerprint);
        let text = match remote.get(&key) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(false),
            Err(e) => return Err(format!("{e:#}")),
        };
        let damaged = |record: Option<&Record>, what: String| {
            let mut keys = vec![key.clone()];
            keys.extend(record.map(Record::shared_data_key));
            for k in keys {
                if let Err(e) = remote.delete(&k) {
                    tracing::debug!(error = %e, key = k, "damaged copy not removed from the shared cache");
                }
            }
            format!(
                "its copy in the shared cache {} is damaged ({what}); removed there, so this run's result replaces it",
                remote.url()
            )
        };
        let record = match Record::shared(&text, fingerprint) {
            Some(r) => r,
            None => {
                return Err(damaged(
                    None,
                    "its record is not a valid record of this fingerprint".into(),
                ));
            }
        };
        if !self.writable {
            return Err(format!(
                "it is in the shared cache {}, but the local cache {} is read-only, so it cannot be copied here",
                remote.url(),
                self.root.display()
            ));
        }
        let temp = self.temp_path(fingerprint);
        let copied = (|| -> Result<Option<String>> {
            let mut file = fs::File::create(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
            let mut hasher = ChunkHasher::new();
            let got = remote.download(&record.shared_data_key(), &mut file, &mut |b| hasher.update(b))?;
            file.sync_all()?;
            let (chunks, blake3) = hasher.finish();
            Ok(match got {
                None => Some("its data object is missing".to_string()),
                Some(n) if n != record.bytes => Some(format!(
                    "its data object has {n} bytes, the record says {}",
                    record.bytes
                )),
                Some(_) if blake3 != record.blake3 => {
                    Some("its data does not match the recorded BLAKE3 checksum".into())
                }
                Some(_) if record.chunks.as_ref().is_some_and(|c| *c != chunks) => {
                    Some("its data does not match the recorded chunk sums".into())
                }
                Some(_) => None,
            })
        })();
        let problem = match copied {
            Ok(problem) => problem,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(format!("{e:#}"));
            }
        };
        if let Some(what) = problem {
            let _ = fs::remove_file(&temp);
            return Err(damaged(Some(&record), what));
        }
        self.commit_local(&temp, &record, &text).map_err(|e| format!("{e:#}"))?;
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fingerprint.to_string());
        tracing::debug!(fingerprint, bytes = record.bytes, "copied from the shared cache");
        for source in self.pixel_sources(&record) {
            if !matches!(self.lookup(&source), Lookup::Present(_)) {
                return Err(format!("a file holding its pixels ({source}) is missing or damaged"));
            }
        }
        Ok(true)
    }

    /// An artifact's record in the shared cache, when it is valid and its data object (and
    /// each segment's) has the recorded size; nothing is downloaded but the record.
    fn peek(&self, remote: &dyn Storage, fingerprint: &str) -> std::result::Result<Option<Record>, String> {
        let text = match remote.get(&remote::record_key(fingerprint)) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(None),
            Err(e) => return Err(format!("{e:#}")),
        };
        let Some(record) = Record::shared(&text, fingerprint) else {
            return Err(format!("its record in the shared cache {} is not valid", remote.url()));
        };
        match remote.head(&record.shared_data_key()) {
            Ok(Some(n)) if n == record.bytes => {}
            Ok(Some(n)) => {
                return Err(format!(
                    "its data object in the shared cache {} has {n} bytes, the record says {}",
                    remote.url(),
                    record.bytes
                ));
            }
            Ok(None) => {
                return Err(format!(
                    "its data object is missing from the shared cache {}",
                    remote.url()
                ));
            }
            Err(e) => return Err(format!("{e:#}")),
        }
        self.segments_present(&record)?;
        Ok(Some(record))
    }

    /// A segmented artifact is usable only with every segment holding its pixels.
    fn segments_present(&self, record: &Record) -> std::result::Result<(), String> {
        for seg in record.summary["segments"].as_array().into_iter().flatten() {
            let seg = seg.as_str().unwrap_or_default();
            if seg != record.fingerprint && !matches!(self.lookup(seg), Lookup::Present(_)) {
                return Err(format!("a file holding its pixels ({seg}) is missing or damaged"));
            }
        }
        Ok(())
    }

    /// The artifacts `record`'s rows read their pixels from: a segmented artifact's
    /// segments, a view's stored artifact.
    pub fn pixel_sources(&self, record: &Record) -> Vec<String> {
        let fingerprint = record.fingerprint.as_str();
        let mut out: Vec<String> = record.summary["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .filter(|s| *s != fingerprint)
            .map(String::from)
            .collect();
        if record.format == Format::Arrow
            && let Ok(file) = crate::data::dataset::ipc::IpcFile::open(&self.data_path(fingerprint), &self.integrity())
            && let Some(from) = &file.meta.pixels_from
            && let Some(stored) = from.strip_suffix(".arrow")
        {
            out.push(stored.to_string());
        }
        out
    }

    /// Publishes a committed artifact to the shared cache, if there is one and it lacks it:
    /// first what it reads its pixels from, then its data, then its record with a
    /// conditional create, the commit point. Losing that create to another machine is no
    /// error: its record is the one every machine then copies.
    pub fn publish(&self, record: &Record) -> Result<()> {
        let Some(remote) = self.remote.as_deref() else {
            return Ok(());
        };
        let fingerprint = record.fingerprint.as_str();
        if self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(fingerprint)
        {
            return Ok(());
        }
        // A record there was published after what it reads its pixels from: one look suffices.
        let key = remote::record_key(fingerprint);
        if remote.head(&key)?.is_none() {
            for source in self.pixel_sources(record) {
                let found = self.record(&source).with_context(|| {
                    format!("{fingerprint} reads its pixels from {source}, which is not in the cache")
                })?;
                self.publish(&found)?;
            }
            remote.put_file(&record.shared_data_key(), &self.data_file(fingerprint, record.format))?;
            crate::data::fault::point(|| format!("{}: data published, record not", record.stage));
            // The committed bytes (a record parsed and written again could differ in a float's
            // last digit, and every machine's copy is to be the same file).
            let text = match fs::read(self.record_path(fingerprint)) {
                Ok(text) => text,
                Err(_) => json(record)?,
            };
            if remote.put_if_absent(&key, text)? == Created::Exists {
                let theirs = remote.get(&key)?.and_then(|t| Record::shared(&t, fingerprint));
                if theirs.is_some_and(|t| t.blake3 != record.blake3) {
                    tracing::warn!(
                        fingerprint,
                        stage = %record.stage,
                        "another machine published other bytes for this artifact first; theirs is what the shared cache serves"
                    );
                }
            }
            tracing::debug!(fingerprint, bytes = record.bytes, "published to the shared cache");
        }
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fingerprint.to_string());
        Ok(())
    }

    /// [`Cache::lookup`] in this directory only: nothing is copied from a shared cache.
    pub fn lookup_here(&self, fingerprint: &str) -> Lookup {
        let Ok(text) = fs::read_to_string(self.record_path(fingerprint)) else {
            return Lookup::Absent;
        };
        if let Ok(why) = fs::read_to_string(self.damage_path(fingerprint)) {
            return Lookup::Damaged(format!("it was found damaged when read: {}", why.trim()));
        }
        let record: Record = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(_) => return Lookup::Damaged("its record is not valid JSON".into()),
        };
        if let Err(why) = self.segments_present(&record) {
            return Lookup::Damaged(why);
        }
        let path = self.data_file(fingerprint, record.format);
        match fs::metadata(&path) {
            Ok(m) if m.len() == record.bytes && m.len() > VERIFY_ON_LOOKUP_BYTES => Lookup::Present(Box::new(record)),
            Ok(m) if m.len() == record.bytes => match crate::data::integrity::map_with_metadata(&path) {
                Ok((map, meta)) => {
                    // Checked whole here, chunk by chunk on every core: the readers of
                    // this run need not check it again.
                    let (chunks, hash) = crate::data::integrity::sums_on_every_core(&map);
                    if hash != record.blake3 {
                        Lookup::Damaged("its data file does not match its recorded BLAKE3 checksum".into())
                    } else if record.chunks.as_ref().is_some_and(|c| *c != chunks) {
                        Lookup::Damaged("its record's chunk sums are not those of its data file".into())
                    } else {
                        self.checked.mark_intact(&meta, &chunks);
                        Lookup::Present(Box::new(record))
                    }
                }
                Err(e) => Lookup::Damaged(format!("its data file cannot be read: {e:#}")),
            },
            Ok(m) => Lookup::Damaged(format!(
                "its data file has {} bytes, the record says {}",
                m.len(),
                record.bytes
            )),
            Err(_) => Lookup::Damaged("its data file is missing".into()),
        }
    }

    /// Moves a finished data file into place and commits it by writing its record, then
    /// publishes it to the shared cache (if any). A failure to publish leaves it committed
    /// here: the next run that finds it cached publishes it.
    pub fn commit(&self, temp_data: &Path, record: &Record) -> Result<()> {
        self.commit_local(temp_data, record, &json(record)?)?;
        self.publish(record)
    }

    /// Moves the data into place and writes the record as `text` (its JSON, byte for byte
    /// what the shared cache holds when it was copied from there).
    fn commit_local(&self, temp_data: &Path, record: &Record, text: &[u8]) -> Result<()> {
        let data = self.data_file(&record.fingerprint, record.format);
        crate::data::fault::point(|| format!("{}: artifact written, not moved into place", record.stage));
        self.share(temp_data);
        fs::rename(temp_data, &data).with_context(|| format!("cannot move artifact into {}", data.display()))?;
        crate::data::fault::point(|| format!("{}: artifact in place, record not written", record.stage));
        self.write_atomic(&self.record_path(&record.fingerprint), text)?;
        match fs::remove_file(self.damage_path(&record.fingerprint)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot clear the damage mark of {}", record.fingerprint))
            }
            _ => Ok(()),
        }
    }

    /// The fingerprint that `pipeline`'s `stage` produced last time, if any.
    pub fn last_fingerprint(&self, pipeline: &str, stage: &str) -> Option<String> {
        let text = fs::read_to_string(self.pointer_path(pipeline, stage)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("fingerprint")?.as_str().map(String::from)
    }

    pub fn record(&self, fingerprint: &str) -> Option<Record> {
        let text = fs::read_to_string(self.record_path(fingerprint)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Records `fingerprint` as the stage's last; a no-op when it already is (a warm run then
    /// writes nothing).
    pub fn set_last_fingerprint(&self, pipeline: &str, stage: &str, fingerprint: &str) -> Result<()> {
        if self.last_fingerprint(pipeline, stage).as_deref() == Some(fingerprint) {
            return Ok(());
        }
        let path = self.pointer_path(pipeline, stage);
        if !self.writable {
            // A read-only cache: the pointer only explains later misses.
            tracing::debug!(path = %path.display(), "read-only cache: pointer not updated");
            return Ok(());
        }
        if let Some(dir) = path.parent()
            && !dir.is_dir()
        {
            fs::create_dir_all(dir)?;
            self.share(dir);
        }
        self.write_json_atomic(&path, &serde_json::json!({ "fingerprint": fingerprint }))
    }

    fn pointer_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root.join("pipelines").join(pipeline).join(format!("{stage}.json"))
    }

    pub fn stat_cache_path(&self) -> PathBuf {
        self.root.join("stat-cache.tsv")
    }

    /// The remembered file hashes (`stat-cache.tsv`) and folder listings (`folders.tsv`).
    pub fn stat_cache(&self) -> StatCache {
        let mut stat_cache = StatCache::load(&self.stat_cache_path());
        stat_cache.folders = crate::data::walk::Listings::load(&self.root.join("folders.tsv"));
        stat_cache
    }

    /// Saves what `stat_cache` learned (nothing is written if it learned nothing). The
    /// folder listings only save time, so failing to save them is not an error.
    pub fn save_stat_cache(&self, stat_cache: &StatCache) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        stat_cache.save(&self.stat_cache_path(), |path, bytes| self.write_atomic(path, bytes))?;
        let folders = self.root.join("folders.tsv");
        if let Err(e) = stat_cache
            .folders
            .save(&folders, |path, bytes| self.write_atomic(path, bytes))
        {
            tracing::debug!(error = %e, "folder listings not saved");
        }
        Ok(())
    }

    /// Writes JSON to a temporary file, syncs it and renames it over `path`.
    /// On failure (a full disk, say) the temporary file is removed and `path` is untouched.
    pub fn write_json_atomic<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        self.write_atomic(path, &json(value)?)
    }

    /// Writes `bytes` to `path` through a synced temporary file and a rename, so readers see
    /// the old file or the new one, never a part.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.temp_path("json");
        let write = || -> Result<()> {
            let mut f = fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
            crate::data::fault::charge(bytes.len())?;
            let half = bytes.len() / 2;
            f.write_all(&bytes[..half])?;
            crate::data::fault::point(|| format!("json {}: half written", path.display()));
            f.write_all(&bytes[half..])?;
            f.sync_all()?;
            crate::data::fault::point(|| format!("json {}: written, not renamed", path.display()));
            self.share(&tmp);
            fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }
}

/// What `cache gc` may take out of the cache.
#[derive(Debug)]
pub enum Garbage {
    /// A committed artifact: its record, data file and damage mark go together.
    Artifact(Box<Record>),
    /// A file no readable record commits: what a killed run or a damaged record left.
    Orphan { path: PathBuf, bytes: u64 },
}

impl Garbage {
    /// The bytes removing it frees (for an artifact, as its record says).
    pub fn bytes(&self) -> u64 {
        match self {
            Garbage::Artifact(r) => r.bytes,
            Garbage::Orphan { bytes, .. } => *bytes,
        }
    }
}

impl Cache {
    /// Every readable record in the cache, sorted by pipeline, stage and fingerprint.
    pub fn records(&self) -> Result<Vec<Record>> {
        let dir = self.root.join("artifacts");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".json") && !name.ends_with(".report.json") {
                match fs::read_to_string(&path).map(|t| serde_json::from_str::<Record>(&t)) {
                    Ok(Ok(r)) if r.fingerprint == name.trim_end_matches(".json") => out.push(r),
                    _ => tracing::warn!(path = %path.display(), "unreadable record"),
                }
            }
        }
        out.sort_by(|a, b| (&a.pipeline, &a.stage, &a.fingerprint).cmp(&(&b.pipeline, &b.stage, &b.fingerprint)));
        Ok(out)
    }

    /// Keeps a finished shard's entry (`key` under `shards/`) here and in the shared cache.
    pub fn put_shard_entry(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join("shards").join(key);
        if let Some(dir) = path.parent()
            && !dir.is_dir()
        {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            self.share(dir);
        }
        self.write_atomic(&path, bytes)?;
        if let Some(remote) = self.remote.as_deref() {
            remote.put(&format!("shards/{key}"), bytes.to_vec())?;
        }
        Ok(())
    }

    /// The shard entries under `shards/<set>/` (keys relative to it) of the shared cache if
    /// there is one, else of this one.
    pub fn shard_entries(&self, set: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let dir = self.root.join("shards").join(set);
        if let Some(remote) = self.remote.as_deref() {
            // Copied here once: a copy of the listed size and time is not fetched again.
            let prefix = format!("shards/{set}/");
            for (key, size, modified) in remote.list(&format!("shards/{set}"))? {
                let Some(rel) = key.strip_prefix(&prefix) else { continue };
                let local = dir.join(rel);
                let known =
                    fs::metadata(&local).is_ok_and(|m| m.len() == size && m.modified().is_ok_and(|t| t == modified));
                if known && let Ok(bytes) = fs::read(&local) {
                    out.push((rel.to_string(), bytes));
                    continue;
                }
                let Some(bytes) = remote.get(&key)? else { continue };
                if self.writable
                    && let Some(parent) = local.parent()
                    && fs::create_dir_all(parent).is_ok()
                    && self.write_atomic(&local, &bytes).is_ok()
                    && let Ok(file) = fs::File::options().write(true).open(&local)
                {
                    let _ = file.set_modified(modified);
                }
                out.push((rel.to_string(), bytes));
            }
            return Ok(out);
        }
        for count in fs::read_dir(&dir).into_iter().flatten().flatten() {
            for entry in fs::read_dir(count.path()).into_iter().flatten().flatten() {
                if let Ok(bytes) = fs::read(entry.path()) {
                    let rel = format!(
                        "{}/{}",
                        count.file_name().to_string_lossy(),
                        entry.file_name().to_string_lossy()
                    );
                    out.push((rel, bytes));
                }
            }
        }
        Ok(out)
    }

    /// Takes the cache's run lock (every `pipeline run` and `cache gc` holds it), calling
    /// `waiting` first when another process holds it. The OS releases the lock when the
    /// holder exits, however it exits, so a dead run never blocks.
    pub fn lock(&self, waiting: impl FnOnce(&Path) -> Result<()>) -> Result<Option<fs::File>> {
        self.lock_as(true, waiting)
    }

    /// The run lock shared with other holders of it shared (the shards of one job on one
    /// node, which write only their own parts), never with a run or `gc`.
    pub fn lock_shared(&self, waiting: impl FnOnce(&Path) -> Result<()>) -> Result<Option<fs::File>> {
        self.lock_as(false, waiting)
    }

    fn lock_as(&self, exclusive: bool, waiting: impl FnOnce(&Path) -> Result<()>) -> Result<Option<fs::File>> {
        let path = self.root.join("lock");
        let file = if self.writable {
            let made = !path.exists();
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            if made {
                self.share(&path);
            }
            file
        } else {
            // A read-only cache: nothing is written here, a lock only orders writers (and
            // locking needs no write access to the file).
            match fs::File::open(&path) {
                Ok(file) => file,
                Err(_) => return Ok(None),
            }
        };
        let tried = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match tried {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                waiting(&path)?;
                if exclusive { file.lock()? } else { file.lock_shared()? }
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).context("cannot lock the cache"),
        }
        Ok(Some(file))
    }

    /// Notes that a run used the artifact (its record's access time, what `cache gc
    /// --keep-recent` reads), at most once an hour so that a warm run writes next to
    /// nothing. Failing to note it (a read-only cache) is not an error.
    pub fn mark_used(&self, fingerprint: &str) {
        let path = self.record_path(fingerprint);
        let now = std::time::SystemTime::now();
        let stale = fs::metadata(&path)
            .and_then(|m| m.accessed())
            .map_or(true, |at| now.duration_since(at).is_ok_and(|d| d.as_secs() > 3600));
        if stale && let Ok(file) = fs::File::open(&path) {
            let _ = file.set_times(fs::FileTimes::new().set_accessed(now));
        }
    }

    /// When the artifact was last made or used (the later of its record's times).
    pub fn last_used(&self, fingerprint: &str) -> Option<std::time::SystemTime> {
        let meta = fs::metadata(self.record_path(fingerprint)).ok()?;
        let (made, used) = (meta.modified().ok(), meta.accessed().ok());
        made.max(used)
    }

    /// What the cache holds besides the artifacts `keep` keeps: the others, and every file
    /// no readable record commits. Only under [`Cache::lock`] is this stable.
    pub fn garbage(&self, keep: impl Fn(&Record) -> bool) -> Result<Vec<Garbage>> {
        let records = self.records()?;
        let committed: std::collections::HashSet<&str> = records.iter().map(|r| r.fingerprint.as_str()).collect();
        let mut out = Vec::new();
        let dir = self.root.join("artifacts");
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let fp = fingerprint_of(&path).unwrap_or_default();
            if !committed.contains(fp) {
                let bytes = entry.metadata().map_or(0, |m| m.len());
                out.push(Garbage::Orphan { path, bytes });
            }
        }
        out.extend(
            records
                .into_iter()
                .filter(|r| !keep(r))
                .map(|r| Garbage::Artifact(Box::new(r))),
        );
        Ok(out)
    }

    /// Removes what [`Cache::garbage`] found: an artifact's record first (then it is no
    /// longer in the cache; a kill after that leaves orphans the next `gc` removes).
    pub fn remove(&self, garbage: &Garbage) -> Result<()> {
        let gone = |r: std::io::Result<()>, path: &Path| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        };
        match garbage {
            Garbage::Orphan { path, .. } => gone(fs::remove_file(path), path),
            Garbage::Artifact(r) => {
                for path in [
                    self.record_path(&r.fingerprint),
                    self.data_file(&r.fingerprint, r.format),
                    self.damage_path(&r.fingerprint),
                ] {
                    gone(fs::remove_file(&path), &path)?;
                }
                Ok(())
            }
        }
    }
}

/// How the cache writes JSON: pretty, with a final newline.
fn json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    Ok(text)
}

/// The fingerprint an artifact's data file is named by.
fn fingerprint_of(file: &Path) -> Result<&str> {
    file.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|fp| !fp.is_empty())
        .with_context(|| format!("{} is not an artifact of the cache", file.display()))
}

impl Integrity for Cache {
    fn sums(&self, file: &Path) -> Result<ChunkSums> {
        let fingerprint = fingerprint_of(file)?;
        let mut record = self
            .record(fingerprint)
            .with_context(|| format!("{}: its record is missing or not valid JSON", file.display()))?;
        if let Some(chunks) = record.chunks {
            return Ok(chunks);
        }
        // Written before chunk sums: checked whole, once, and its record upgraded (its
        // fingerprint does not change). A read-only cache checks it again next time.
        let map = crate::data::integrity::map(file)?;
        let (chunks, blake3) = ChunkSums::of(&map);
        if blake3 != record.blake3 {
            let why = "its data file does not match its recorded BLAKE3 checksum".to_string();
            self.damaged(file, &why);
            return Err(Damaged {
                file: file.to_path_buf(),
                why,
            }
            .into());
        }
        record.chunks = Some(chunks.clone());
        if let Err(e) = self.write_json_atomic(&self.record_path(fingerprint), &record) {
            tracing::debug!(error = %e, fingerprint, "record not upgraded with chunk sums");
        }
        Ok(chunks)
    }

    fn checked(&self) -> &Checked {
        &self.checked
    }

    fn damaged(&self, file: &Path, why: &str) {
        let Ok(fingerprint) = fingerprint_of(file) else {
            return;
        };
        tracing::warn!(artifact = %file.display(), why, "damaged artifact");
        if let Err(e) = self.write_atomic(&self.damage_path(fingerprint), format!("{why}\n").as_bytes()) {
            tracing::debug!(error = %e, fingerprint, "damage not marked");
        }
    }
}

/// Whether an artifact is in the cache.
#[derive(Debug)]
pub enum Lookup {
    Present(Box<Record>),
    Absent,
    /// A record exists but cannot be trusted (reason given); the stage must be recomputed.
    Damaged(String),
}

/// Artifacts made by hand for tests here and in the modules that read the cache.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Commits a report artifact holding `data` under `fingerprint`, as `stage` of pipeline
    /// `p` with `version`, `params` and `inputs`; returns its record.
    pub(crate) fn put(
        cache: &Cache,
        fingerprint: &str,
        data: &[u8],
        version: u32,
        params: serde_json::Value,
        inputs: &[(&str, &str)],
    ) -> Record {
        let record = Record {
            fingerprint: fingerprint.to_string(),
            format: Format::Report,
            kind: "resize".into(),
            version,
            pipeline: "p".into(),
            stage: "resize".into(),
            params,
            inputs: inputs.iter().map(|(n, f)| (n.to_string(), f.to_string())).collect(),
            content: None,
            rows: 3,
            bytes: data.len() as u64,
            blake3: blake3::hash(data).to_hex().to_string(),
            chunks: Some(ChunkSums::of(data).0),
            fitted: serde_json::Value::Null,
            summary: serde_json::Value::Null,
            seconds: 0.0,
            check_seconds: 0.0,
            created_unix: 0,
        };
        let temp = cache.temp_path(fingerprint);
        fs::write(&temp, data).unwrap();
        cache.commit(&temp, &record).unwrap();
        record
    }

    /// An empty cache in a temporary folder (kept while the folder is).
    pub(crate) fn temp_cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        (dir, cache)
    }

    /// Why `fingerprint` is damaged; panics when it is present or absent.
    fn damage(cache: &Cache, fingerprint: &str) -> String {
        match cache.lookup(fingerprint) {
            Lookup::Damaged(why) => why,
            other => panic!("expected a damaged artifact, found {other:?}"),
        }
    }

    #[test]
    fn a_committed_artifact_is_found_with_its_record() {
        let (_dir, cache) = temp_cache();
        assert!(matches!(cache.lookup("aa"), Lookup::Absent));
        let record = put(
            &cache,
            "aa",
            b"{\"errors\": 0}",
            1,
            serde_json::json!({"size": [8, 8]}),
            &[],
        );
        match cache.lookup("aa") {
            Lookup::Present(found) => assert_eq!(*found, record),
            other => panic!("expected the artifact, found {other:?}"),
        }
        assert_eq!(cache.record("aa"), Some(record));
        assert!(cache.data_file("aa", Format::Report).is_file());
        assert_eq!(fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_record_that_is_not_json_is_damaged() {
        let (_dir, cache) = temp_cache();
        put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        fs::write(cache.record_path("aa"), "{ not json").unwrap();
        assert_eq!(damage(&cache, "aa"), "its record is not valid JSON");
        assert_eq!(cache.record("aa"), None);
    }

    #[test]
    fn a_data_file_of_another_size_is_damaged() {
        let (_dir, cache) = temp_cache();
        put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        fs::write(cache.data_file("aa", Format::Report), b"longer data").unwrap();
        assert_eq!(damage(&cache, "aa"), "its data file has 11 bytes, the record says 4");
    }

    #[test]
    fn a_data_file_with_other_bytes_is_damaged() {
        let (_dir, cache) = temp_cache();
        put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        fs::write(cache.data_file("aa", Format::Report), b"DATA").unwrap();
        assert_eq!(
            damage(&cache, "aa"),
            "its data file does not match its recorded BLAKE3 checksum"
        );
    }

    #[test]
    fn a_missing_data_file_is_damaged() {
        let (_dir, cache) = temp_cache();
        put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        fs::remove_file(cache.data_file("aa", Format::Report)).unwrap();
        assert_eq!(damage(&cache, "aa"), "its data file is missing");
    }

    #[test]
    fn an_artifact_whose_pixel_segment_is_gone_is_damaged() {
        let (_dir, cache) = temp_cache();
        let mut record = put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        record.summary = serde_json::json!({ "segments": ["aa", "bb"] });
        cache.write_json_atomic(&cache.record_path("aa"), &record).unwrap();
        assert_eq!(
            damage(&cache, "aa"),
            "a file holding its pixels (bb) is missing or damaged"
        );
        put(&cache, "bb", b"pixels", 1, serde_json::Value::Null, &[]);
        assert!(matches!(cache.lookup("aa"), Lookup::Present(_)));
    }

    #[test]
    fn a_record_without_chunk_sums_is_checked_whole_once_and_upgraded() {
        let (_dir, cache) = temp_cache();
        let data = vec![7u8; 3 << 20];
        let mut record = put(&cache, "aa", &data, 1, serde_json::Value::Null, &[]);
        let file = cache.data_file("aa", Format::Report);
        let sums = cache.sums(&file).unwrap();
        assert_eq!(Some(&sums), record.chunks.as_ref());
        // As written before chunk sums existed: the sums are made and kept, the rest stays.
        record.chunks = None;
        cache.write_json_atomic(&cache.record_path("aa"), &record).unwrap();
        assert_eq!(cache.sums(&file).unwrap(), sums);
        let upgraded = cache.record("aa").unwrap();
        assert_eq!(upgraded.chunks.as_ref(), Some(&sums));
        assert_eq!(
            Record {
                chunks: None,
                ..upgraded
            },
            record
        );
    }

    #[test]
    fn damage_found_by_a_reader_makes_the_artifact_damaged_until_recomputed() {
        let (_dir, cache) = temp_cache();
        let mut record = put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        record.chunks = None;
        cache.write_json_atomic(&cache.record_path("aa"), &record).unwrap();
        let file = cache.data_file("aa", Format::Report);
        fs::write(&file, b"DATA").unwrap();
        let err = format!("{:#}", cache.sums(&file).unwrap_err());
        assert!(err.contains("does not match its recorded BLAKE3 checksum"), "{err}");
        assert_eq!(
            damage(&cache, "aa"),
            "it was found damaged when read: its data file does not match its recorded BLAKE3 checksum"
        );
        let err = format!("{:#}", cache.read_checked("aa", Format::Report).unwrap_err());
        assert!(err.contains("marked so: run again to recompute it"), "{err}");
        put(&cache, "aa", b"data", 1, serde_json::Value::Null, &[]);
        assert!(matches!(cache.lookup("aa"), Lookup::Present(_)));
        assert_eq!(cache.read_checked("aa", Format::Report).unwrap(), b"data");
        assert!(!cache.damage_path("aa").exists());
    }

    #[test]
    fn pointers_are_kept_per_pipeline_and_stage() {
        let (_dir, cache) = temp_cache();
        assert_eq!(cache.last_fingerprint("p", "resize"), None);
        cache.set_last_fingerprint("p", "resize", "aa").unwrap();
        cache.set_last_fingerprint("q", "resize", "bb").unwrap();
        cache.set_last_fingerprint("p", "split", "cc").unwrap();
        assert_eq!(cache.last_fingerprint("p", "resize").as_deref(), Some("aa"));
        assert_eq!(cache.last_fingerprint("q", "resize").as_deref(), Some("bb"));
        assert_eq!(cache.last_fingerprint("p", "split").as_deref(), Some("cc"));
        cache.set_last_fingerprint("p", "resize", "dd").unwrap();
        assert_eq!(cache.last_fingerprint("p", "resize").as_deref(), Some("dd"));
        assert_eq!(cache.last_fingerprint("q", "resize").as_deref(), Some("bb"));
        let pointer = fs::read_to_string(cache.pointer_path("p", "resize")).unwrap();
        assert_eq!(pointer, "{\n  \"fingerprint\": \"dd\"\n}\n");
    }
}
