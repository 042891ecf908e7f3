//! The record source the episode stream reads: every input file in order, through the input
//! predicate when there is one.
//!
//! Without a predicate it is exactly the plain readers ([`crate::ingest::open_file`]). With one,
//! Parquet files go through [`super::parquet_scan`] (pushdown) and JSON/JSONL files through the
//! plain readers followed by the predicate, evaluated over blocks of records. Items keep the
//! file's order; records the predicate rejects come out as [`SourceItem::Filtered`] counts, and
//! records it cannot be evaluated on as `where_error` quarantine entries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::filter::{Verdict, WherePredicate, WhereStats};
use super::parquet_scan;
use crate::ingest::input::open_decompressed;
use crate::ingest::{
    open_file, open_opened, opened_kind, FileKind, FileRecords, InputFile, QuarantineEntry,
    QuarantineReason, RawRecord, ReaderOptions, RecordResult,
};

/// Records evaluated together in one Arrow batch (JSON inputs), at most...
const JSON_BLOCK: usize = 256;
/// ...and at most about this many bytes of record text, so a block of big records (64 MiB
/// each is allowed) is not held 256 at a time: a block ends after the record that crosses it.
const JSON_BLOCK_BYTES: usize = 32 << 20;

/// Roughly how many bytes a JSON value holds (string and key lengths plus a few per value).
fn approx_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(approx_bytes).fold(2, usize::saturating_add),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| k.len().saturating_add(3).saturating_add(approx_bytes(v)))
            .fold(2, usize::saturating_add),
        _ => 8,
    }
}

/// One thing a source yields.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// A record to build episodes from.
    Record(RawRecord),
    /// A record that could not be read (or the predicate could not be evaluated on).
    Quarantined(QuarantineEntry),
    /// Records rejected by the input predicate (read, and filtered `where`).
    Filtered {
        /// The file they are in.
        source_uri: String,
        /// How many consecutive records.
        records: u64,
    },
}

impl From<RecordResult> for SourceItem {
    fn from(r: RecordResult) -> Self {
        match r {
            Ok(rec) => SourceItem::Record(rec),
            Err(q) => SourceItem::Quarantined(q),
        }
    }
}

type Items = Box<dyn Iterator<Item = SourceItem> + Send>;

/// A streaming source over many files, in order, with an optional input predicate.
pub struct FilteredSource {
    files: VecDeque<InputFile>,
    current: Option<Items>,
    opts: ReaderOptions,
    predicate: Option<Arc<WherePredicate>>,
    stats: Arc<Mutex<WhereStats>>,
}

impl FilteredSource {
    /// Reads `files` in order; `predicate` (if any) decides which records go on.
    pub fn new(
        files: Vec<InputFile>,
        opts: ReaderOptions,
        predicate: Option<Arc<WherePredicate>>,
    ) -> Self {
        let stats = WhereStats {
            predicate: predicate
                .as_ref()
                .map(|p| p.sql().to_string())
                .unwrap_or_default(),
            ..WhereStats::default()
        };
        FilteredSource {
            files: files.into(),
            current: None,
            opts,
            predicate,
            stats: Arc::new(Mutex::new(stats)),
        }
    }

    /// What the predicate did so far (`None` without one).
    pub fn where_stats(&self) -> Option<WhereStats> {
        self.predicate.as_ref()?;
        self.stats.lock().ok().map(|s| s.clone())
    }

    fn open(&self, file: &InputFile) -> Items {
        let Some(pred) = &self.predicate else {
            return Box::new(open_file(file, &self.opts).map(SourceItem::from));
        };
        // Opened once: the same stream is sniffed and read (an object is downloaded once).
        let opened = match open_decompressed(&file.path) {
            Ok(o) => o,
            // `open_file` turns the failure into an `unreadable_file` entry.
            Err(_) => return Box::new(open_file(file, &self.opts).map(SourceItem::from)),
        };
        if opened_kind(file, &opened) == FileKind::Parquet {
            return parquet_scan::open(
                file.path.display().to_string(),
                opened,
                &self.opts,
                pred.clone(),
                self.stats.clone(),
            );
        }
        Box::new(JsonFiltered {
            inner: open_opened(file, opened, &self.opts),
            predicate: pred.clone(),
            stats: self.stats.clone(),
            out: VecDeque::new(),
            done: false,
        })
    }
}

impl Iterator for FilteredSource {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        loop {
            if let Some(cur) = self.current.as_mut() {
                if let Some(item) = cur.next() {
                    return Some(item);
                }
                self.current = None;
            }
            let file = self.files.pop_front()?;
            self.current = Some(self.open(&file));
        }
    }
}

/// A JSON/JSONL reader followed by the predicate, a block of records at a time.
struct JsonFiltered {
    inner: FileRecords,
    predicate: Arc<WherePredicate>,
    stats: Arc<Mutex<WhereStats>>,
    out: VecDeque<SourceItem>,
    done: bool,
}

impl JsonFiltered {
    fn refill(&mut self) {
        let mut block: Vec<RecordResult> = Vec::with_capacity(JSON_BLOCK);
        let mut bytes = 0usize;
        while block.len() < JSON_BLOCK && bytes < JSON_BLOCK_BYTES {
            match self.inner.next() {
                Some(item) => {
                    if let Ok(rec) = &item {
                        bytes = bytes.saturating_add(approx_bytes(&rec.value));
                    }
                    block.push(item);
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        let records: Vec<&RawRecord> = block.iter().filter_map(|r| r.as_ref().ok()).collect();
        if let Ok(mut s) = self.stats.lock() {
            s.records_evaluated += records.len() as u64;
        }
        let mut verdicts = self.predicate.eval_records(&records).into_iter();
        for item in block {
            let rec = match item {
                Ok(rec) => rec,
                Err(q) => {
                    self.out.push_back(SourceItem::Quarantined(q));
                    continue;
                }
            };
            match verdicts.next().unwrap_or(Verdict::Reject) {
                Verdict::Keep => self.out.push_back(SourceItem::Record(rec)),
                Verdict::Reject => match self.out.back_mut() {
                    Some(SourceItem::Filtered { records, .. }) => *records += 1,
                    _ => self.out.push_back(SourceItem::Filtered {
                        source_uri: rec.source_uri,
                        records: 1,
                    }),
                },
                Verdict::Error(detail) => {
                    let raw = serde_json::to_vec(&rec.value).unwrap_or_default();
                    self.out
                        .push_back(SourceItem::Quarantined(QuarantineEntry::new(
                            &rec.source_uri,
                            rec.record_index,
                            rec.byte_offset,
                            QuarantineReason::WhereError,
                            detail,
                            &raw,
                        )));
                }
            }
        }
    }
}

impl Iterator for JsonFiltered {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            self.refill();
        }
    }
}
