//! Streaming reader for `.json` files: one big JSON array (real dumps are), or concatenated JSON
//! values (a single pretty-printed object, or NDJSON named `.json`).
//!
//! A small byte scanner finds each element's boundaries (tracking strings, escapes and nesting)
//! and only that element is parsed, so memory is bounded by the largest record, not the file.
//! Outcomes: each complete element → a record (or `malformed_json` / `invalid_utf8` /
//! `record_too_large` for that element alone); a file cut mid-element → every complete element,
//! then one `truncated` entry for the tail; an array that is never closed → one `truncated` entry;
//! garbage between elements → one `malformed_json` entry and the rest of the file is skipped.

use std::io::BufRead;

use super::quarantine::{QuarantineEntry, QuarantineReason};
use super::{RawRecord, ReaderOptions, RecordResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    InArray { first: bool },
    AfterArray,
    Concat,
    Done,
}

enum Scan {
    Complete,
    Eof,
}

/// Streams the elements of a JSON array (or concatenated values) as records.
pub struct JsonArrayReader {
    uri: String,
    reader: Box<dyn BufRead + Send>,
    offset: u64,
    index: i64,
    state: State,
    max_record_bytes: usize,
    buf: Vec<u8>,
    overflow: bool,
}

impl JsonArrayReader {
    /// Wraps a (decompressed) stream.
    pub fn new(uri: String, reader: Box<dyn BufRead + Send>, opts: &ReaderOptions) -> Self {
        JsonArrayReader {
            uri,
            reader,
            offset: 0,
            index: 0,
            state: State::Start,
            max_record_bytes: opts.max_record_bytes,
            buf: Vec::new(),
            overflow: false,
        }
    }

    /// Skips whitespace (and a leading BOM) and peeks the next byte without consuming it.
    fn peek_non_ws(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(None);
            }
            let mut skip = 0;
            if self.offset == 0 && chunk.starts_with(b"\xEF\xBB\xBF") {
                skip = 3;
            }
            while skip < chunk.len() && chunk[skip].is_ascii_whitespace() {
                skip += 1;
            }
            if skip < chunk.len() {
                let b = chunk[skip];
                self.reader.consume(skip);
                self.offset += skip as u64;
                return Ok(Some(b));
            }
            let n = chunk.len();
            self.reader.consume(n);
            self.offset += n as u64;
        }
    }

    fn consume_one(&mut self) {
        self.reader.consume(1);
        self.offset += 1;
    }

    /// Reads one JSON value starting at the current (non-whitespace) byte into `self.buf`.
    fn scan_value(&mut self) -> std::io::Result<Scan> {
        self.buf.clear();
        self.overflow = false;
        let mut depth: usize = 0;
        let mut in_string = false;
        let mut escape = false;
        let mut started = false;
        let mut scalar = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                // A bare scalar may end at EOF; anything else is cut off.
                return Ok(if scalar && !in_string {
                    Scan::Complete
                } else {
                    Scan::Eof
                });
            }
            let mut end: Option<usize> = None;
            for (i, &b) in chunk.iter().enumerate() {
                if !started {
                    started = true;
                    match b {
                        b'"' => {
                            in_string = true;
                            continue;
                        }
                        b'{' | b'[' => {
                            depth = 1;
                            continue;
                        }
                        b'}' | b']' | b',' => {
                            // A stray closer: a one-byte garbage element, so we always advance.
                            end = Some(i + 1);
                            break;
                        }
                        _ => scalar = true,
                    }
                }
                if in_string {
                    if escape {
                        escape = false;
                    } else if b == b'\\' {
                        escape = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' if !scalar => depth += 1,
                    b'}' | b']' | b',' if scalar => {
                        end = Some(i);
                        break;
                    }
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    b if scalar && b.is_ascii_whitespace() => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let take = end.unwrap_or(chunk.len());
            if !self.overflow {
                if self.buf.len() + take > self.max_record_bytes {
                    self.overflow = true;
                    let room = self.max_record_bytes.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&chunk[..room.min(take)]);
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.reader.consume(take);
            self.offset += take as u64;
            if end.is_some() {
                return Ok(Scan::Complete);
            }
        }
    }

    fn quarantine(
        &self,
        index: i64,
        offset: u64,
        reason: QuarantineReason,
        detail: String,
    ) -> RecordResult {
        Err(QuarantineEntry::new(
            &self.uri,
            index,
            Some(offset),
            reason,
            detail,
            &self.buf,
        ))
    }

    fn read_error(&mut self, e: std::io::Error) -> Option<RecordResult> {
        self.state = State::Done;
        Some(self.quarantine(
            self.index,
            self.offset,
            QuarantineReason::ReadError,
            format!("read failed, rest of file skipped: {e}"),
        ))
    }

    /// Scans and parses one element at the current position.
    fn element(&mut self) -> Option<RecordResult> {
        let start = self.offset;
        let index = self.index;
        self.index += 1;
        match self.scan_value() {
            Err(e) => self.read_error(e),
            Ok(Scan::Eof) => {
                self.state = State::Done;
                Some(self.quarantine(
                    index,
                    start,
                    QuarantineReason::Truncated,
                    format!(
                        "file ends inside a record ({} bytes of it read)",
                        self.buf.len()
                    ),
                ))
            }
            Ok(Scan::Complete) => {
                if self.overflow {
                    return Some(self.quarantine(
                        index,
                        start,
                        QuarantineReason::RecordTooLarge,
                        format!(
                            "record is longer than max_record_bytes = {}",
                            self.max_record_bytes
                        ),
                    ));
                }
                let text = match std::str::from_utf8(&self.buf) {
                    Ok(t) => t,
                    Err(e) => {
                        let detail =
                            format!("invalid UTF-8 at byte {} of the record", e.valid_up_to());
                        return Some(self.quarantine(
                            index,
                            start,
                            QuarantineReason::InvalidUtf8,
                            detail,
                        ));
                    }
                };
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(value) => Some(Ok(RawRecord {
                        source_uri: self.uri.clone(),
                        record_index: index,
                        byte_offset: Some(start),
                        value,
                    })),
                    Err(e) => Some(self.quarantine(
                        index,
                        start,
                        QuarantineReason::MalformedJson,
                        e.to_string(),
                    )),
                }
            }
        }
    }

    fn garbage(&mut self, what: &str) -> Option<RecordResult> {
        self.state = State::Done;
        let offset = self.offset;
        // Keep a bounded look at what was there.
        self.buf.clear();
        if let Ok(chunk) = self.reader.fill_buf() {
            self.buf.extend_from_slice(&chunk[..chunk.len().min(512)]);
        }
        Some(self.quarantine(
            self.index,
            offset,
            QuarantineReason::MalformedJson,
            format!("{what}; rest of file skipped"),
        ))
    }
}

impl Iterator for JsonArrayReader {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        loop {
            match self.state {
                State::Done => return None,
                State::Start => match self.peek_non_ws() {
                    Err(e) => return self.read_error(e),
                    Ok(None) => {
                        self.state = State::Done;
                        return None;
                    }
                    Ok(Some(b'[')) => {
                        self.consume_one();
                        self.state = State::InArray { first: true };
                    }
                    Ok(Some(_)) => self.state = State::Concat,
                },
                State::Concat => match self.peek_non_ws() {
                    Err(e) => return self.read_error(e),
                    Ok(None) => {
                        self.state = State::Done;
                        return None;
                    }
                    Ok(Some(_)) => return self.element(),
                },
                State::AfterArray => match self.peek_non_ws() {
                    Err(e) => return self.read_error(e),
                    Ok(None) => {
                        self.state = State::Done;
                        return None;
                    }
                    Ok(Some(_)) => return self.garbage("data after the closing ']'"),
                },
                State::InArray { first } => {
                    let mut c = match self.peek_non_ws() {
                        Err(e) => return self.read_error(e),
                        Ok(c) => c,
                    };
                    if !first {
                        match c {
                            Some(b',') => {
                                self.consume_one();
                                c = match self.peek_non_ws() {
                                    Err(e) => return self.read_error(e),
                                    Ok(c) => c,
                                };
                            }
                            Some(b']') => {}
                            Some(_) => return self.garbage("expected ',' or ']' between elements"),
                            None => {}
                        }
                    }
                    match c {
                        None => {
                            self.state = State::Done;
                            self.buf.clear();
                            return Some(self.quarantine(
                                self.index,
                                self.offset,
                                QuarantineReason::Truncated,
                                "file ends before the array's closing ']'".into(),
                            ));
                        }
                        Some(b']') => {
                            self.consume_one();
                            self.state = State::AfterArray;
                        }
                        Some(_) => {
                            self.state = State::InArray { first: false };
                            return self.element();
                        }
                    }
                }
            }
        }
    }
}
