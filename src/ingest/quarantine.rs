//! Quarantine: where records that cannot be read or do not fit their schema go, with enough
//! context (file, byte offset or row, reason, snippet) to find and fix them. Nothing is dropped
//! silently.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ingest::IngestError;

/// Longest snippet kept from a bad record, in bytes (always cut on a char boundary).
pub const SNIPPET_MAX_BYTES: usize = 512;
/// Longest detail kept (parser messages can embed record text); longer ones end with `…`.
pub const DETAIL_MAX_BYTES: usize = 1024;
/// Extra bytes kept until [`QuarantineEntry::seal`], so PII scrubbing sees whole emails, keys
/// and card numbers at the cut instead of a fragment that no pattern recognises.
pub const SCRUB_MARGIN_BYTES: usize = 4096;

/// Why a record was quarantined. The string forms are the `reason` values in `quarantine.jsonl`
/// and the keys of `records_quarantined` in the run statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// The bytes of the record are not valid UTF-8.
    InvalidUtf8,
    /// The record is not valid JSON.
    MalformedJson,
    /// The file ends in the middle of a record (cut-off dump).
    Truncated,
    /// The record is larger than `max_record_bytes`.
    RecordTooLarge,
    /// Valid JSON, but a field is missing or has the wrong type (detail names the field path).
    SchemaMismatch,
    /// A message role that no known alias maps to.
    UnknownRole,
    /// Two user (or assistant) turns in a row, when the config says to quarantine them.
    NonAlternatingRoles,
    /// The conversation starts with the assistant, when the config says to quarantine it.
    LeadingAssistant,
    /// No format could be detected for the record and none was given.
    UnknownFormat,
    /// The file could not be opened or is not a file of its claimed kind.
    UnreadableFile,
    /// Reading failed mid-file (I/O or decompression error); the rest of the file is skipped.
    ReadError,
    /// A Parquet batch could not be decoded; the rest of the file is skipped.
    ParquetError,
    /// The input predicate (`input.where`) cannot be evaluated on this record's values (e.g. a
    /// boolean test on a string field).
    WhereError,
    /// An assistant message calls tools (`tool_calls`, `function_call`). Chat templates render
    /// tool calls in their own formats, which hindsight does not reproduce yet; scoring a
    /// different rendering would be silently wrong, so the record is set aside.
    ToolCalls,
}

impl QuarantineReason {
    /// The snake_case name used in files and counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            QuarantineReason::InvalidUtf8 => "invalid_utf8",
            QuarantineReason::MalformedJson => "malformed_json",
            QuarantineReason::Truncated => "truncated",
            QuarantineReason::RecordTooLarge => "record_too_large",
            QuarantineReason::SchemaMismatch => "schema_mismatch",
            QuarantineReason::UnknownRole => "unknown_role",
            QuarantineReason::NonAlternatingRoles => "non_alternating_roles",
            QuarantineReason::LeadingAssistant => "leading_assistant",
            QuarantineReason::UnknownFormat => "unknown_format",
            QuarantineReason::UnreadableFile => "unreadable_file",
            QuarantineReason::ReadError => "read_error",
            QuarantineReason::ParquetError => "parquet_error",
            QuarantineReason::WhereError => "where_error",
            QuarantineReason::ToolCalls => "tool_calls",
        }
    }
}

/// One line of `quarantine.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// The file the record came from.
    pub source_uri: String,
    /// Record index as in [`crate::ingest::RawRecord`]; `-1` when the whole file failed.
    pub record_index: i64,
    /// Byte offset of the record in the (decompressed) stream, when known.
    pub byte_offset: Option<u64>,
    /// Machine-readable reason.
    pub reason: QuarantineReason,
    /// Human-readable detail (parser message, field path).
    pub detail: String,
    /// At most [`SNIPPET_MAX_BYTES`] bytes of the record, lossily decoded as UTF-8.
    pub snippet: String,
}

impl QuarantineEntry {
    /// Builds an entry with a bounded, valid UTF-8 snippet and detail, still
    /// [`SCRUB_MARGIN_BYTES`] longer than the final bounds that [`QuarantineEntry::seal`] (or
    /// the writer) applies.
    pub fn new(
        source_uri: &str,
        record_index: i64,
        byte_offset: Option<u64>,
        reason: QuarantineReason,
        detail: impl Into<String>,
        raw: &[u8],
    ) -> Self {
        QuarantineEntry {
            source_uri: source_uri.to_string(),
            record_index,
            byte_offset,
            reason,
            detail: cap_detail(detail.into(), DETAIL_MAX_BYTES + SCRUB_MARGIN_BYTES),
            snippet: snippet_of(raw, SNIPPET_MAX_BYTES + SCRUB_MARGIN_BYTES),
        }
    }

    /// Applies `scrub` (PII) to the snippet and detail, then cuts them to their final bounds:
    /// scrubbing first means a cut never leaves a recognisable-to-humans fragment of an email
    /// or key that the patterns no longer match.
    pub fn seal(mut self, mut scrub: impl FnMut(&mut String)) -> Self {
        scrub(&mut self.snippet);
        scrub(&mut self.detail);
        self.snippet = cut_to_bytes(&self.snippet, SNIPPET_MAX_BYTES).to_string();
        self.detail = cap_detail(std::mem::take(&mut self.detail), DETAIL_MAX_BYTES);
        self
    }

    fn is_sealed(&self) -> bool {
        self.snippet.len() <= SNIPPET_MAX_BYTES && self.detail.len() <= DETAIL_MAX_BYTES
    }
}

/// Cuts a detail message to `max` bytes (on a char boundary), marking the cut.
fn cap_detail(detail: String, max: usize) -> String {
    if detail.len() <= max {
        return detail;
    }
    let mut out = cut_to_bytes(&detail, max - '…'.len_utf8()).to_string();
    out.push('…');
    out
}

/// Lossy-decodes at most [`SNIPPET_MAX_BYTES`] bytes of `raw` into valid UTF-8 of at most that
/// many bytes.
pub fn snippet(raw: &[u8]) -> String {
    snippet_of(raw, SNIPPET_MAX_BYTES)
}

fn snippet_of(raw: &[u8], max: usize) -> String {
    let head = &raw[..raw.len().min(max)];
    let s = String::from_utf8_lossy(head);
    cut_to_bytes(&s, max).to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn cut_to_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends quarantine entries to `quarantine.jsonl`, one JSON object per line.
pub struct QuarantineWriter {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
}

impl QuarantineWriter {
    /// Creates (truncates) the quarantine file.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, IngestError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| IngestError::io(&path, e))?;
        Ok(QuarantineWriter {
            path,
            out: BufWriter::new(file),
            written: 0,
        })
    }

    /// Writes one entry as a JSON line.
    pub fn write(&mut self, entry: &QuarantineEntry) -> Result<(), IngestError> {
        let sealed;
        let entry = if entry.is_sealed() {
            entry
        } else {
            sealed = entry.clone().seal(|_| {});
            &sealed
        };
        let line = serde_json::to_string(entry)
            .map_err(|e| IngestError::io(&self.path, std::io::Error::other(e)))?;
        self.out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .map_err(|e| IngestError::io(&self.path, e))?;
        self.written += 1;
        Ok(())
    }

    /// Number of entries written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes buffered lines to disk.
    pub fn flush(&mut self) -> Result<(), IngestError> {
        self.out.flush().map_err(|e| IngestError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_and_snippet_are_bounded_on_char_boundaries() {
        let huge = "é".repeat(100_000);
        let e = QuarantineEntry::new(
            "f",
            0,
            None,
            QuarantineReason::SchemaMismatch,
            format!("bad message {huge}"),
            huge.as_bytes(),
        )
        .seal(|_| {});
        assert!(e.detail.len() <= DETAIL_MAX_BYTES && e.detail.ends_with('…'));
        assert!(e.detail.starts_with("bad message é"));
        assert!(e.snippet.len() <= SNIPPET_MAX_BYTES);
        let short = QuarantineEntry::new("f", 0, None, QuarantineReason::SchemaMismatch, "ok", b"");
        assert_eq!(short.detail, "ok");
    }
}
