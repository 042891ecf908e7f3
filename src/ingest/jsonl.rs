//! JSONL reader: one JSON value per line, read line by line with a byte cap per line.
//!
//! Outcomes per line: blank line → skipped (not a record, but it keeps its line number);
//! invalid UTF-8 → `invalid_utf8`; not JSON → `malformed_json`; a last line cut mid-value →
//! `truncated`; longer than `max_record_bytes` → `record_too_large` (never buffered whole);
//! an I/O or decompression error → `read_error` and the rest of the file is skipped.

use std::io::BufRead;

use super::quarantine::{QuarantineEntry, QuarantineReason};
use super::{RawRecord, ReaderOptions, RecordResult};

/// Streams records from a JSONL byte stream.
pub struct JsonlReader {
    uri: String,
    reader: Box<dyn BufRead + Send>,
    line_index: i64,
    offset: u64,
    done: bool,
    max_record_bytes: usize,
    buf: Vec<u8>,
}

impl JsonlReader {
    /// Wraps a (decompressed) stream; `uri` is recorded in provenance and quarantine entries.
    pub fn new(uri: String, reader: Box<dyn BufRead + Send>, opts: &ReaderOptions) -> Self {
        JsonlReader {
            uri,
            reader,
            line_index: 0,
            offset: 0,
            done: false,
            max_record_bytes: opts.max_record_bytes,
            buf: Vec::new(),
        }
    }

    /// Reads one line into `self.buf` (without the newline), keeping at most the cap.
    /// Returns (bytes consumed, overflowed, saw_newline).
    fn read_line(&mut self) -> std::io::Result<(usize, bool, bool)> {
        self.buf.clear();
        let mut consumed = 0usize;
        let mut overflow = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok((consumed, overflow, false));
            }
            let (take, found) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = if found { &chunk[..take - 1] } else { chunk };
            if !overflow {
                if self.buf.len() + content.len() > self.max_record_bytes {
                    overflow = true;
                    let room = self.max_record_bytes.saturating_sub(self.buf.len());
                    self.buf
                        .extend_from_slice(&content[..room.min(content.len())]);
                } else {
                    self.buf.extend_from_slice(content);
                }
            }
            self.reader.consume(take);
            consumed += take;
            if found {
                return Ok((consumed, overflow, true));
            }
        }
    }
}

impl Iterator for JsonlReader {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        while !self.done {
            let start = self.offset;
            let (consumed, overflow, newline) = match self.read_line() {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return Some(Err(QuarantineEntry::new(
                        &self.uri,
                        self.line_index,
                        Some(start),
                        QuarantineReason::ReadError,
                        format!("read failed, rest of file skipped: {e}"),
                        &self.buf,
                    )));
                }
            };
            if consumed == 0 {
                self.done = true;
                return None;
            }
            self.offset += consumed as u64;
            let index = self.line_index;
            self.line_index += 1;
            let mut line: &[u8] = &self.buf;
            if index == 0 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let q = |reason, detail: String, raw: &[u8]| {
                Some(Err(QuarantineEntry::new(
                    &self.uri,
                    index,
                    Some(start),
                    reason,
                    detail,
                    raw,
                )))
            };
            if overflow {
                return q(
                    QuarantineReason::RecordTooLarge,
                    format!(
                        "line is longer than max_record_bytes = {}",
                        self.max_record_bytes
                    ),
                    line,
                );
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let text = match std::str::from_utf8(line) {
                Ok(t) => t,
                Err(e) => {
                    return q(
                        QuarantineReason::InvalidUtf8,
                        format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
                        line,
                    )
                }
            };
            return match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => Some(Ok(RawRecord {
                    source_uri: self.uri.clone(),
                    record_index: index,
                    byte_offset: Some(start),
                    value,
                })),
                Err(e) if e.is_eof() && !newline => q(
                    QuarantineReason::Truncated,
                    format!("file ends inside a record: {e}"),
                    line,
                ),
                Err(e) => q(QuarantineReason::MalformedJson, e.to_string(), line),
            };
        }
        None
    }
}
