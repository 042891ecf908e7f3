//! Input expansion (path, directory, glob) and opening with transparent decompression.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::ingest::IngestError;

/// How a file is laid out; decides the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// One JSON value per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// One JSON array, or concatenated JSON values (`.json`).
    Json,
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
}

/// Compression wrapped around a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (`.gz`, magic `1f 8b`); multi-member files are read whole.
    Gzip,
    /// Zstandard (`.zst`, magic `28 b5 2f fd`).
    Zstd,
}

/// One input file, with what its name says about it (the content is sniffed when it says nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path on disk.
    pub path: PathBuf,
    /// Kind from the extension (after stripping `.gz`/`.zst`), if recognised.
    pub kind: Option<FileKind>,
}

impl InputFile {
    /// Classifies a path by its extension.
    pub fn new(path: PathBuf) -> Self {
        let kind = kind_from_name(&path);
        InputFile { path, kind }
    }
}

fn kind_from_name(path: &Path) -> Option<FileKind> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let name = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .or_else(|| name.strip_suffix(".zstd"))
        .unwrap_or(&name);
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Some(FileKind::Jsonl)
    } else if name.ends_with(".json") {
        Some(FileKind::Json)
    } else if name.ends_with(".parquet") || name.ends_with(".pq") {
        Some(FileKind::Parquet)
    } else {
        None
    }
}

/// Expands paths, directories (walked recursively, sorted, only files with a known extension,
/// hidden entries skipped) and globs (sorted) into a file list, in argument order. An argument
/// that matches nothing is an error, so a typo is not mistaken for an empty dataset.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<InputFile>, IngestError> {
    let mut out = Vec::new();
    for arg in inputs {
        let before = out.len();
        if crate::store::is_remote(arg) {
            let urls =
                crate::store::expand_remote(arg, |name| kind_from_name(Path::new(name)).is_some())
                    .map_err(|e| match e {
                        crate::store::StoreError::NoInput(a) => IngestError::NoInput(a),
                        other => IngestError::Store(other),
                    })?;
            out.extend(urls.into_iter().map(|u| InputFile::new(PathBuf::from(u))));
            continue;
        }
        // `file://` URLs are local paths.
        let local = match arg.strip_prefix("file://") {
            Some(_) => match crate::store::Location::parse(arg).map_err(IngestError::Store)? {
                crate::store::Location::Local(p) => p.display().to_string(),
                crate::store::Location::Remote(_) => arg.clone(),
            },
            None => arg.clone(),
        };
        let arg = &local;
        let path = Path::new(arg);
        if path.is_dir() {
            walk_dir(path, &mut out, &mut HashSet::new())?;
        } else if path.is_file() {
            out.push(InputFile::new(path.to_path_buf()));
        } else if arg.contains(['*', '?', '[']) {
            let paths = glob::glob(arg).map_err(|e| IngestError::Glob {
                pattern: arg.clone(),
                detail: e.to_string(),
            })?;
            let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
            matched.sort();
            for p in matched {
                if p.is_dir() {
                    walk_dir(&p, &mut out, &mut HashSet::new())?;
                } else if p.is_file() {
                    out.push(InputFile::new(p));
                }
            }
        }
        if out.len() == before {
            return Err(IngestError::NoInput(arg.clone()));
        }
    }
    Ok(out)
}

/// Walks `dir` recursively. Symlinked directories are followed, but each real directory is
/// walked once (`visited` holds canonical paths), so a symlink loop or a second link to the
/// same tree neither recurses forever nor reads the same files twice.
fn walk_dir(
    dir: &Path,
    out: &mut Vec<InputFile>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), IngestError> {
    let real = dir.canonicalize().map_err(|e| IngestError::io(dir, e))?;
    if !visited.insert(real) {
        tracing::warn!(
            dir = %crate::util::terminal_safe(&dir.display().to_string()),
            "skipping a directory already walked (symlink loop or second link to it)"
        );
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| IngestError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .map(|n| n.to_string_lossy().starts_with('.'))
                .unwrap_or(true)
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_dir(&p, out, visited)?;
        } else if kind_from_name(&p).is_some() {
            out.push(InputFile::new(p));
        }
    }
    Ok(())
}

/// A file opened for reading, decompressed if needed.
pub struct Opened {
    /// The file path.
    pub path: PathBuf,
    /// The (decompressed) byte stream.
    pub reader: Box<dyn BufRead + Send>,
    /// Compression that was detected.
    pub compression: Compression,
    /// The first bytes of the decompressed stream (for sniffing the kind).
    pub magic: Vec<u8>,
    /// The same bytes as a seekable file when they need no decompression and are on disk
    /// (Parquet reads it in place instead of spooling a copy).
    pub seekable: Option<File>,
}

/// Detects compression from magic bytes (the extension can lie; magic cannot).
pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Guesses a file kind from the first decompressed bytes: `PAR1` → Parquet, `[` → JSON array,
/// anything else → JSONL.
pub fn sniff_kind(head: &[u8]) -> Option<FileKind> {
    if head.starts_with(b"PAR1") {
        return Some(FileKind::Parquet);
    }
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Some(FileKind::Json),
        Some(_) => Some(FileKind::Jsonl),
        None => None,
    }
}

/// Opens a file (or an object-store URL, streamed) and wraps it in the right decompressor (by
/// magic bytes).
pub fn open_decompressed(path: &Path) -> std::io::Result<Opened> {
    let name = path.to_string_lossy();
    let (source, file): (Box<dyn Read + Send>, Option<File>) = if crate::store::is_remote(&name) {
        (Box::new(Counted(crate::store::open_object(&name)?)), None)
    } else {
        let f = File::open(path)?;
        let clone = f.try_clone().ok();
        (Box::new(Counted(f)), clone)
    };
    let mut raw = BufReader::with_capacity(256 << 10, source);
    let compression = sniff_compression(raw.fill_buf()?);
    let seekable = match compression {
        Compression::None => file,
        _ => None,
    };
    let mut reader: Box<dyn BufRead + Send> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            256 << 10,
            flate2::bufread::MultiGzDecoder::new(raw),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            256 << 10,
            zstd::stream::read::Decoder::with_buffer(raw)?,
        )),
    };
    let magic = reader.fill_buf()?.iter().take(64).copied().collect();
    Ok(Opened {
        path: path.to_path_buf(),
        reader,
        compression,
        magic,
        seekable,
    })
}

/// Input bytes read so far by this process (compressed bytes as stored; a Parquet file read in
/// place counts whole when opened): the run's progress and ETA are measured against the inputs'
/// total size.
static INPUT_BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`INPUT_BYTES_READ`] now.
pub fn input_bytes_read() -> u64 {
    INPUT_BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// Adds bytes read outside the counted streams (a Parquet file opened in place).
pub fn count_input_bytes(n: u64) {
    INPUT_BYTES_READ.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// A raw input stream that counts what it reads into [`INPUT_BYTES_READ`].
struct Counted<R>(R);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        count_input_bytes(n as u64);
        Ok(n)
    }
}

/// Copies a (decompressed or downloaded) stream into an anonymous temporary file, for Parquet,
/// which needs random access. More than `max_bytes` is refused, so a decompression bomb or a
/// mislabelled giant object cannot fill the disk.
pub fn spool_to_tempfile(reader: &mut dyn Read, max_bytes: u64) -> std::io::Result<File> {
    let mut tmp = tempfile::tempfile()?;
    let copied = std::io::copy(&mut reader.take(max_bytes.saturating_add(1)), &mut tmp)?;
    if copied > max_bytes {
        return Err(std::io::Error::other(format!(
            "spooling stopped: the stream is larger than input.max_spool_bytes = {max_bytes} \
             (raise it, or store the Parquet file uncompressed)"
        )));
    }
    Ok(tmp)
}
