//! Object stores: inputs and datasets at `s3://`, `gs://`, `az://` (also `abfs://`, `abfss://`)
//! and `file://` URLs, through the `object_store` crate, with credentials and endpoints from the
//! environment (`AmazonS3Builder::from_env()` and its GCS/Azure twins; see `docs/STORAGE.md`).
//!
//! The rest of hindsight is synchronous and file-based, so this module is the bridge:
//! - an input object is read once per run: JSON/JSONL objects stream straight into the readers
//!   ([`ObjectReader`]; memory is one network buffer, nothing on disk), Parquet objects (which
//!   need random access) are spooled once into an anonymous temporary file, capped by
//!   `input.max_spool_bytes`, and schema discovery reads only their footer ([`parquet_footer`]);
//!   chunk ids use the object URL and its content identity;
//! - a dataset at a URL is written into a local staging directory, and every committed chunk is
//!   uploaded from there ([`Mirror`]): shards by multipart upload (an object becomes visible only
//!   when its upload completes), then the chunk state, and the manifest last with a single put.

pub mod mirror;
pub mod state_store;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use url::Url;

pub use mirror::Mirror;

/// Errors talking to an object store or naming one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The text looked like a URL but is not one hindsight can use.
    #[error("{url}: {message}")]
    BadUrl { url: String, message: String },
    /// An object-store request failed (credentials, network, missing bucket, ...).
    #[error("{action} {url}: {source}")]
    Request {
        action: &'static str,
        url: String,
        #[source]
        source: object_store::Error,
    },
    /// A local file of the staging or spooling area failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input URL matched no object.
    #[error("input `{0}` matched no object (check the bucket, prefix or glob)")]
    NoInput(String),
}

fn request(action: &'static str, url: &str) -> impl FnOnce(object_store::Error) -> StoreError {
    let url = url.to_string();
    move |source| StoreError::Request {
        action,
        url,
        source,
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// URL schemes served by an object store (anything else with `://` is refused, not guessed).
const REMOTE_SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss"];

/// True when `s` names an object-store location (`s3://`, `gs://`, `az://`, ...). `file://` URLs
/// and plain paths are local.
pub fn is_remote(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(scheme, _)| REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// Where a dataset or input lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local path (also what a `file://` URL becomes).
    Local(PathBuf),
    /// A prefix in an object store.
    Remote(Remote),
}

impl Location {
    /// Parses `s3://bucket/prefix`, `gs://…`, `az://container/prefix`, `abfs[s]://…`,
    /// `file:///abs/path` or a plain path.
    pub fn parse(s: &str) -> Result<Location, StoreError> {
        if let Some(rest) = s.strip_prefix("file://") {
            let url = Url::parse(s).map_err(|e| StoreError::BadUrl {
                url: s.into(),
                message: e.to_string(),
            })?;
            let path = url.to_file_path().map_err(|_| StoreError::BadUrl {
                url: s.into(),
                message: format!("not an absolute local path: {rest}"),
            })?;
            return Ok(Location::Local(path));
        }
        if s.contains("://") {
            if !is_remote(s) {
                return Err(StoreError::BadUrl {
                    url: s.into(),
                    message:
                        "unsupported scheme (use s3://, gs://, az://, abfs://, file:// or a path)"
                            .into(),
                });
            }
            return Remote::parse(s).map(Location::Remote);
        }
        Ok(Location::Local(PathBuf::from(s)))
    }
}

/// A prefix in an object store, with the store that serves it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The URL without a trailing slash, e.g. `s3://bucket/datasets/nightly`.
    pub url: String,
    /// The store for the URL's bucket or container.
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix inside the bucket (may be empty).
    pub prefix: ObjectPath,
    /// `scheme://bucket` part of the URL, for turning keys back into URLs.
    base: String,
}

impl Remote {
    /// Parses an object-store URL and builds (or reuses) the store for its bucket.
    pub fn parse(s: &str) -> Result<Remote, StoreError> {
        let trimmed = s.trim_end_matches('/');
        let url = Url::parse(trimmed).map_err(|e| StoreError::BadUrl {
            url: s.into(),
            message: e.to_string(),
        })?;
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(StoreError::BadUrl {
                url: s.into(),
                message: "no bucket or container name".into(),
            });
        }
        let base = format!("{}://{}", url.scheme(), host);
        let store = store_for(&base)?;
        let prefix = ObjectPath::from_url_path(url.path()).map_err(|e| StoreError::BadUrl {
            url: s.into(),
            message: e.to_string(),
        })?;
        Ok(Remote {
            url: trimmed.to_string(),
            store,
            prefix,
            base,
        })
    }

    /// The object key of `rel` (a `/`-separated path relative to this prefix).
    pub fn key(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The URL of an object key of this store.
    pub fn url_of(&self, key: &ObjectPath) -> String {
        format!("{}/{}", self.base, key)
    }

    /// The key relative to this prefix (`None` if it is outside).
    pub fn relative(&self, key: &ObjectPath) -> Option<String> {
        let parts: Vec<String> = key
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    /// Every object under `rel` (recursively), sorted by key.
    pub fn list(&self, rel: &str) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        let prefix = self.key(rel);
        let url = self.url_of(&prefix);
        let mut out: Vec<object_store::ObjectMeta> = block_on(async {
            let mut stream = self.store.list(Some(&prefix));
            let mut v = Vec::new();
            while let Some(m) = stream.next().await {
                v.push(m.map_err(request("listing", &url))?);
            }
            Ok::<_, StoreError>(v)
        })?;
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Size of one object, or `None` if it does not exist.
    pub fn head(&self, rel: &str) -> Result<Option<u64>, StoreError> {
        let key = self.key(rel);
        match block_on(self.store.head(&key)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request("reading metadata of", &self.url_of(&key))(e)),
        }
    }

    /// What identifies the object's current content: its ETag (or, where the store gives none,
    /// its last-modified time) and size; `None` when the object does not exist.
    pub fn content_identity(&self, rel: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(rel);
        match block_on(self.store.head(&key)) {
            Ok(m) => Ok(Some(match m.e_tag {
                Some(tag) => format!("{}:etag:{tag}", m.size),
                None => format!("{}:modified:{}", m.size, m.last_modified.timestamp_micros()),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request("reading metadata of", &self.url_of(&key))(e)),
        }
    }

    /// Downloads an object into `file` (streaming; memory is one network buffer).
    pub fn download_to(&self, rel: &str, file: &mut std::fs::File) -> Result<u64, StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        block_on(async {
            let got = self
                .store
                .get(&key)
                .await
                .map_err(request("downloading", &url))?;
            let mut stream = got.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(request("downloading", &url))?;
                file.write_all(&chunk)
                    .map_err(io_err("spooling", Path::new(&url)))?;
                n += chunk.len() as u64;
            }
            Ok(n)
        })
    }

    /// Downloads an object to a local path (written to `path.tmp`, then renamed).
    pub fn download_file(&self, rel: &str, path: &Path) -> Result<u64, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        }
        let (tmp, mut f) =
            crate::util::create_temp_beside(path).map_err(io_err("creating", path))?;
        let n = match self.download_to(rel, &mut f) {
            Ok(n) => n,
            Err(e) => {
                drop(f);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))?;
        Ok(n)
    }

    /// Puts `bytes` as one object (a single atomic PUT).
    pub fn put_bytes(&self, rel: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(request("uploading", &url))
    }

    /// Creates the object only if no object has its key (`If-None-Match: *` on S3, the native
    /// create-only put on GCS and Azure): `Ok(true)` when this call created it, `Ok(false)` when
    /// it existed. Of many concurrent callers exactly one gets `true`, which is how sharded tasks
    /// elect the one that finalizes without a lock.
    pub fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<bool, StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match block_on(self.store.put_opts(&key, PutPayload::from(bytes), opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(request("creating", &url)(e)),
        }
    }

    /// A small object's bytes (`None` when there is no such object).
    pub fn get_bytes(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        block_on(async {
            match self.store.get(&key).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(request("downloading", &url)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(request("downloading", &url)(e)),
            }
        })
    }

    /// Uploads a local file with a multipart upload: readers see the object only once every part
    /// is in and the upload is completed; a failed upload is aborted (its parts deleted).
    pub fn put_file_multipart(&self, rel: &str, path: &Path) -> Result<(), StoreError> {
        let key = self.key(rel);
        let url = self.url_of(&key);
        let mut file = std::fs::File::open(path).map_err(io_err("opening", path))?;
        block_on(async {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(request("starting upload of", &url))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(io_err("reading", path)(e));
                    }
                };
                if n == 0 {
                    break;
                }
                if let Err(e) = w.wait_for_capacity(4).await {
                    return Err(request("uploading", &url)(e));
                }
                w.write(&buf[..n]);
            }
            w.finish()
                .await
                .map_err(request("completing upload of", &url))?;
            Ok(())
        })
    }

    /// Deletes an object (a missing one is not an error).
    pub fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let key = self.key(rel);
        match block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(request("deleting", &self.url_of(&key))(e)),
        }
    }
}

/// Multipart part size: S3 needs at least 5 MiB for every part but the last.
const MULTIPART_CHUNK: usize = 8 << 20;

/// One store per `scheme://bucket`, built from the environment on first use.
fn store_for(base: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    let mut map = stores.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = map.get(base) {
        return Ok(s.clone());
    }
    let scheme = base.split("://").next().unwrap_or_default();
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(base);
            // Create-only puts (`put_new`) use S3's native conditional writes unless the
            // environment chose another mechanism (`AWS_CONDITIONAL_PUT`).
            if std::env::var_os("AWS_CONDITIONAL_PUT").is_none() {
                b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(base)
            .build()
            .map(|s| Arc::new(s) as _),
        _ => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(base)
            .build()
            .map(|s| Arc::new(s) as _),
    };
    let store = built.map_err(request("configuring a client for", base))?;
    map.insert(base.to_string(), store.clone());
    Ok(store)
}

/// Runs a future to completion on hindsight's shared I/O runtime (the pipeline's threads are
/// synchronous; this is the only place async code is driven).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hindsight-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the I/O runtime: {e}"))
    });
    rt.block_on(f)
}

/// Sizes of the input objects seen while expanding inputs (URL → bytes), so chunk ids need no
/// second request.
fn sizes() -> &'static Mutex<HashMap<String, u64>> {
    static SIZES: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    SIZES.get_or_init(Default::default)
}

/// Expands an input URL into object URLs, sorted by key: one object, every object with a known
/// data extension under a prefix (hidden names skipped, like local directories), or the objects
/// whose key matches a glob (`s3://b/logs/2024-*/part-*.jsonl.gz`).
pub fn expand_remote(arg: &str, known: impl Fn(&str) -> bool) -> Result<Vec<String>, StoreError> {
    let glob_at = arg.find(['*', '?', '[']);
    let (list_url, pattern) = match glob_at {
        Some(i) => {
            let cut = arg[..i].rfind('/').unwrap_or(0);
            let pattern = glob::Pattern::new(arg).map_err(|e| StoreError::BadUrl {
                url: arg.into(),
                message: format!("invalid glob: {e}"),
            })?;
            (arg[..cut].to_string(), Some(pattern))
        }
        None => (arg.to_string(), None),
    };
    let remote = Remote::parse(&list_url)?;
    let mut out = Vec::new();
    if pattern.is_none() && !arg.ends_with('/') {
        if let Some(size) = remote.head("")? {
            let url = remote.url.clone();
            sizes()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(url.clone(), size);
            return Ok(vec![url]);
        }
    }
    for m in remote.list("")? {
        let url = remote.url_of(&m.location);
        let name = m.location.filename().unwrap_or_default();
        let rel = remote.relative(&m.location).unwrap_or_default();
        let hidden = rel.split('/').any(|p| p.starts_with('.'));
        let keep = match &pattern {
            Some(p) => p.matches(&url),
            None => !hidden && known(name),
        };
        if keep {
            sizes()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(url.clone(), m.size);
            out.push(url);
        }
    }
    if out.is_empty() {
        return Err(StoreError::NoInput(arg.to_string()));
    }
    Ok(out)
}

/// Size of an input (local file or object URL); 0 when it cannot be known.
pub fn input_size(uri: &str) -> u64 {
    if !is_remote(uri) {
        return std::fs::metadata(uri).map(|m| m.len()).unwrap_or(0);
    }
    if let Some(n) = sizes().lock().unwrap_or_else(|p| p.into_inner()).get(uri) {
        return *n;
    }
    match Remote::parse(uri).and_then(|r| r.head("")) {
        Ok(Some(n)) => {
            sizes()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uri.to_string(), n);
            n
        }
        _ => 0,
    }
}

/// What identifies the current content of an input, for resume: size and modification time of a
/// local file (nanoseconds), ETag (else last-modified) and size of an object. An input rewritten
/// in place, even with the same size, gets a new identity, so its chunks are not taken as done.
/// Empty when it cannot be known.
pub fn input_identity(uri: &str) -> String {
    if !is_remote(uri) {
        return std::fs::metadata(uri)
            .map(|m| {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}:mtime:{mtime}", m.len())
            })
            .unwrap_or_default();
    }
    Remote::parse(uri)
        .and_then(|r| r.content_identity(""))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A streaming reader over one input object: bytes are read as they arrive (memory is one
/// network buffer) and nothing is written to disk. JSON and JSONL inputs are read this way, once;
/// dropping the reader early (schema discovery reads a few records) stops the download.
pub struct ObjectReader {
    url: String,
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "downloading {}: {e}",
                        self.url
                    )))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Opens an input object for streaming reads ([`ObjectReader`]).
pub fn open_object(url: &str) -> std::io::Result<ObjectReader> {
    let to_io = |e: StoreError| std::io::Error::other(e.to_string());
    let remote = Remote::parse(url).map_err(to_io)?;
    let key = remote.key("");
    let got = block_on(remote.store.get(&key))
        .map_err(|e| std::io::Error::other(format!("downloading {url}: {e}")))?;
    Ok(ObjectReader {
        url: url.to_string(),
        stream: got.into_stream(),
        chunk: bytes::Bytes::new(),
    })
}

/// The footer of a Parquet object, read with two range requests (its last 8 bytes, then the
/// metadata), so schema discovery does not download the object.
pub fn parquet_footer(url: &str) -> std::io::Result<parquet::file::metadata::ParquetMetaData> {
    let to_io = |e: StoreError| std::io::Error::other(e.to_string());
    let bad =
        |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{url}: {m}"));
    let remote = Remote::parse(url).map_err(to_io)?;
    let key = remote.key("");
    let size = remote
        .head("")
        .map_err(to_io)?
        .ok_or_else(|| bad("no such object".into()))?;
    if size < 12 {
        return Err(bad(format!("{size} bytes is too small for a Parquet file")));
    }
    let get = |r: std::ops::Range<u64>| {
        block_on(remote.store.get_range(&key, r))
            .map_err(|e| std::io::Error::other(format!("reading {url}: {e}")))
    };
    let tail = get(size - 8..size)?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(bad("no Parquet footer magic".into()));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len > size - 8 {
        return Err(bad(format!(
            "footer length {len} exceeds the object size {size}"
        )));
    }
    let meta = get(size - 8 - len..size - 8)?;
    parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&meta)
        .map_err(|e| bad(format!("unreadable Parquet footer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_by_scheme() {
        assert!(matches!(
            Location::parse("out/x").expect("path"),
            Location::Local(p) if p == Path::new("out/x")
        ));
        assert!(matches!(
            Location::parse("file:///tmp/a%20b").expect("file url"),
            Location::Local(p) if p == Path::new("/tmp/a b")
        ));
        let e = Location::parse("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
        assert!(is_remote("s3://b/k") && is_remote("gs://b") && is_remote("az://c/p"));
        assert!(!is_remote("file:///x") && !is_remote("/x/y"));
    }

    #[test]
    fn remote_keys_join_under_the_prefix() {
        // Building an S3 client makes no request.
        let r = Remote::parse("s3://bucket/data/nightly/").expect("s3 url");
        assert_eq!(r.url, "s3://bucket/data/nightly");
        let k = r.key("_state/chunks/a.json");
        assert_eq!(k.as_ref(), "data/nightly/_state/chunks/a.json");
        assert_eq!(
            r.url_of(&k),
            "s3://bucket/data/nightly/_state/chunks/a.json"
        );
        assert_eq!(r.relative(&k).as_deref(), Some("_state/chunks/a.json"));
        let e = Remote::parse("s3:///nobucket").unwrap_err().to_string();
        assert!(e.contains("bucket"), "{e}");
    }
}
