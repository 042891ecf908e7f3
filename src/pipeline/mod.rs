//! The pipeline run: ingest → episodes → canonical tokens → scores → Parquet shards, as three
//! concurrent stages joined by bounded channels (backpressure: a slow scorer stalls the reader
//! instead of buffering the input in memory).
//!
//! Work is cut into chunks (consecutive episodes of one input file, `input.chunk_records` records
//! each). A chunk is committed (shards, then its id list, then its state record, through
//! [`DatasetWriter`]) as a unit, so a killed run resumes by re-reading the inputs (cheap, and it
//! rebuilds dedup state exactly) and skipping the scoring of committed chunks.
//!
//! Every run is a task ([`TaskSlice`]); a plain run is task 0 of 1 and ends with the same merge
//! and publish step as `finalize` ([`tasks`]): the manifest is built from the committed chunks
//! in a fixed order and written once, last, so it never lists a partial or duplicate shard.

pub mod compact;
pub mod drift;
pub mod idset;
mod open;
pub mod plan;
pub mod progress;
pub mod publish;
mod reader;
mod scorer;
pub mod state;
pub mod steps;
pub mod tasks;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::episode::{IngestOptions, IngestStats};
use crate::model::LoadedModel;
use crate::sink::dataset::DatasetWriter;
use crate::sink::{DatasetMeta, Manifest};
pub use compact::{compact, CompactOptions, CompactReport};
use open::{open_run, OpenRun};
use reader::{Chunking, InputFiles, ModelTokenCounter, ReaderMsg};
use scorer::{ScoredChunk, ScoringOutcome};
use state::{KlTotals, RunState};
pub use steps::{DropReason, StepCounts};
pub use tasks::{
    finalize, finalize_if_last, FinalizeReport, InputShare, LastTask, TaskMarker, TaskSlice,
};

/// Errors that stop a run (bad records never do: they are quarantined or filtered).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Model(#[from] crate::error::Error),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Tasks(String),
    /// Finalize cannot run yet: some tasks of the sharded run have not finished.
    #[error("{0}")]
    NotReady(String),
    /// The `--where` predicate does not compile against the inputs.
    #[error("{0}")]
    Predicate(String),
    /// A `--min-rows` / `--max-quarantine-fraction` guard failed: the run finished, but its
    /// result is not what a healthy night looks like.
    #[error("{0}")]
    Guard(String),
    /// The audit before publishing failed (contract violations in the new shards, or drift
    /// against the previous night): the previous manifest is kept.
    #[error("{}", .0.message)]
    AuditFailed(Box<publish::AuditFailure>),
    #[error("pipeline stage failed: {0}")]
    Stage(String),
}

/// How a run is driven (not part of the dataset's identity).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw progress bars (only on a terminal).
    pub progress: bool,
    /// Stop after committing this many chunks (for tests of resume; `None` = run to the end).
    pub max_chunks: Option<usize>,
    /// Process only this task's slice of the chunks (`--task-index I --num-tasks N`).
    pub task: Option<TaskSlice>,
    /// Where the model runs.
    pub device: crate::model::device::DeviceSpec,
    /// Write Prometheus metrics here after every chunk and at the end (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
}

/// One low-relevance row that was dropped, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedExample {
    pub sample_id: String,
    pub source_uri: String,
    pub source_record: i64,
    pub relevance: f32,
    pub privileged_context: String,
}

/// What a run did; written to `run_report.json` and summarised on stderr.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub output_dir: PathBuf,
    pub config_sha256: String,
    pub ingest: IngestStats,
    pub chunks_seen: u64,
    pub chunks_already_committed: u64,
    pub chunks_committed: u64,
    /// The part of the input this run read (all of it in a single-task run).
    #[serde(default)]
    pub input: InputShare,
    pub orphans_removed: u64,
    /// What the scoring steps did with the episodes of chunks processed in this run.
    pub counts: StepCounts,
    pub shards_written: u64,
    pub seconds: f64,
    pub episodes_per_second: f64,
    pub low_relevance_examples: Vec<DroppedExample>,
    /// True when the run stopped early (`max_chunks`).
    pub stopped_early: bool,
    /// What the audit before the publish found (`None` for a task of a sharded run, which
    /// does not publish, and for a run stopped early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<publish::AuditSummary>,
}

impl RunReport {
    /// A short human summary.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "records read {}, quarantined {}, episodes built {}; chunks: {} seen, {} already done, {} committed; \
             episodes scored {}, rows written {}, dropped for low relevance {}; {:.1}s ({:.2} episodes/s)\n\
             dataset: {}",
            self.ingest.records_read,
            self.ingest.records_quarantined.values().sum::<u64>(),
            self.ingest.episodes_built,
            self.chunks_seen,
            self.chunks_already_committed,
            self.chunks_committed,
            c.episodes_scored,
            c.rows_written,
            c.dropped(DropReason::LowRelevance),
            self.seconds,
            self.episodes_per_second,
            self.output_dir.display()
        )
    }
}

/// Runs a pipeline end to end. Safe to rerun: finished chunks are skipped; a second run on the
/// same directory at the same time is refused.
///
/// Every run is a task of a sharded run: a plain run is task 0 of 1, and it finalizes itself
/// (the same merge and publish as `hindsight finalize`), so the manifest and dedup logic exist
/// once. A task of N > 1 ends with its completion marker instead.
///
/// Three steps: [`open_run`] (lock, model, binding, resume state), [`run_stages`] (the reader,
/// scorer and writer threads over this task's share of the input), [`finish`] (publish, or the
/// task's completion marker).
pub fn run(cfg: &PipelineConfig, opts: &RunOptions) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let task = opts.task.unwrap_or(TaskSlice::SINGLE);
    let OpenRun {
        mirror,
        _lock,
        model,
        meta,
        state,
        dataset,
        orphans_removed,
        committed,
        mut seen_ids,
    } = open_run(cfg, opts, task)?;
    // The task's share of the input files; progress is measured in its bytes.
    let inputs = InputFiles::expand(&cfg.input.paths)?;
    let share = inputs.share(task);
    let quarantine_path = mirror.local().join(task.quarantine_rel());
    let stages = Stages {
        cfg,
        opts,
        task,
        model: &model,
        dataset: &dataset,
        inputs: &inputs,
        share: &share,
        quarantine_path: &quarantine_path,
    };
    let done = stages.run(state, &committed, &mut seen_ids)?;
    drop(seen_ids);

    let seconds = started.elapsed().as_secs_f64();
    let scoring = done.scoring;
    let episodes_per_second = scoring.counts.episodes_scored as f64 / seconds.max(1e-9);
    let report = RunReport {
        output_dir: PathBuf::from(mirror.label()),
        config_sha256: meta.pipeline_config_sha256.clone(),
        ingest: done.ingest,
        chunks_seen: scoring.chunks_seen,
        chunks_already_committed: scoring.chunks_skipped,
        chunks_committed: scoring.chunks_sent,
        input: share,
        orphans_removed,
        counts: scoring.counts,
        shards_written: done.shards_written,
        seconds,
        episodes_per_second,
        low_relevance_examples: scoring.examples,
        stopped_early: scoring.stopped_early,
        audit: None,
    };
    let marker = TaskMarker {
        task_index: task.index,
        num_tasks: task.count,
        inputs_sha256: inputs.sha256.clone(),
        config_sha256: report.config_sha256.clone(),
        dataset: meta.clone(),
        chunks: scoring.owned,
        report,
        guards: cfg.guards.clone(),
    };
    let report = finish(cfg, &dataset, done.state, marker, &quarantine_path)?;
    done.progress.finish(&report);
    Ok(report)
}

/// The three concurrent stages of a run, joined by bounded channels (a slow scorer stalls the
/// reader instead of buffering the input in memory).
struct Stages<'a> {
    cfg: &'a PipelineConfig,
    opts: &'a RunOptions,
    task: TaskSlice,
    model: &'a LoadedModel,
    dataset: &'a DatasetWriter,
    inputs: &'a InputFiles,
    share: &'a InputShare,
    quarantine_path: &'a Path,
}

/// What the stages did, once every thread has joined.
struct StagesDone {
    scoring: ScoringOutcome,
    ingest: IngestStats,
    state: RunState,
    shards_written: u64,
    progress: progress::RunProgress,
}

impl Stages<'_> {
    /// Reader thread → scoring on this thread (it owns the model and the compute threads) →
    /// writer thread (shards, ids, chunk state, in that order).
    fn run(
        &self,
        state: RunState,
        committed: &HashSet<String>,
        seen_ids: &mut idset::IdSet,
    ) -> Result<StagesDone, PipelineError> {
        let cfg = self.cfg;
        let bytes_total = self.share.bytes;
        let progress = progress::RunProgress::new(bytes_total, self.opts.metrics_file.clone());

        let (chunk_tx, chunk_rx) = sync_channel::<ReaderMsg>(2);
        let ingest_opts = IngestOptions {
            inputs: cfg.input.paths.clone(),
            format: cfg.format()?,
            episode: cfg.episode.clone(),
            reader: cfg.input.reader_options(),
            quarantine_path: Some(self.quarantine_path.to_path_buf()),
            predicate: crate::sql::SqlWhere::optional(cfg.input.r#where.as_deref()),
        };
        let counter = ModelTokenCounter(self.model.tokenizer.text_encoder());
        let share_files = self.inputs.files[self.share.first_file..self.share.end_file].to_vec();
        let chunking = Chunking {
            records: cfg.input.chunk_records as u64,
            position: self.inputs.position.clone(),
            identity: self.inputs.identity.clone(),
        };
        let reader = std::thread::Builder::new()
            .name("hindsight-reader".into())
            .spawn(move || {
                reader::read_chunks(ingest_opts, share_files, counter, chunking, chunk_tx)
            })
            .map_err(|e| PipelineError::Stage(format!("spawning reader: {e}")))?;

        let (write_tx, write_rx) = sync_channel::<ScoredChunk>(1);
        let chunk_writer = self.dataset.clone();
        let task = self.task;
        let writer = std::thread::Builder::new()
            .name("hindsight-writer".into())
            .spawn(move || writer::write_chunks(&chunk_writer, state, write_rx, task, progress))
            .map_err(|e| PipelineError::Stage(format!("spawning writer: {e}")))?;

        let scored = scorer::score_chunks(
            cfg,
            self.model,
            chunk_rx,
            write_tx,
            committed,
            seen_ids,
            self.opts,
            bytes_total,
        );
        let writer_result = writer
            .join()
            .map_err(|_| PipelineError::Stage("writer thread panicked".into()))?;
        let reader_result = reader
            .join()
            .map_err(|_| PipelineError::Stage("reader thread panicked".into()))?;
        let scoring = scored?;
        if !scoring.counts.reconciles() {
            // A bug, not bad input: every episode in must be written or dropped for a reason.
            tracing::error!(counts = ?scoring.counts, "scoring counts do not reconcile");
        }
        let (state, shards_written, progress) = writer_result?;
        let ingest = match reader_result {
            Ok(s) => s,
            // A run stopped early (max_chunks) closes the channel on purpose; report what was
            // read.
            Err(e) if scoring.stopped_early => {
                tracing::debug!("reader stopped early: {e}");
                IngestStats::default()
            }
            Err(e) => return Err(e.into()),
        };
        Ok(StagesDone {
            scoring,
            ingest,
            state,
            shards_written,
            progress,
        })
    }
}

/// The end of a run: a plain run merges and publishes (audit first), a task of a sharded run
/// writes its completion marker, a run stopped early leaves a partial report.
fn finish(
    cfg: &PipelineConfig,
    dataset: &DatasetWriter,
    mut state: RunState,
    marker: TaskMarker,
    quarantine_path: &Path,
) -> Result<RunReport, PipelineError> {
    let single = marker.num_tasks == 1;
    let mut report = marker.report.clone();
    if report.stopped_early {
        if single {
            dataset.write_partial_report(&report_json(&report)?)?;
        }
        return Ok(report);
    }
    if single {
        // The run is its own last task: merge and publish now, under the exclusive lock.
        tasks::merge(dataset, &mut state, std::slice::from_ref(&marker))?;
        let manifest = build_manifest(&marker.dataset, &state, Some(&report.ingest));
        let audit = publish::audit_then_publish(
            dataset,
            Some(quarantine_path),
            manifest,
            &cfg.guards,
            |audit| {
                let mut r = report.clone();
                r.audit = Some(audit.clone());
                report_json(&r)
            },
        )?;
        report.audit = Some(audit);
    } else {
        // The completion marker goes last: finalize trusts every chunk it lists.
        let task =
            TaskSlice::new(marker.task_index, marker.num_tasks).map_err(PipelineError::Tasks)?;
        dataset.upload_state(&task.quarantine_rel())?;
        tasks::write_marker(dataset, &marker)?;
    }
    Ok(report)
}

/// The run report as written to `run_report.json`.
fn report_json(report: &RunReport) -> Result<Vec<u8>, PipelineError> {
    serde_json::to_vec_pretty(report).map_err(|e| PipelineError::Stage(e.to_string()))
}

/// The manifest of everything committed so far, in a fixed order, with additive statistics from
/// the committed chunks and (at the end of a run) the run's ingest statistics.
fn build_manifest(meta: &DatasetMeta, state: &RunState, ingest: Option<&IngestStats>) -> Manifest {
    let mut shards = Vec::new();
    let mut totals = StepCounts::default();
    let mut kl = KlTotals::default();
    let mut dropped: Vec<f32> = Vec::new();
    let mut relevance = drift::RelevanceHistogram::default();
    for c in state.committed() {
        kl.add(&c.kl);
        relevance.merge(&c.relevance);
        dropped.extend(&c.dropped_relevance);
        shards.extend(c.shards.iter().cloned());
        totals.add(&c.counts);
    }
    let stats = serde_json::json!({
        "chunks": state.committed().len(),
        "episodes": totals,
        "ingest_last_run": ingest,
        "kl": kl,
        "dropped_relevance": crate::sink::DroppedRelevance::of(dropped),
        "relevance_histogram": relevance,
    });
    Manifest::new(meta.clone(), shards, stats)
}
