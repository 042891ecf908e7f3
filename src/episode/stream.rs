//! The ingest driver: inputs → records → episodes, with quarantine and reconciled counts.
//!
//! Files are read one after another in sorted order; the format is the override if given,
//! else detected per file from its first readable record (a record no format fits, before the
//! format is known, is quarantined `unknown_format`). Unit-test records are buffered per run of
//! consecutive records with the same `group` (or the same prompt) so a failed attempt can get a
//! passing peer; the buffer is capped by `max_group_records`, so memory stays flat.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::build::{EpisodeBuilder, RecordMeta, Rejection};
use super::config::EpisodeConfig;
use super::prefilter::{Prefilters, TokenCounter};
use super::stats::IngestStats;
use super::{Episode, SourceFormat};
use crate::ingest::formats::{self, Parsed, UnitTestRecord};
use crate::ingest::quarantine::{QuarantineEntry, QuarantineReason, QuarantineWriter};
use crate::ingest::IngestError;
use crate::ingest::{
    expand_inputs, InputPredicate, InputSource, RawRecord, ReaderOptions, SourceItem,
};

/// What to ingest and how.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Paths, directories or globs, read in this order (each expanded in sorted order).
    pub inputs: Vec<String>,
    /// Force a format for every file instead of detecting it.
    pub format: Option<SourceFormat>,
    /// Episode rules and prefilters.
    pub episode: EpisodeConfig,
    /// Reader limits.
    pub reader: ReaderOptions,
    /// Where to write `quarantine.jsonl`; `None` keeps entries in memory
    /// ([`EpisodeStream::quarantined`]), which suits tests and small runs.
    pub quarantine_path: Option<PathBuf>,
    /// Predicate over the records (`input.where`, in SQL: `crate::sql::SqlWhere`); records it
    /// does not select are counted as filtered `where`.
    pub predicate: Option<Arc<dyn InputPredicate>>,
}

/// Opens every input and returns the episode stream. Fails only on user errors (an input that
/// matches nothing, a bad template or config, an unwritable quarantine path).
pub fn ingest(opts: IngestOptions) -> Result<EpisodeStream, IngestError> {
    let files = expand_inputs(&opts.inputs)?;
    ingest_files(opts, files)
}

/// [`ingest`] over files the caller expanded from `opts.inputs` already: a sharded task reads
/// only its share of them (`pipeline::tasks`), and each file keeps the URI the full expansion
/// gives it, so provenance and chunk ids do not depend on the share.
pub fn ingest_files(
    opts: IngestOptions,
    files: Vec<crate::ingest::InputFile>,
) -> Result<EpisodeStream, IngestError> {
    // The predicate is checked against every input before anything is read.
    let predicate = match &opts.predicate {
        Some(p) => Some((p.text().to_string(), p.bind(&files, &opts.reader)?)),
        None => None,
    };
    let input_bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let file_count = files.len() as u64;
    let source = InputSource::new(files, opts.reader.clone(), predicate);
    let builder = EpisodeBuilder::new(opts.episode.clone())?;
    let filters = Prefilters::new(opts.episode.prefilter.clone())?;
    let writer = match &opts.quarantine_path {
        Some(p) => Some(QuarantineWriter::create(p)?),
        None => None,
    };
    let stats = IngestStats {
        files: file_count,
        ..IngestStats::default()
    };
    Ok(EpisodeStream {
        input_bytes,
        source,
        override_format: opts.format,
        builder,
        filters,
        writer,
        kept: Vec::new(),
        stats,
        ready: VecDeque::new(),
        current_uri: None,
        file_format: None,
        group: Vec::new(),
        group_key: None,
        max_group: opts.episode.max_group_records.max(1),
        error: None,
        done: false,
    })
}

/// A stream of episodes; iterate it, then call [`EpisodeStream::finish`] for the statistics.
pub struct EpisodeStream {
    source: InputSource,
    input_bytes: u64,
    override_format: Option<SourceFormat>,
    builder: EpisodeBuilder,
    filters: Prefilters,
    writer: Option<QuarantineWriter>,
    kept: Vec<QuarantineEntry>,
    stats: IngestStats,
    ready: VecDeque<Episode>,
    current_uri: Option<String>,
    file_format: Option<SourceFormat>,
    group: Vec<(RecordMeta, UnitTestRecord)>,
    group_key: Option<u64>,
    max_group: usize,
    error: Option<IngestError>,
    done: bool,
}

impl EpisodeStream {
    /// Counts so far (final after the iterator is exhausted).
    pub fn stats(&self) -> IngestStats {
        let mut s = self.stats.clone();
        s.pii_scrubbed = self.builder.pii_counts.clone();
        s.where_filter = self.source.where_stats();
        s
    }

    /// Total size of the input files on disk.
    pub fn input_bytes(&self) -> u64 {
        self.input_bytes
    }

    /// Quarantine entries kept in memory (only when no quarantine path was given).
    pub fn quarantined(&self) -> &[QuarantineEntry] {
        &self.kept
    }

    /// Plugs in the model's tokenizer for the token cap.
    pub fn set_token_counter(&mut self, counter: Box<dyn TokenCounter>) {
        self.filters.set_token_counter(counter);
    }

    /// Drains the stream (if not done), flushes the quarantine file and returns the statistics;
    /// returns the first quarantine write error if one occurred.
    pub fn finish(mut self) -> Result<IngestStats, IngestError> {
        for _ in self.by_ref() {}
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        Ok(self.stats())
    }

    fn quarantine(&mut self, entry: QuarantineEntry) {
        IngestStats::bump(&mut self.stats.records_quarantined, entry.reason.as_str());
        // No raw PII reaches disk, snippets included: scrubbed before they are cut.
        let entry = entry.seal(|text| self.builder.scrub(text));
        match self.writer.as_mut() {
            Some(w) => {
                if let Err(e) = w.write(&entry) {
                    if self.error.is_none() {
                        self.error = Some(e);
                    }
                }
            }
            None => self.kept.push(entry),
        }
    }

    fn outcome(&mut self, at: &RecordMeta, result: Result<Vec<Episode>, Rejection>) {
        match result {
            Err(Rejection::Filtered(r)) => {
                self.stats
                    .filtered(false, r.as_str(), &at.source_uri, at.record_index)
            }
            Err(Rejection::Quarantined(q)) => self.quarantine(q),
            Ok(eps) if eps.is_empty() => {
                self.stats
                    .filtered(false, "no_episode", &at.source_uri, at.record_index)
            }
            Ok(eps) => {
                self.stats.records_with_episodes += 1;
                for mut ep in eps {
                    self.stats.episodes_built += 1;
                    match self.filters.check(&mut ep) {
                        Ok(()) => {
                            self.stats.episodes_emitted += 1;
                            for f in &ep.flags {
                                IngestStats::bump(&mut self.stats.flags, f);
                            }
                            self.ready.push_back(ep);
                        }
                        Err(f) => self.stats.filtered(
                            true,
                            f.as_str(),
                            &ep.provenance.source_uri,
                            ep.provenance.source_record,
                        ),
                    }
                }
            }
        }
    }

    fn flush_group(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.group);
        self.group_key = None;
        for (at, res) in self.builder.build_unit_test_group(group) {
            self.outcome(&at, res);
        }
    }

    fn unit_test(&mut self, record: &RawRecord) {
        let parsed = match self.builder.parse(record, SourceFormat::UnitTest) {
            Ok(Parsed::UnitTest(u)) => u,
            Ok(_) => return,
            Err(r) => return self.outcome(&RecordMeta::of(record), Err(r)),
        };
        let key = match &parsed.group {
            Some(g) => xxh3_64(g.as_bytes()),
            None => {
                let text: String = parsed.prompt.iter().map(|m| &*m.content).collect();
                xxh3_64(text.as_bytes()) ^ 1
            }
        };
        if self.group_key != Some(key) || self.group.len() >= self.max_group {
            self.flush_group();
        }
        self.group_key = Some(key);
        self.group.push((RecordMeta::of(record), parsed));
    }

    fn record(&mut self, record: RawRecord) {
        if self.current_uri.as_deref() != Some(record.source_uri.as_str()) {
            self.flush_group();
            self.current_uri = Some(record.source_uri.clone());
            self.file_format = None;
        }
        let format = match self.override_format.or(self.file_format) {
            Some(f) => f,
            None => match formats::detect(&record.value) {
                Some(f) => {
                    self.file_format = Some(f);
                    f
                }
                None => {
                    let raw = serde_json::to_vec(&record.value).unwrap_or_default();
                    return self.quarantine(QuarantineEntry::new(
                        &record.source_uri,
                        record.record_index,
                        record.byte_offset,
                        QuarantineReason::UnknownFormat,
                        "no known format fits this record's keys (pass a format override?)",
                        &raw,
                    ));
                }
            },
        };
        if format == SourceFormat::UnitTest {
            return self.unit_test(&record);
        }
        let res = self.builder.build(&record, format);
        self.outcome(&RecordMeta::of(&record), res);
    }
}

impl Iterator for EpisodeStream {
    type Item = Episode;

    fn next(&mut self) -> Option<Episode> {
        loop {
            if let Some(ep) = self.ready.pop_front() {
                return Some(ep);
            }
            if self.done || self.error.is_some() {
                return None;
            }
            match self.source.next() {
                None => {
                    self.flush_group();
                    self.done = true;
                }
                Some(SourceItem::Filtered { records, .. }) => {
                    // Rejected by the input predicate: read, and filtered `where`.
                    self.stats.records_read += records;
                    *self
                        .stats
                        .records_filtered
                        .entry("where".to_string())
                        .or_insert(0) += records;
                }
                Some(item) => {
                    self.stats.records_read += 1;
                    match item {
                        SourceItem::Filtered { .. } => {}
                        SourceItem::Record(rec) => self.record(rec),
                        SourceItem::Quarantined(q) => {
                            if self.current_uri.as_deref() != Some(q.source_uri.as_str()) {
                                self.flush_group();
                                self.current_uri = Some(q.source_uri.clone());
                                self.file_format = None;
                            }
                            self.quarantine(q)
                        }
                    }
                }
            }
        }
    }
}
