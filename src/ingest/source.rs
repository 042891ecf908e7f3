//! The record source the episode stream reads: every input file in order, through the input
//! predicate when there is one.
//!
//! The predicate is a trait object supplied from above ([`InputPredicate`], implemented by
//! `crate::sql` on DataFusion), so the readers do not depend on the SQL engine. Without one the
//! source is exactly the plain readers ([`super::open_file`]). With one, each file is opened once
//! and handed to the predicate, which may read it its own way (Parquet with pushdown) and yields
//! the same items in the file's order: records it keeps, [`SourceItem::Filtered`] counts for the
//! records it rejects, and quarantine entries for records it cannot be evaluated on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::input::{open_decompressed, Opened};
use super::{open_file, InputFile, QuarantineEntry, RawRecord, ReaderOptions, RecordResult};

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

/// The items of one file, in its order.
pub type SourceItems = Box<dyn Iterator<Item = SourceItem> + Send>;

/// What the input filter did, beyond the `records_filtered{where}` count: how much Parquet was
/// skipped without being decoded. Reported in `run_report.json` under `ingest.where_filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhereStats {
    /// The predicate as given.
    pub predicate: String,
    /// Row groups in the Parquet files read with the predicate.
    pub parquet_row_groups: u64,
    /// Row groups skipped because their statistics prove no row can match (never decoded).
    pub parquet_row_groups_pruned: u64,
    /// Rows in the pruned row groups (counted as read and as filtered `where`).
    pub parquet_rows_pruned: u64,
    /// Rows on which the predicate was evaluated (Parquet rows of kept row groups, JSON records).
    pub records_evaluated: u64,
}

/// The input predicate is invalid for these inputs (syntax, unknown column, not boolean, a type
/// error on one file), found before any record is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--where `{predicate}`: {message}")]
pub struct PredicateError {
    /// The predicate as given.
    pub predicate: String,
    /// What is wrong with it.
    pub message: String,
}

/// An input predicate as configured (`input.where`), not yet checked against the inputs.
pub trait InputPredicate: Send + Sync + std::fmt::Debug {
    /// The predicate as the user wrote it (counts and errors name it).
    fn text(&self) -> &str;

    /// Checks the predicate against every input and prepares it, before anything is read.
    fn bind(
        &self,
        files: &[InputFile],
        reader: &ReaderOptions,
    ) -> Result<Arc<dyn BoundPredicate>, PredicateError>;
}

/// An input predicate checked against the inputs: reads a file through the predicate.
pub trait BoundPredicate: Send + Sync {
    /// Reads `file` (already opened and decompressed) through the predicate, adding to `stats`.
    fn open(
        self: Arc<Self>,
        file: &InputFile,
        opened: Opened,
        reader: &ReaderOptions,
        stats: Arc<Mutex<WhereStats>>,
    ) -> SourceItems;
}

/// A streaming source over many files, in order, with an optional bound input predicate.
pub struct InputSource {
    files: VecDeque<InputFile>,
    current: Option<SourceItems>,
    opts: ReaderOptions,
    predicate: Option<Arc<dyn BoundPredicate>>,
    stats: Arc<Mutex<WhereStats>>,
}

impl InputSource {
    /// Reads `files` in order; `predicate` (if any, with its text) decides which records go on.
    pub fn new(
        files: Vec<InputFile>,
        opts: ReaderOptions,
        predicate: Option<(String, Arc<dyn BoundPredicate>)>,
    ) -> Self {
        let (text, predicate) = match predicate {
            Some((text, p)) => (text, Some(p)),
            None => (String::new(), None),
        };
        let stats = WhereStats {
            predicate: text,
            ..WhereStats::default()
        };
        InputSource {
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

    fn open(&self, file: &InputFile) -> SourceItems {
        let Some(pred) = &self.predicate else {
            return Box::new(open_file(file, &self.opts).map(SourceItem::from));
        };
        // Opened once: the same stream is sniffed and read (an object is downloaded once).
        match open_decompressed(&file.path) {
            Ok(opened) => pred
                .clone()
                .open(file, opened, &self.opts, self.stats.clone()),
            // `open_file` turns the failure into an `unreadable_file` entry.
            Err(_) => Box::new(open_file(file, &self.opts).map(SourceItem::from)),
        }
    }
}

impl Iterator for InputSource {
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
