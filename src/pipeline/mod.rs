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
pub mod plan;
pub mod progress;
pub mod publish;
pub mod state;
pub mod steps;
pub mod tasks;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::PipelineConfig;
use crate::episode::{self, Episode, IngestOptions, IngestStats};
use crate::model::{self, LoadedModel};
use crate::sink::dataset::DatasetWriter;
use crate::sink::{DatasetMeta, Manifest, OutputRow, ShardConfig};
use crate::store::Mirror;
use crate::util::sha256_hex;
pub use compact::{compact, CompactOptions, CompactReport};
use state::{ChunkState, DatasetBinding, KlTotals, RunLock, RunState, TaskTag};
use steps::{ChunkOutput, ScoringSteps};
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

/// A batch of episodes from one input chunk, as the reader hands it to the scorer.
struct Chunk {
    id: String,
    source_uri: String,
    /// The input's identity when it was read (size + mtime, or ETag): `plan` tells current
    /// chunks from those of an earlier content with it.
    source_identity: String,
    index: u64,
    /// Position among all chunks of the input, in reading order (sharded tasks split on it).
    ordinal: u64,
    episodes: Vec<Episode>,
}

enum ReaderMsg {
    Chunk(Chunk),
    /// The input is exhausted (statistics come back through the thread's result).
    Done,
}

/// A scored chunk on its way to the writer.
struct ScoredChunk {
    id: String,
    source_uri: String,
    source_identity: String,
    index: u64,
    ordinal: u64,
    rows: Vec<OutputRow>,
    counts: StepCounts,
    kl: KlTotals,
    /// `relevance` of the rows dropped under the threshold (the report's histogram).
    dropped_relevance: Vec<f32>,
    /// `relevance` of every scored row (the drift guards' distribution).
    relevance: drift::RelevanceHistogram,
}

/// Token counter for the length prefilter, backed by the model's real tokenizer.
struct ModelTokenCounter(crate::tokenize::TextEncoder);

impl episode::TokenCounter for ModelTokenCounter {
    fn count(&self, text: &str) -> usize {
        self.0.count(text)
    }
}

/// Runs a pipeline end to end. Safe to rerun: finished chunks are skipped; a second run on the
/// same directory at the same time is refused.
///
/// Every run is a task of a sharded run: a plain run is task 0 of 1, and it finalizes itself
/// (the same merge and publish as `hindsight finalize`), so the manifest and dedup logic exist
/// once. A task of N > 1 ends with its completion marker instead.
pub fn run(cfg: &PipelineConfig, opts: &RunOptions) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let mirror = std::sync::Arc::new(Mirror::open(&cfg.output.dir.to_string_lossy())?);
    let out_dir = mirror.local().to_path_buf();
    let task = opts.task.unwrap_or(TaskSlice::SINGLE);
    let single = task.is_single();
    let _lock = if single {
        RunLock::acquire(&out_dir)?
    } else {
        RunLock::acquire_task(&out_dir, &task.lock_name())?
    };
    mirror.pull_tree("_state")?;
    let model_path = model::resolve_model_path(cfg.model.path.as_deref())?;
    tracing::info!(model = %model_path.display(), device = %opts.device, "loading model");
    let mut m = model::load(&model_path, cfg.model.compute, &opts.device.open()?)?;
    cfg.model.configure(&mut m)?;
    let identity =
        state::choose_identity(&out_dir, cfg.identity_json(), cfg.legacy_identity_json())?;
    let meta = DatasetMeta::new(
        &m.info,
        cfg.score.top_k,
        cfg.score.relevance,
        Some(f64::from(cfg.score.threshold())),
        &identity,
    )
    .with_layout(cfg.score.student_top_k, cfg.contract.encoding);
    let config_sha256 = meta.pipeline_config_sha256.clone();
    let binding = DatasetBinding {
        config_sha256: config_sha256.clone(),
        weights_sha256: m.info.weights_sha256.clone(),
        tokenizer_sha256: m.info.tokenizer_sha256.clone(),
        contract_sha256: crate::sink::schema::contract_sha256(),
        config: Some(meta.pipeline_config.clone()),
    };
    let state = if single {
        RunState::open(&out_dir, &binding)?
    } else {
        RunState::open_shared(&out_dir, &binding)?
    };
    let shard_cfg = ShardConfig {
        max_rows: cfg.output.shard_max_rows,
        max_bytes: cfg.output.shard_max_bytes,
        ..ShardConfig::default()
    };
    let dataset = DatasetWriter::new(mirror.clone(), meta.clone(), shard_cfg);
    dataset.upload_state(state::BINDING_REL)?;
    let orphans_removed = if single {
        tasks::refuse_other_sharded_runs(&state, &mirror.label())?;
        let listed = state
            .committed()
            .iter()
            .flat_map(|c| c.shards.iter().map(|s| s.file.clone()))
            .collect();
        (state.clean_orphans()? + mirror.clean_remote_orphans(&listed)?) as u64
    } else {
        // Other tasks may be writing shards right now; finalize cleans up instead.
        0
    };
    if orphans_removed > 0 {
        tracing::warn!(
            files = orphans_removed,
            "removed leftovers of an interrupted run"
        );
    }
    let committed: HashSet<String> = state
        .committed()
        .iter()
        .map(|c| c.chunk_id.clone())
        .collect();
    // A task dedups against merged chunks and its own, never against other tasks' unmerged
    // chunks (which of two copies wins depends on input order; finalize decides).
    let idset_name = if single {
        "run".to_string()
    } else {
        format!("task-{}-of-{}", task.index, task.count)
    };
    let mut seen_ids = idset::IdSet::open(&out_dir, &idset_name, &state, |c| match c.task {
        None => true,
        Some(tag) => task.owns_tag(&tag),
    })?;
    tracing::debug!(
        ids = seen_ids.committed_len(),
        "sample ids of the dataset, on disk"
    );

    if !single {
        let tasks_dir = out_dir.join(format!("_state/tasks/{}", task.count));
        std::fs::create_dir_all(&tasks_dir).map_err(|source| state::StateError::Io {
            action: "creating",
            path: tasks_dir.clone(),
            source,
        })?;
    }

    // The task's share of the input files; progress is measured in its bytes.
    let inputs = InputFiles::expand(&cfg.input.paths)?;
    let share = inputs.share(task);
    let bytes_total = share.bytes;
    let progress = progress::RunProgress::new(bytes_total, opts.metrics_file.clone());

    // Stage 1: reader thread.
    let (chunk_tx, chunk_rx) = sync_channel::<ReaderMsg>(2);
    let quarantine_path = out_dir.join(task.quarantine_rel());
    let ingest_opts = IngestOptions {
        inputs: cfg.input.paths.clone(),
        format: cfg.format()?,
        episode: cfg.episode.clone(),
        reader: cfg.input.reader_options(),
        quarantine_path: Some(quarantine_path.clone()),
        predicate: crate::sql::SqlWhere::optional(cfg.input.r#where.as_deref()),
    };
    let counter = ModelTokenCounter(m.tokenizer.text_encoder());
    let chunk_records = cfg.input.chunk_records as u64;
    let share_files = inputs.files[share.first_file..share.end_file].to_vec();
    let chunking = Chunking {
        records: chunk_records,
        position: inputs.position.clone(),
        identity: inputs.identity.clone(),
    };
    let reader = std::thread::Builder::new()
        .name("hindsight-reader".into())
        .spawn(move || read_chunks(ingest_opts, share_files, counter, chunking, chunk_tx))
        .map_err(|e| PipelineError::Stage(format!("spawning reader: {e}")))?;

    // Stage 3: writer thread (shards, ids, chunk state, in that order).
    let (write_tx, write_rx) = sync_channel::<ScoredChunk>(1);
    let chunk_writer = dataset.clone();
    let writer = std::thread::Builder::new()
        .name("hindsight-writer".into())
        .spawn(move || write_chunks(&chunk_writer, state, write_rx, task, progress))
        .map_err(|e| PipelineError::Stage(format!("spawning writer: {e}")))?;

    // Stage 2: scoring on this thread (it owns the model and the compute threads).
    let scored = score_chunks(
        cfg,
        &m,
        chunk_rx,
        write_tx,
        &committed,
        &mut seen_ids,
        opts,
        bytes_total,
    );
    drop(seen_ids);
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
    let (mut state, shards_written, progress) = writer_result?;
    let ingest = match reader_result {
        Ok(s) => s,
        // A run stopped early (max_chunks) closes the channel on purpose; report what was read.
        Err(e) if scoring.stopped_early => {
            tracing::debug!("reader stopped early: {e}");
            IngestStats::default()
        }
        Err(e) => return Err(e.into()),
    };

    let seconds = started.elapsed().as_secs_f64();
    let scored_eps = scoring.counts.episodes_scored;
    let report = RunReport {
        output_dir: PathBuf::from(mirror.label()),
        config_sha256,
        ingest,
        chunks_seen: scoring.chunks_seen,
        chunks_already_committed: scoring.chunks_skipped,
        chunks_committed: scoring.chunks_sent,
        input: share,
        orphans_removed,
        counts: scoring.counts,
        shards_written,
        seconds,
        episodes_per_second: scored_eps as f64 / seconds.max(1e-9),
        low_relevance_examples: scoring.examples,
        stopped_early: scoring.stopped_early,
        audit: None,
    };
    let mut report = report;
    if report.stopped_early {
        if single {
            dataset.write_partial_report(&report_json(&report)?)?;
        }
        progress.finish(&report);
        return Ok(report);
    }
    let marker = TaskMarker {
        task_index: task.index,
        num_tasks: task.count,
        inputs_sha256: inputs.sha256.clone(),
        config_sha256: report.config_sha256.clone(),
        dataset: meta.clone(),
        chunks: scoring.owned.clone(),
        report: report.clone(),
        guards: cfg.guards.clone(),
    };
    if single {
        // The run is its own last task: merge and publish now, under the exclusive lock.
        tasks::merge(&dataset, &mut state, std::slice::from_ref(&marker))?;
        let manifest = build_manifest(&meta, &state, Some(&report.ingest));
        let audit = publish::audit_then_publish(
            &dataset,
            Some(&quarantine_path),
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
        dataset.upload_state(&task.quarantine_rel())?;
        tasks::write_marker(&dataset, &marker)?;
    }
    progress.finish(&report);
    Ok(report)
}

/// The id of a chunk before content ids: its input's URI, the input's identity (size + mtime,
/// or ETag) and its position. `plan` still recognises chunks committed under it.
fn chunk_id(uri: &str, identity: &str, seq: u64) -> String {
    let h = sha256_hex(format!("{uri}\0{identity}\0{seq}").as_bytes());
    h[..16].to_string()
}

/// A chunk is named by its input's URI, its position and the sha256 of its episodes: a log
/// that only grows keeps the ids of its unchanged chunks (they are skipped without scoring),
/// and a record rewritten in place changes its chunk's id (the chunk is processed again).
fn content_chunk_id(uri: &str, seq: u64, content: Sha256) -> String {
    let digest = hex::encode(content.finalize());
    chunk_id(uri, &format!("content:{digest}"), seq)
}

/// The run report as written to `run_report.json`.
fn report_json(report: &RunReport) -> Result<Vec<u8>, PipelineError> {
    serde_json::to_vec_pretty(report).map_err(|e| PipelineError::Stage(e.to_string()))
}

/// Feeds what `serde_json` writes into a hash, so a chunk's content id costs no buffer.
struct HashWrite<'a>(&'a mut Sha256);

impl std::io::Write for HashWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The scorer hung up (a run stopped early on purpose).
fn stopped() -> crate::ingest::IngestError {
    crate::ingest::IngestError::Stopped
}

/// The run's input files: the same expanded list in every task, with what a task needs to
/// name chunks and cut shares without reading any file.
struct InputFiles {
    files: Vec<crate::ingest::InputFile>,
    /// File or object size of each file (compressed).
    sizes: Vec<u64>,
    /// Each file's position in the list, by URI.
    position: HashMap<String, u64>,
    /// Each file's content identity (size + mtime, or ETag), by URI.
    identity: HashMap<String, String>,
    /// sha256 over the list and the identities (tasks of one run agree on it).
    sha256: String,
}

impl InputFiles {
    fn expand(paths: &[String]) -> Result<Self, PipelineError> {
        let files = crate::ingest::expand_inputs(paths)?;
        let mut sizes = Vec::with_capacity(files.len());
        let mut position = HashMap::new();
        let mut identity = HashMap::new();
        let mut list = String::new();
        for (i, f) in files.iter().enumerate() {
            let uri = f.path.display().to_string();
            sizes.push(crate::store::input_size(&uri));
            let id = crate::store::input_identity(&uri);
            list.push_str(&format!("{uri}\0{id}\n"));
            position.insert(uri.clone(), i as u64);
            identity.insert(uri, id);
        }
        Ok(InputFiles {
            files,
            sizes,
            position,
            identity,
            sha256: sha256_hex(list.as_bytes()),
        })
    }

    /// The part of the input `task` reads.
    fn share(&self, task: TaskSlice) -> InputShare {
        let r = task.share(&self.sizes);
        InputShare {
            first_file: r.start,
            end_file: r.end,
            files_total: self.files.len(),
            bytes: self.sizes[r.clone()].iter().sum(),
            bytes_total: self.sizes.iter().sum(),
            files: self.files[r]
                .iter()
                .map(|f| f.path.display().to_string())
                .collect(),
        }
    }
}

/// How the reader cuts episodes into chunks and names them.
struct Chunking {
    /// Records per chunk (`input.chunk_records`).
    records: u64,
    /// Each input file's position in the whole input, by URI (the ordinal's high part).
    position: HashMap<String, u64>,
    /// Each input file's content identity, by URI (part of the chunk id).
    identity: HashMap<String, String>,
}

/// A chunk's ordinal: its file's position in the input, then its position in the file, so
/// ordinals sort in reading order and do not depend on which files a task reads.
fn chunk_ordinal(file_position: u64, seq: u64) -> u64 {
    (file_position << 32) | (seq & 0xffff_ffff)
}

fn read_chunks(
    opts: IngestOptions,
    files: Vec<crate::ingest::InputFile>,
    counter: ModelTokenCounter,
    chunking: Chunking,
    tx: SyncSender<ReaderMsg>,
) -> Result<IngestStats, crate::ingest::IngestError> {
    let mut stream = episode::ingest_files(opts, files)?;
    stream.set_token_counter(Box::new(counter));
    let Chunking {
        records: chunk_records,
        position,
        mut identity,
    } = chunking;
    let mut seq: HashMap<String, u64> = HashMap::new();
    let mut current: Option<(String, u64, Chunk, Sha256)> = None;
    // The id is the chunk's content: known once its last episode is read.
    let send = |(_, _, mut c, content): (String, u64, Chunk, Sha256)| {
        c.id = content_chunk_id(&c.source_uri, c.index, content);
        tx.send(ReaderMsg::Chunk(c)).is_ok()
    };
    for ep in stream.by_ref() {
        let uri = ep.provenance.source_uri.clone();
        let bucket = (ep.provenance.source_record.max(0) as u64) / chunk_records;
        let same = matches!(&current, Some((u, b, _, _)) if *u == uri && *b == bucket);
        if !same {
            if let Some(done) = current.take() {
                if !send(done) {
                    return Err(stopped());
                }
            }
            let id = identity
                .entry(uri.clone())
                .or_insert_with(|| crate::store::input_identity(&uri));
            // Every episode comes from a listed file; an unknown URI sorts last.
            let file_position = position.get(&uri).copied().unwrap_or(u64::from(u32::MAX));
            let n = seq.entry(uri.clone()).or_insert(0);
            let chunk = Chunk {
                id: String::new(),
                source_uri: uri.clone(),
                source_identity: id.clone(),
                index: *n,
                ordinal: chunk_ordinal(file_position, *n),
                episodes: Vec::new(),
            };
            *n += 1;
            current = Some((uri, bucket, chunk, Sha256::new()));
        }
        if let Some((_, _, c, content)) = current.as_mut() {
            // Every field of the episode, provenance included: the same records at the same
            // places give the same bytes.
            let _ = serde_json::to_writer(HashWrite(content), &ep);
            content.update(b"\n");
            c.episodes.push(ep);
        }
    }
    if let Some(done) = current.take() {
        if !send(done) {
            return Err(stopped());
        }
    }
    let stats = stream.finish();
    let _ = tx.send(ReaderMsg::Done);
    stats
}

struct ScoringOutcome {
    counts: StepCounts,
    chunks_seen: u64,
    chunks_skipped: u64,
    chunks_sent: u64,
    examples: Vec<DroppedExample>,
    stopped_early: bool,
    /// Chunks this task owns (all chunks in a single-task run), as (chunk id, ordinal).
    owned: Vec<(String, u64)>,
}

// The scoring stage's inputs are the run's own pieces (config, model, the two channels, resume
// state, options, progress total); bundling them in a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn score_chunks(
    cfg: &PipelineConfig,
    m: &LoadedModel,
    rx: Receiver<ReaderMsg>,
    tx: SyncSender<ScoredChunk>,
    committed: &HashSet<String>,
    seen_ids: &mut idset::IdSet,
    opts: &RunOptions,
    bytes_total: u64,
) -> Result<ScoringOutcome, PipelineError> {
    let mut steps = ScoringSteps::new(cfg, m, seen_ids);
    let progress = progress_bar(opts.progress, bytes_total);
    // The reader may have read its first buffers already: the bar can start a little behind.
    let bytes_start = crate::ingest::input::input_bytes_read();
    let mut out = ScoringOutcome {
        counts: StepCounts::default(),
        chunks_seen: 0,
        chunks_skipped: 0,
        chunks_sent: 0,
        examples: Vec::new(),
        stopped_early: false,
        owned: Vec::new(),
    };
    for msg in rx {
        let chunk = match msg {
            ReaderMsg::Chunk(c) => c,
            ReaderMsg::Done => break,
        };
        out.chunks_seen += 1;
        out.owned.push((chunk.id.clone(), chunk.ordinal));
        if committed.contains(&chunk.id) {
            out.chunks_skipped += 1;
            continue;
        }
        if opts
            .max_chunks
            .is_some_and(|n| out.chunks_sent as usize >= n)
        {
            out.stopped_early = true;
            break;
        }
        let mut scored = ChunkOutput::default();
        for batch in chunk.episodes.chunks(cfg.score.batch_episodes.max(1)) {
            steps.run_batch(batch, &mut scored)?;
            if let Some(pb) = &progress {
                let read = crate::ingest::input::input_bytes_read().saturating_sub(bytes_start);
                pb.set_position(read.min(bytes_total));
                pb.set_message(format!(
                    "{} episodes scored",
                    out.counts.episodes_scored + scored.counts.episodes_scored
                ));
            }
        }
        out.counts.add(&scored.counts);
        let scored = ScoredChunk {
            id: chunk.id,
            source_uri: chunk.source_uri,
            source_identity: chunk.source_identity,
            index: chunk.index,
            ordinal: chunk.ordinal,
            rows: scored.rows,
            counts: scored.counts,
            kl: scored.kl,
            dropped_relevance: scored.dropped_relevance,
            relevance: scored.relevance,
        };
        if tx.send(scored).is_err() {
            return Err(PipelineError::Stage("writer stopped early".into()));
        }
        out.chunks_sent += 1;
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    out.examples = steps.examples().to_vec();
    Ok(out)
}

/// A bar over the input bytes (total and ETA), on a terminal only.
fn progress_bar(enabled: bool, bytes_total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(bytes_total.max(1));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} input, eta {eta} · {msg}",
    ) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(pb)
}

/// The writer stage: each scored chunk's shards and ids, then its state record (tagged with the
/// task and the chunk's place in the input), through the dataset writer's commit order.
fn write_chunks(
    dataset: &DatasetWriter,
    mut state: RunState,
    rx: Receiver<ScoredChunk>,
    task: TaskSlice,
    mut progress: progress::RunProgress,
) -> Result<(RunState, u64, progress::RunProgress), PipelineError> {
    let mut shards_written = 0u64;
    for chunk in rx {
        let (id, uri, counts) = (
            chunk.id.clone(),
            chunk.source_uri.clone(),
            chunk.counts.clone(),
        );
        let staged = dataset.stage(&chunk.id, chunk.rows)?;
        shards_written += staged.shards().len() as u64;
        dataset.commit(staged, |shards| {
            state
                .commit(ChunkState {
                    chunk_id: chunk.id,
                    source_uri: chunk.source_uri,
                    source_identity: Some(chunk.source_identity),
                    chunk_index: chunk.index,
                    counts: chunk.counts,
                    kl: chunk.kl,
                    dropped_relevance: chunk.dropped_relevance,
                    relevance: chunk.relevance,
                    task: Some(TaskTag {
                        index: task.index,
                        num_tasks: task.count,
                        ordinal: chunk.ordinal,
                    }),
                    shards,
                })
                .map_err(PipelineError::from)
        })?;
        progress.chunk_committed(&id, &uri, &counts);
    }
    Ok((state, shards_written, progress))
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
