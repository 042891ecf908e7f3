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

mod remote;
pub use remote::*;

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
