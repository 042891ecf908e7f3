//! The SQL input predicate as the readers see it: [`SqlWhere`] implements the ingest layer's
//! [`InputPredicate`], and a compiled [`WherePredicate`] reads one file through the predicate.
//! Parquet files go through [`super::parquet_scan`] (pushdown) and JSON/JSONL files through the
//! plain readers followed by the predicate, evaluated over blocks of records. Items keep the
//! file's order; records the predicate rejects come out as [`SourceItem::Filtered`] counts, and
//! records it cannot be evaluated on as `where_error` quarantine entries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::filter::{Verdict, WherePredicate};
use super::{parquet_scan, SqlError};
use crate::ingest::input::Opened;
use crate::ingest::{
    open_opened, opened_kind, BoundPredicate, FileKind, FileRecords, InputFile, InputPredicate,
    PredicateError, QuarantineEntry, QuarantineReason, RawRecord, ReaderOptions, RecordResult,
    SourceItem, SourceItems, WhereStats,
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

/// An input predicate in SQL as configured (`input.where` / `run --where`): the
/// [`InputPredicate`] the readers take, compiled by DataFusion when the inputs are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlWhere(pub String);

impl SqlWhere {
    /// The predicate for an optional `where` setting, ready for `IngestOptions::predicate`.
    pub fn optional(sql: Option<&str>) -> Option<Arc<dyn InputPredicate>> {
        sql.map(|s| Arc::new(SqlWhere(s.to_string())) as Arc<dyn InputPredicate>)
    }
}

impl InputPredicate for SqlWhere {
    fn text(&self) -> &str {
        &self.0
    }

    fn bind(
        &self,
        files: &[InputFile],
        reader: &ReaderOptions,
    ) -> Result<Arc<dyn BoundPredicate>, PredicateError> {
        match WherePredicate::compile(&self.0, files, reader) {
            Ok(p) => Ok(Arc::new(p)),
            Err(SqlError::Predicate { predicate, message }) => {
                Err(PredicateError { predicate, message })
            }
            Err(e) => Err(PredicateError {
                predicate: self.0.clone(),
                message: e.to_string(),
            }),
        }
    }
}

impl BoundPredicate for WherePredicate {
    fn open(
        self: Arc<Self>,
        file: &InputFile,
        opened: Opened,
        reader: &ReaderOptions,
        stats: Arc<Mutex<WhereStats>>,
    ) -> SourceItems {
        if opened_kind(file, &opened) == FileKind::Parquet {
            return parquet_scan::open(
                file.path.display().to_string(),
                opened,
                reader,
                self,
                stats,
            );
        }
        Box::new(JsonFiltered {
            inner: open_opened(file, opened, reader),
            predicate: self,
            stats,
            out: VecDeque::new(),
            done: false,
        })
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
