//! A shared cache on object storage: the few operations the cache needs ([`Storage`]), on
//! any `object_store` backend — S3-compatible storage (`s3://bucket/prefix`) or a folder
//! (`file:///path`, e.g. a shared mount; also what the tests without a server use).
//!
//! Layout under the prefix (the local cache's names, so a listing reads the same):
//!
//! ```text
//! artifacts/<fingerprint>.json                       the record: written last, with a
//!                                                    conditional create, the commit point
//! artifacts/<fingerprint>.<blake3 prefix>.<ext>      the data, named by its bytes too
//! uploads/<id>.json                                  a multipart upload in progress (its
//!                                                    key and id), removed when it ends
//! ```
//!
//! An upload in parts that a killed process never finished keeps its parts on S3 (billed,
//! invisible to a listing); its `uploads/` note lets `cache gc` abort it once it is older
//! than its grace period.
//!
//! The data object's name carries the first 32 hex digits of its BLAKE3, so two machines that
//! publish one fingerprint with different bytes (training is not bit-reproducible across
//! machines) never overwrite each other's data: the record that wins the create names its
//! own. Nothing is trusted from the storage: a copy is used only once its size, BLAKE3 and
//! chunk sums match the record (see [`crate::cache::store::Cache`]).
//!
//! Endpoint and credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`, …) and
//! never from a pipeline file; messages name the endpoint and the variable that set it,
//! never a key.

use std::io::{Read, Write};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

/// Files up to this size are sent in one request; larger ones in parts of this size.
const PART_BYTES: usize = 16 << 20;

/// How many parts of one upload are in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A cache URL: `s3://bucket[/prefix]` or `file:///absolute/folder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url(String);

impl Url {
    /// Whether `value` (a `cache:` value, `--cache` or `PIPELINE_CACHE`) is a URL rather
    /// than a folder.
    pub fn is_url(value: &str) -> bool {
        value.contains("://")
    }

    /// Checks a cache URL; the error says what is wrong and what would be right.
    pub fn parse(value: &str) -> Result<Url, String> {
        let value = match value.split_once("://") {
            Some((scheme, rest)) if rest.len() > 1 => &value[..scheme.len() + 3 + rest.trim_end_matches('/').len()],
            _ => value,
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let bucket = rest.split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(format!(
                    "`{value}` names no bucket: write s3://BUCKET or s3://BUCKET/PREFIX"
                ));
            }
            if rest.contains('@') || rest.contains('?') {
                return Err(format!(
                    "`{value}`: a cache URL holds no credentials or options; they come from the AWS \
                     variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)"
                ));
            }
            Ok(Url(value.to_string()))
        } else if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{value}`: a file:// cache URL needs an absolute path (file:///shared/cache)"
                ));
            }
            Ok(Url(value.to_string()))
        } else {
            let scheme = value.split("://").next().unwrap_or_default();
            Err(format!(
                "`{value}`: a cache URL starts with s3:// (S3-compatible object storage) or file:// (a \
                 folder), not {scheme}://"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shared cache cannot be used as configured (unreachable endpoint, refused
/// credentials, missing bucket, bad URL): found before any work, and a configuration error
/// (exit 2), not a failed run.
#[derive(Debug)]
pub struct Unusable(pub String);

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unusable {}

/// What a conditional create found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// This call created the object.
    Created,
    /// It existed already (another machine's create won); nothing was written.
    Exists,
}

/// The operations the cache needs of a storage; blocking, so the cache stays synchronous.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The object's bytes, or `None` when there is none.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Streams the object into `file`, feeding `seen` every byte; `None` when there is none.
    fn download(&self, key: &str, file: &mut std::fs::File, seen: &mut dyn FnMut(&[u8])) -> Result<Option<u64>>;
    /// The object's size, or `None` when there is none.
    fn head(&self, key: &str) -> Result<Option<u64>>;
    /// Uploads a file (in parts when it is large), replacing what the key held.
    fn put_file(&self, key: &str, from: &FsPath) -> Result<()>;
    /// Writes the object, replacing what the key held.
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()>;
    /// Creates the object only if the key holds none (`If-None-Match: *` on S3).
    fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<Created>;
    /// Every object under `prefix`: key (relative to the storage's root), size, modified.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64, SystemTime)>>;
    /// Removes the object; removing what is not there is no error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Ends the unfinished upload the note `marker` (under `uploads/`) describes, dropping its
    /// parts, and removes the note; an upload that has since finished is left as it is.
    fn abort_upload(&self, marker: &str) -> Result<()>;
    /// Requests sent so far (for the logs and the request-count tests).
    fn requests(&self) -> u64;
    /// The URL it was opened with (no credentials), for messages.
    fn url(&self) -> &Url;
}

/// [`Storage`] on an `object_store` backend, driven by its own small runtime.
pub struct ObjectStorage {
    url: Url,
    /// Where requests go and which variable said so, for messages.
    endpoint: String,
    store: Arc<dyn ObjectStore>,
    /// The same store's multipart API where it has one (S3): uploads in parts are then
    /// noted under `uploads/`, so parts a killed process left can be found and dropped.
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: Path,
    runtime: tokio::runtime::Runtime,
    requests: AtomicU64,
}

impl std::fmt::Debug for ObjectStorage {
    // The store's own Debug may show credentials: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        tracing::debug!(url = %self.url, requests = self.requests(), "shared cache closed");
    }
}

/// The endpoint requests go to and the variable that set it (the user's fix for a wrong
/// one), without any user:password part.
fn endpoint() -> String {
    for var in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            let shown = match v.split_once("://") {
                Some((scheme, rest)) => match rest.split_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => v.clone(),
                },
                None => v.clone(),
            };
            return format!("{shown} (set by {var})");
        }
    }
    "AWS's S3 endpoint (no AWS_ENDPOINT_URL is set)".to_string()
}

impl ObjectStorage {
    /// Opens the storage a URL names; nothing is sent until the first operation.
    pub fn open(url: &Url) -> Result<ObjectStorage> {
        type Stores = (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>);
        let ((store, multipart), prefix, endpoint): (Stores, &str, String) =
            if let Some(rest) = url.as_str().strip_prefix("s3://") {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                // Bounded: an unreachable endpoint is an error within seconds, not minutes.
                let retry = RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(4),
                        base: 2.0,
                    },
                    max_retries: 4,
                    retry_timeout: Duration::from_secs(20),
                };
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s")
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "120s");
                if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    builder = builder.with_region("us-east-1");
                }
                let store = builder
                    .build()
                    .map_err(|e| anyhow::anyhow!("cannot use the cache {url}: {e}"))?;
                let store = Arc::new(store);
                ((store.clone(), Some(store)), prefix, endpoint())
            } else if let Some(path) = url.as_str().strip_prefix("file://") {
                std::fs::create_dir_all(path).with_context(|| format!("cannot create the cache folder {path}"))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| anyhow::anyhow!("cannot use the cache {url}: {e}"))?;
                ((Arc::new(store), None), "", format!("the folder {path}"))
            } else {
                bail!("{}", Url::parse(url.as_str()).err().unwrap_or_default());
            };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pipeline-storage")
            .enable_all()
            .build()
            .context("cannot start the object storage client")?;
        Ok(ObjectStorage {
            url: url.clone(),
            endpoint,
            store,
            multipart,
            prefix: Path::from(prefix),
            runtime,
            requests: AtomicU64::new(0),
        })
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    fn sent(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The error of `what` on `key`, said so the user can act on it.
    fn explain(&self, what: &str, key: &str, e: object_store::Error) -> anyhow::Error {
        use object_store::Error as E;
        let at = format!("{}/{key}", self.url);
        let text = format!("{e}");
        let refused = [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403 Forbidden",
        ];
        if matches!(e, E::PermissionDenied { .. } | E::Unauthenticated { .. })
            || refused.iter().any(|r| text.contains(r))
        {
            return anyhow::anyhow!(
                "cannot {what} {at}: the object storage at {} refused the credentials ({e}); check \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                self.endpoint
            );
        }
        if text.contains("NoSuchBucket") {
            let bucket = self
                .url
                .as_str()
                .trim_start_matches("s3://")
                .split('/')
                .next()
                .unwrap_or_default();
            return anyhow::anyhow!(
                "cannot {what} {at}: the bucket `{bucket}` does not exist at {}; create it or point the cache at \
                 another bucket",
                self.endpoint
            );
        }
        // No HTTP status at all: nothing answered (refused, unreachable, timed out).
        if matches!(e, E::Generic { .. }) && !text.contains("status code") {
            return anyhow::anyhow!(
                "cannot {what} {at}: the object storage at {} did not answer ({e}); check that it runs and that \
                 the endpoint is right",
                self.endpoint
            );
        }
        anyhow::anyhow!("cannot {what} {at} (at {}): {e}", self.endpoint)
    }
}

impl Storage for ObjectStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.sent();
        let path = self.path(key);
        self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.explain("read", key, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.explain("read", key, e)),
            }
        })
    }

    fn download(&self, key: &str, file: &mut std::fs::File, seen: &mut dyn FnMut(&[u8])) -> Result<Option<u64>> {
        self.sent();
        let path = self.path(key);
        self.runtime.block_on(async {
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.explain("download", key, e)),
            };
            let mut stream = got.into_stream();
            let mut bytes = 0u64;
            while let Some(part) = stream.next().await {
                let part = part.map_err(|e| self.explain("download", key, e))?;
                seen(&part);
                file.write_all(&part).context("cannot write the downloaded artifact")?;
                bytes += part.len() as u64;
            }
            Ok(Some(bytes))
        })
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.sent();
        let path = self.path(key);
        self.runtime.block_on(async {
            match self.store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.explain("look up", key, e)),
            }
        })
    }

    fn put_file(&self, key: &str, from: &FsPath) -> Result<()> {
        let path = self.path(key);
        let mut file = std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
        let len = file.metadata()?.len();
        if len <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes)?;
            return self.put(key, bytes);
        }
        if let Some(multipart) = &self.multipart {
            return self.put_parts_noted(multipart, key, &mut file, from);
        }
        self.runtime.block_on(async {
            self.sent();
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.explain("upload", key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; PART_BYTES];
            let sent = async {
                loop {
                    let n =
                        read_full(&mut file, &mut buf).with_context(|| format!("cannot read {}", from.display()))?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| self.explain("upload", key, e))?;
                    self.sent();
                    writer.write(&buf[..n]);
                }
                anyhow::Ok(())
            }
            .await;
            match sent {
                Ok(()) => {
                    self.sent();
                    writer
                        .finish()
                        .await
                        .map(|_| ())
                        .map_err(|e| self.explain("upload", key, e))
                }
                Err(e) => {
                    // Parts already sent are dropped with the upload (`cache gc` takes what
                    // a killed process leaves).
                    let _ = writer.abort().await;
                    Err(e)
                }
            }
        })
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.sent();
        let path = self.path(key);
        self.runtime.block_on(async {
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| self.explain("upload", key, e))
        })
    }

    fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<Created> {
        self.sent();
        let path = self.path(key);
        self.runtime.block_on(async {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self.store.put_opts(&path, PutPayload::from(bytes), opts).await {
                Ok(_) => Ok(Created::Created),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    Ok(Created::Exists)
                }
                Err(e) => Err(self.explain("publish", key, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64, SystemTime)>> {
        self.sent();
        let path = self.path(prefix);
        let root = self.prefix.clone();
        self.runtime.block_on(async {
            let mut out = Vec::new();
            let mut stream = self.store.list(Some(&path));
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.explain("list", prefix, e))?;
                let key = meta
                    .location
                    .prefix_match(&root)
                    .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
                    .unwrap_or_else(|| meta.location.to_string());
                out.push((key, meta.size, SystemTime::from(meta.last_modified)));
            }
            Ok(out)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.sent();
        let path = self.path(key);
        self.runtime.block_on(async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.explain("remove", key, e)),
            }
        })
    }

    fn abort_upload(&self, marker: &str) -> Result<()> {
        let Some(multipart) = &self.multipart else {
            return self.delete(marker);
        };
        if let Some(text) = self.get(marker)? {
            // A note that is not one (damaged, or not ours) only goes.
            if let Ok(note) = serde_json::from_slice::<UploadNote>(&text) {
                self.sent();
                let path = self.path(&note.key);
                self.runtime.block_on(async {
                    match multipart.abort_multipart(&path, &note.upload_id).await {
                        // NoSuchUpload: it finished (or was aborted) before its note went.
                        Err(e)
                            if !format!("{e}").contains("NoSuchUpload")
                                && !matches!(e, object_store::Error::NotFound { .. }) =>
                        {
                            Err(self.explain("abort the upload of", &note.key, e))
                        }
                        _ => Ok(()),
                    }
                })?;
            }
        }
        self.delete(marker)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(&self) -> &Url {
        &self.url
    }
}

/// Where the shared cache keeps an artifact's record.
pub fn record_key(fingerprint: &str) -> String {
    format!("artifacts/{fingerprint}.json")
}

/// Where the shared cache keeps an artifact's data: named by its bytes (`blake3`) too, so two
/// machines that made one fingerprint with different bytes never overwrite each other's data.
pub fn data_key(fingerprint: &str, blake3: &str, extension: &str) -> String {
    let sum = blake3.get(..32).unwrap_or(blake3);
    format!("artifacts/{fingerprint}.{sum}.{extension}")
}

/// What `uploads/<id>.json` says of an upload in parts while it runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadNote {
    /// The key the upload writes.
    key: String,
    /// The storage's id of the upload.
    upload_id: String,
}

impl ObjectStorage {
    /// Uploads a large file in parts through the store's multipart API, [`PARTS_IN_FLIGHT`]
    /// at a time, with a note under `uploads/` for as long as the upload is unfinished: a
    /// process killed mid-upload leaves parts only S3 sees, and the note is how `cache gc`
    /// finds them. A failed upload is aborted here.
    fn put_parts_noted(
        &self,
        multipart: &Arc<dyn MultipartStore>,
        key: &str,
        file: &mut std::fs::File,
        from: &FsPath,
    ) -> Result<()> {
        let path = self.path(key);
        self.runtime.block_on(async {
            self.sent();
            let id = multipart
                .create_multipart(&path)
                .await
                .map_err(|e| self.explain("upload", key, e))?;
            let hash = blake3::hash(format!("{key}\n{id}").as_bytes()).to_hex();
            let marker = format!("uploads/{}.json", &hash[..32]);
            let note = serde_json::to_vec(&UploadNote {
                key: key.to_string(),
                upload_id: id.clone(),
            })?;
            self.sent();
            if let Err(e) = self.store.put(&self.path(&marker), PutPayload::from(note)).await {
                let _ = multipart.abort_multipart(&path, &id).await;
                return Err(self.explain("upload", &marker, e));
            }
            let sent = async {
                let mut tasks = tokio::task::JoinSet::new();
                let mut parts: Vec<Option<PartId>> = Vec::new();
                loop {
                    let mut buf = vec![0u8; PART_BYTES];
                    let n = read_full(file, &mut buf).with_context(|| format!("cannot read {}", from.display()))?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    while tasks.len() >= PARTS_IN_FLIGHT {
                        self.part_done(&mut tasks, &mut parts, key).await?;
                    }
                    let (idx, multipart, path, id) = (parts.len(), multipart.clone(), path.clone(), id.clone());
                    parts.push(None);
                    self.sent();
                    tasks.spawn(async move { (idx, multipart.put_part(&path, &id, idx, PutPayload::from(buf)).await) });
                    crate::data::fault::point(|| format!("{key}: part {} of an upload sent", idx + 1));
                }
                while !tasks.is_empty() {
                    self.part_done(&mut tasks, &mut parts, key).await?;
                }
                let parts = parts.into_iter().flatten().collect();
                self.sent();
                multipart
                    .complete_multipart(&path, &id, parts)
                    .await
                    .map_err(|e| self.explain("upload", key, e))?;
                anyhow::Ok(())
            }
            .await;
            if sent.is_err() {
                let _ = multipart.abort_multipart(&path, &id).await;
            }
            // A note left behind (a failed delete) names a finished or aborted upload: `cache
            // gc` then only removes it.
            self.sent();
            let _ = self.store.delete(&self.path(&marker)).await;
            sent
        })
    }

    /// Waits for one of the part uploads in `tasks` and puts its id in its place.
    async fn part_done(
        &self,
        tasks: &mut tokio::task::JoinSet<(usize, object_store::Result<PartId>)>,
        parts: &mut [Option<PartId>],
        key: &str,
    ) -> Result<()> {
        match tasks.join_next().await {
            Some(Ok((idx, Ok(part)))) => {
                parts[idx] = Some(part);
                Ok(())
            }
            Some(Ok((_, Err(e)))) => Err(self.explain("upload", key, e)),
            Some(Err(e)) => Err(anyhow::anyhow!("an upload of {key} stopped: {e}")),
            None => Ok(()),
        }
    }
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens the storage a cache URL names.
pub fn open(url: &Url) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(ObjectStorage::open(url)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_urls_are_checked_with_a_fix() {
        assert!(Url::parse("s3://bucket/team/cache").is_ok());
        assert_eq!(Url::parse("s3://bucket/").unwrap().as_str(), "s3://bucket");
        assert!(Url::parse("file:///shared/cache").is_ok());
        let err = Url::parse("s3://").unwrap_err();
        assert!(err.contains("names no bucket"), "{err}");
        let err = Url::parse("gs://bucket").unwrap_err();
        assert!(err.contains("not gs://"), "{err}");
        let err = Url::parse("s3://key:secret@bucket").unwrap_err();
        assert!(err.contains("no credentials"), "{err}");
        let err = Url::parse("file://relative").unwrap_err();
        assert!(err.contains("absolute path"), "{err}");
        assert!(Url::is_url("s3://b") && !Url::is_url("cache"));
    }

    #[test]
    fn a_folder_storage_creates_once_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::parse(&format!("file://{}", dir.path().display())).unwrap();
        let store = open(&url).unwrap();
        assert_eq!(store.get("artifacts/a.json").unwrap(), None);
        assert_eq!(
            store.put_if_absent("artifacts/a.json", b"one".to_vec()).unwrap(),
            Created::Created
        );
        assert_eq!(
            store.put_if_absent("artifacts/a.json", b"two".to_vec()).unwrap(),
            Created::Exists
        );
        assert_eq!(store.get("artifacts/a.json").unwrap().as_deref(), Some(&b"one"[..]));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![5u8; PART_BYTES + 10]).unwrap();
        store.put_file("artifacts/a.0.arrow", &big).unwrap();
        assert_eq!(store.head("artifacts/a.0.arrow").unwrap(), Some(PART_BYTES as u64 + 10));
        let mut out = tempfile::tempfile().unwrap();
        let mut seen = 0usize;
        let got = store
            .download("artifacts/a.0.arrow", &mut out, &mut |b| seen += b.len())
            .unwrap();
        assert_eq!((got, seen), (Some(PART_BYTES as u64 + 10), PART_BYTES + 10));
        let mut keys: Vec<String> = store.list("artifacts").unwrap().into_iter().map(|(k, ..)| k).collect();
        keys.sort();
        assert_eq!(keys, ["artifacts/a.0.arrow", "artifacts/a.json"]);
        store.delete("artifacts/a.json").unwrap();
        store.delete("artifacts/a.json").unwrap();
        assert_eq!(store.head("artifacts/a.json").unwrap(), None);
        assert!(store.requests() > 8);
    }
}
