//! Readers: turn files (JSONL, JSON arrays, Parquet; optionally `.gz` / `.zst`) into a stream of
//! raw records, and every unreadable record into a [`QuarantineEntry`].
//!
//! Everything here streams: a JSONL file is read line by line, a JSON array element by element
//! (big dumps are one array), a Parquet file batch by batch, so memory stays flat as input grows.
//! A record that cannot be read never stops the run; it becomes a quarantine entry with its file,
//! byte offset or row, a reason and a bounded snippet.
//!
//! Per-format parsing (WildChat, ShareGPT, OpenAI messages, demonstrations, unit tests, hints)
//! lives in [`formats`]; autodetection in [`formats::detect`].

pub mod error;
pub mod formats;
pub mod input;
pub mod json_array;
pub mod jsonl;
pub mod parquet_rows;
pub mod quarantine;
pub mod source;

use serde::{Deserialize, Serialize};

pub use error::IngestError;
pub use input::{expand_inputs, Compression, FileKind, InputFile};
pub use quarantine::{QuarantineEntry, QuarantineReason, QuarantineWriter, SNIPPET_MAX_BYTES};
pub use source::{
    BoundPredicate, InputPredicate, InputSource, PredicateError, SourceItem, SourceItems,
    WhereStats,
};

/// One record as read from a file, before any format is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// The file it came from (path as given/expanded); provenance for every episode.
    pub source_uri: String,
    /// 0-based index: JSONL line number (blank lines count), JSON array element, Parquet row.
    pub record_index: i64,
    /// Byte offset of the record's first byte in the (decompressed) stream; `None` for Parquet.
    pub byte_offset: Option<u64>,
    /// The record itself.
    pub value: serde_json::Value,
}

/// Reader limits, so one pathological record cannot exhaust memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReaderOptions {
    /// A JSONL line or JSON array element larger than this is quarantined (`record_too_large`)
    /// without being buffered whole.
    pub max_record_bytes: usize,
    /// Rows per Parquet batch (memory is about one batch at a time); fewer for files whose rows
    /// are big, so a batch stays near 64 MiB.
    pub parquet_batch_size: usize,
    /// Largest compressed Parquet file or Parquet object spooled to a temporary file (Parquet
    /// needs random access); a larger one is quarantined `unreadable_file`. Omitted from the
    /// config fingerprint at its default.
    #[serde(skip_serializing_if = "is_default_spool")]
    pub max_spool_bytes: u64,
}

/// Default of [`ReaderOptions::max_spool_bytes`]: 64 GiB.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 64 << 30;

fn is_default_spool(v: &u64) -> bool {
    *v == DEFAULT_MAX_SPOOL_BYTES
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            max_record_bytes: 64 << 20,
            parquet_batch_size: 256,
            max_spool_bytes: DEFAULT_MAX_SPOOL_BYTES,
        }
    }
}

/// The item every reader yields: a record, or why a record could not be read.
pub type RecordResult = Result<RawRecord, QuarantineEntry>;

/// A boxed per-file record iterator.
pub type FileRecords = Box<dyn Iterator<Item = RecordResult> + Send>;

/// Opens one file with the reader its kind calls for. A file that cannot be opened at all yields
/// one quarantine entry (`unreadable_file`) instead of failing the run.
pub fn open_file(file: &InputFile, opts: &ReaderOptions) -> FileRecords {
    let uri = file.path.display().to_string();
    let opened = match input::open_decompressed(&file.path) {
        Ok(o) => o,
        Err(e) => {
            return Box::new(std::iter::once(Err(QuarantineEntry::new(
                &uri,
                -1,
                None,
                QuarantineReason::UnreadableFile,
                e.to_string(),
                b"",
            ))))
        }
    };
    open_opened(file, opened, opts)
}

/// [`open_file`] for a file already opened (and sniffed) by the caller, so it is not opened,
/// or downloaded, a second time.
pub fn open_opened(file: &InputFile, opened: input::Opened, opts: &ReaderOptions) -> FileRecords {
    let uri = file.path.display().to_string();
    match opened_kind(file, &opened) {
        FileKind::Jsonl => Box::new(jsonl::JsonlReader::new(uri, opened.reader, opts)),
        FileKind::Json => Box::new(json_array::JsonArrayReader::new(uri, opened.reader, opts)),
        FileKind::Parquet => parquet_rows::open(uri, opened, opts),
    }
}

/// The kind of an opened file: from its name, else from its first bytes (JSONL by default).
pub fn opened_kind(file: &InputFile, opened: &input::Opened) -> FileKind {
    file.kind
        .or_else(|| input::sniff_kind(&opened.magic))
        .unwrap_or(FileKind::Jsonl)
}
