//! Sharded runs: `hindsight run … --task-index I --num-tasks N` reads and scores one share of
//! the input, and `hindsight finalize DIR` merges the shares once every task is done.
//!
//! **Shares.** The inputs expand to one ordered file list (the same in every task). Task `I`
//! reads a contiguous run of those files, cut so that each task gets about `1/N` of the bytes
//! ([`TaskSlice::share`]): a file goes to the task in whose byte range its midpoint lies. So
//! the shares are disjoint, their union is the input, and N tasks together read it once; a
//! single file is never split (a task whose share is empty finishes at once). Chunk ids and
//! ordinals depend only on the file and the position in it (the ordinal is the file's position
//! in the list, then the chunk's in the file), so a chunk has the same id and place in every
//! task count, and `inputs_sha256` is taken over the file list and the files' identities, which
//! every task knows without reading.
//!
//! **Locks and markers.** Tasks share the dataset directory: each holds its own lock
//! (`.lock-task-<I>`) and a shared hold on `.lock`, so a plain run or a finalize (which take
//! `.lock` exclusively) cannot start while a task writes, nor a task while they do; it writes
//! its shards and chunk states (tagged with the task and the chunk's ordinal), never writes
//! `manifest.json`, and ends by writing its quarantine and then its completion marker
//! `_state/tasks/<N>/<I>.json`.
//!
//! **Finalize** refuses until all N markers exist and agree on the input and config, then
//! merges: walking the new chunks in input order, a row whose `sample_id` is already in the
//! dataset (an earlier chunk or an earlier run) is dropped as `duplicate_across_runs`, exactly
//! the row a single-task run would have dropped; the affected chunk's shards are rewritten
//! without it. The ingest statistics are the sum of the shares', the quarantine is the tasks'
//! quarantines in task (= input) order. Then it writes the manifest, `quarantine.jsonl` and a
//! merged `run_report.json`.
//!
//! One difference from a single task remains, in the counts only: ingest's exact episode dedup
//! sees one share, so an episode repeated in two shares is scored by both tasks, and finalize
//! drops the later copy's row (same content, same `sample_id`) as `duplicate_across_runs`
//! where a single task counts it as the ingest filter `duplicate`. The rows are the same.
//!
//! A plain run is task 0 of 1: its share is the whole input, it writes its quarantine in place,
//! keeps no marker, and ends with the same [`merge`] (which then finds nothing to drop: a single
//! task deduplicates as it goes) and the same publish step.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{self, DatasetBinding, RunLock, RunState, TaskTag};
use super::{build_manifest, PipelineError, RunReport};
use crate::episode::IngestStats;
use crate::sink::dataset::{chunk_ids_rel, DatasetWriter, QUARANTINE_FILE};
use crate::sink::DatasetMeta;
use crate::store::Mirror;

/// One task's share of a sharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSlice {
    /// This task, 0-based.
    pub index: u32,
    /// How many tasks share the run.
    pub count: u32,
}

impl TaskSlice {
    /// A plain run: the only task of one.
    pub const SINGLE: TaskSlice = TaskSlice { index: 0, count: 1 };

    /// Whether this is a plain run (it finalizes itself).
    pub fn is_single(&self) -> bool {
        self.count == 1
    }

    /// Checks `0 <= index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 {
            return Err("--num-tasks must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "--task-index {index} is out of range for --num-tasks {count} (0..={})",
                count - 1
            ));
        }
        Ok(TaskSlice { index, count })
    }

    /// This task's share of the input files, given their sizes in input order: the files whose
    /// byte midpoint falls in the task's `1/N` of the total (all files by position when they
    /// are all empty). Shares of the N tasks are disjoint, contiguous and cover every file.
    pub fn share(&self, sizes: &[u64]) -> Range<usize> {
        let owners = share_owners(sizes, self.count);
        let index = self.index;
        let first = owners
            .iter()
            .position(|&o| o >= index)
            .unwrap_or(owners.len());
        let end = owners
            .iter()
            .position(|&o| o > index)
            .unwrap_or(owners.len());
        first..end
    }

    /// Whether a committed chunk was written by this task (of a run with the same N).
    pub fn owns_tag(&self, tag: &TaskTag) -> bool {
        tag.index == self.index && tag.num_tasks == self.count
    }

    /// The task's lock file in the dataset directory.
    pub fn lock_name(&self) -> String {
        format!(".lock-task-{}", self.index)
    }

    /// Where the task writes the quarantine of its share (finalize joins them in task order); a
    /// plain run writes the dataset's own.
    pub fn quarantine_rel(&self) -> String {
        if self.is_single() {
            return QUARANTINE_FILE.to_string();
        }
        format!(
            "_state/tasks/{}/quarantine-{}.jsonl",
            self.count, self.index
        )
    }

    /// The completion marker.
    pub fn marker_rel(&self) -> String {
        marker_rel(self.count, self.index)
    }
}

/// The task of each file: the one in whose `1/n` of the total bytes the file's midpoint lies
/// (by position when every file is empty). Non-decreasing, so every share is contiguous.
fn share_owners(sizes: &[u64], n: u32) -> Vec<u32> {
    let n = u128::from(n.max(1));
    let total: u128 = sizes.iter().map(|&s| u128::from(s)).sum();
    let len = (sizes.len() as u128).max(1);
    let mut before = 0u128;
    sizes
        .iter()
        .enumerate()
        .map(|(j, &size)| {
            let size = u128::from(size);
            let owner = if total == 0 {
                j as u128 * n / len
            } else {
                n * (2 * before + size) / (2 * total)
            };
            before += size;
            // Below n by construction; the cast cannot truncate.
            owner.min(n - 1) as u32
        })
        .collect()
}

fn marker_rel(count: u32, index: u32) -> String {
    format!("_state/tasks/{count}/{index}.json")
}

/// The part of the input a task read: a contiguous run of the expanded input files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShare {
    /// Position of the share's first file among all input files (0-based)...
    pub first_file: usize,
    /// ...and one past its last (`first_file == end_file`: an empty share).
    pub end_file: usize,
    /// How many files the whole input has.
    pub files_total: usize,
    /// Bytes of the share's files (file or object sizes, compressed).
    pub bytes: u64,
    /// Bytes of the whole input.
    pub bytes_total: u64,
    /// The share's files, by URI, in input order.
    pub files: Vec<String>,
}

/// What a finished task leaves behind: `_state/tasks/<N>/<I>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskMarker {
    pub task_index: u32,
    pub num_tasks: u32,
    /// sha256 over the input file list and the files' identities (size + mtime, or ETag):
    /// tasks of one run agree on it, so a marker left by a run over other inputs is stale.
    pub inputs_sha256: String,
    pub config_sha256: String,
    /// The shard metadata (finalize writes the manifest without loading the model).
    pub dataset: DatasetMeta,
    /// Chunks this task owns, as (chunk id, ordinal), including ones committed before.
    pub chunks: Vec<(String, u64)>,
    /// The task's run report (its ingest statistics and quarantine cover its share).
    pub report: RunReport,
    /// The drift guards of the task's pipeline (finalize applies them before publishing).
    #[serde(default)]
    pub guards: super::drift::DriftGuards,
}

/// Writes a task's completion marker (locally, then to the store).
pub(super) fn write_marker(
    dataset: &DatasetWriter,
    marker: &TaskMarker,
) -> Result<(), PipelineError> {
    let rel = marker_rel(marker.num_tasks, marker.task_index);
    let json =
        serde_json::to_vec_pretty(marker).map_err(|e| PipelineError::Stage(e.to_string()))?;
    let path = dataset.dir().join(&rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| state::StateError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    state::write_atomic(&path, &json)?;
    dataset.upload_state(&rel)?;
    Ok(())
}

/// A plain run must not mix with chunks of a sharded run that was never finalized (its own
/// chunks, task 0 of 1, left by an interrupted plain run, are resumed).
pub(super) fn refuse_other_sharded_runs(
    state: &RunState,
    label: &str,
) -> Result<(), PipelineError> {
    if let Some(tag) = state
        .committed()
        .iter()
        .find_map(|c| c.task.filter(|t| t.num_tasks != 1))
    {
        return Err(PipelineError::Tasks(format!(
            "{label} holds chunks of a sharded run ({} tasks) that was not finalized; \
             run `hindsight finalize {label}` once every task is done",
            tag.num_tasks
        )));
    }
    Ok(())
}

/// What `finalize` did; written to `run_report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizeReport {
    /// The dataset (path or URL).
    pub output: String,
    pub num_tasks: u32,
    /// Chunks of this sharded run merged now.
    pub chunks_merged: u64,
    /// Rows dropped because an earlier chunk (of another task or an earlier run) has them.
    pub duplicates_removed: u64,
    /// Leftover files of interrupted work deleted.
    pub orphans_removed: u64,
    /// Ingest statistics of the input: the sum of the tasks' shares.
    pub ingest: IngestStats,
    /// What the scoring steps did over the merged chunks, after dedup.
    pub counts: super::StepCounts,
    /// Wall-clock seconds of each task.
    pub task_seconds: Vec<f64>,
    /// What the audit before the publish found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::publish::AuditSummary>,
}

impl FinalizeReport {
    /// A short human summary.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "finalized {} tasks: {} chunks merged, {} duplicate rows removed across tasks, \
             rows written {}, episodes scored {}\ndataset: {}",
            self.num_tasks,
            self.chunks_merged,
            self.duplicates_removed,
            c.rows_written,
            c.episodes_scored,
            self.output
        )
    }
}

/// The task counts that have markers under `_state/tasks/`.
fn task_counts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir.join("_state/tasks"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Merges the chunks of a finished sharded run at `target` (a directory or a URL) and writes the
/// manifest. Refuses, naming them, while any task's marker is missing or stale.
/// `accept_drift` publishes even when the drift guards of the tasks' pipeline fail.
pub fn finalize(
    target: &str,
    num_tasks: Option<u32>,
    accept_drift: bool,
) -> Result<FinalizeReport, PipelineError> {
    let mirror = Arc::new(Mirror::open(target)?);
    let dir = mirror.local().to_path_buf();
    let label = mirror.label();
    let _lock = RunLock::acquire(&dir)?;
    mirror.pull_tree("_state")?;

    let n = match num_tasks {
        Some(n) => n,
        None => match task_counts(&dir).as_slice() {
            [] => {
                return Err(PipelineError::Tasks(format!(
                    "{label}: no sharded task has finished here (no _state/tasks/<N>/<I>.json); \
                     run `hindsight run … --task-index I --num-tasks N` first \
                     (a plain run finalizes itself)"
                )))
            }
            [n] => *n,
            many => {
                return Err(PipelineError::Tasks(format!(
                    "{label}: markers of runs with {many:?} tasks exist; pass --num-tasks"
                )))
            }
        },
    };
    TaskSlice::new(0, n).map_err(PipelineError::Tasks)?;
    // Local datasets: a task still running holds its lock; finalizing under it would race.
    let mut _task_locks = Vec::new();
    if mirror.remote().is_none() {
        for i in 0..n {
            _task_locks.push(
                RunLock::acquire_named(&dir, &format!(".lock-task-{i}")).map_err(|_| {
                    PipelineError::NotReady(format!(
                        "finalize refused: task {i} of {n} is still running on {label}"
                    ))
                })?,
            );
        }
    }

    let mut markers = Vec::new();
    let mut missing = Vec::new();
    for i in 0..n {
        let path = dir.join(marker_rel(n, i));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let m: TaskMarker =
                    serde_json::from_slice(&bytes).map_err(|e| state::StateError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                markers.push(m);
            }
            Err(_) => missing.push(i),
        }
    }
    if !missing.is_empty() {
        return Err(PipelineError::NotReady(format!(
            "finalize refused: {} of {n} tasks have not finished on {label}: task index(es) {} \
             (no {}); run them with --task-index I --num-tasks {n}, then finalize again",
            missing.len(),
            join(&missing),
            marker_rel(n, missing[0]),
        )));
    }
    let first = &markers[0];
    let stale: Vec<u32> = markers
        .iter()
        .filter(|m| {
            m.inputs_sha256 != first.inputs_sha256 || m.config_sha256 != first.config_sha256
        })
        .map(|m| m.task_index)
        .collect();
    if !stale.is_empty() {
        return Err(PipelineError::Tasks(format!(
            "finalize refused: the markers of task(s) {} on {label} disagree with task 0 on the \
             input chunks or the config (left by another run); rerun those tasks on the same input",
            join(&stale)
        )));
    }
    let meta = first.dataset.clone();
    // Shares are consecutive in task order: summing (and joining) in that order keeps the
    // examples and the quarantine in input order.
    let mut ingest = IngestStats::default();
    for m in &markers {
        ingest.absorb(&m.report.ingest);
    }
    let quarantine = join_quarantines(&dir, n)?;

    let bind_path = dir.join(state::BINDING_REL);
    let binding: DatasetBinding =
        serde_json::from_slice(&std::fs::read(&bind_path).map_err(|source| {
            state::StateError::Io {
                action: "reading",
                path: bind_path.clone(),
                source,
            }
        })?)
        .map_err(|e| state::StateError::Corrupt {
            path: bind_path.clone(),
            message: e.to_string(),
        })?;
    let mut st = RunState::open(&dir, &binding)?;
    let listed: HashSet<String> = st
        .committed()
        .iter()
        .flat_map(|c| c.shards.iter().map(|s| s.file.clone()))
        .collect();
    let orphans_removed = (st.clean_orphans()? + mirror.clean_remote_orphans(&listed)?) as u64;

    let dataset = DatasetWriter::new(mirror.clone(), meta.clone(), meta.shard_config());
    let merged = merge(&dataset, &mut st, &markers)?;

    // Counts over this run's chunks, after dedup.
    let mut counts = super::StepCounts::default();
    for c in st.committed() {
        if merged.chunks.contains(&c.chunk_id) {
            counts.add(&c.counts);
        }
    }
    let report = FinalizeReport {
        output: label.clone(),
        num_tasks: n,
        chunks_merged: merged.chunks_merged,
        duplicates_removed: merged.duplicates_removed,
        orphans_removed,
        ingest: ingest.clone(),
        counts,
        task_seconds: markers.iter().map(|m| m.report.seconds).collect(),
        audit: None,
    };
    let manifest = build_manifest(&meta, &st, Some(&ingest));
    let mut guards = first.guards.clone();
    if accept_drift {
        guards.enforce = false;
    }
    let audit = super::publish::audit_then_publish(
        &dataset,
        Some(&quarantine),
        manifest,
        &guards,
        |audit| {
            let mut r = report.clone();
            r.audit = Some(audit.clone());
            serde_json::to_vec_pretty(&r).map_err(|e| PipelineError::Stage(e.to_string()))
        },
    )?;
    let mut report = report;
    report.audit = Some(audit);
    Ok(report)
}

/// What [`finalize_if_last`] found after a task finished.
#[derive(Debug)]
pub enum LastTask {
    /// Other tasks of the run have not finished yet (this many of N have).
    Waiting { done: u32 },
    /// Every task has finished and another one claimed the finalize.
    OtherFinalizes { by: u32 },
    /// This task was the one to finalize, and did.
    Finalized(Box<FinalizeReport>),
}

/// A run id as a path segment: kept when it is short and plain, else its hash.
pub fn run_id_segment(run_id: &str) -> String {
    let plain = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !run_id.starts_with('.');
    if plain {
        run_id.to_string()
    } else {
        crate::util::sha256_hex(run_id.as_bytes())[..32].to_string()
    }
}

/// Run after a task of a sharded run has written its completion marker
/// (`run --finalize-if-last`): records that the task of run `run_id` is done, and when every
/// task of that run is, the one task that creates the claim finalizes.
///
/// Race-free without a lock: each task writes its done record *before* it lists the run's
/// records, so the task whose record completes the set sees it (stores are read-after-write
/// and list-after-write consistent); several tasks may see the full set, but the claim is a
/// create-only write, so exactly one of them wins. A retry of the winner (its pod restarted)
/// finds its own claim and finalizes again, which is idempotent. `run_id` must be shared by the
/// tasks of one run and differ between runs (the Job's uid, `$SLURM_ARRAY_JOB_ID`).
pub fn finalize_if_last(
    target: &str,
    task: TaskSlice,
    run_id: &str,
    wait: std::time::Duration,
    accept_drift: bool,
) -> Result<LastTask, PipelineError> {
    let mirror = Mirror::open(target)?;
    let dir = mirror.local().to_path_buf();
    let n = task.count;
    let runs = format!("_state/tasks/{n}/runs/{}", run_id_segment(run_id));
    let done_rel = format!("{runs}/{}.done", task.index);
    let claim_rel = format!("{runs}/finalize.claim");
    let me = task.index.to_string().into_bytes();

    // 1. This task is done (after its marker, which `run` wrote before returning).
    let done: HashSet<u32> = match mirror.remote() {
        Some(remote) => {
            remote.put_bytes(&done_rel, me.clone())?;
            remote
                .list(&runs)?
                .iter()
                .filter_map(|o| remote.relative(&o.location))
                .filter_map(|rel| done_index(&rel))
                .collect()
        }
        None => {
            let path = dir.join(&done_rel);
            let runs_dir = dir.join(&runs);
            std::fs::create_dir_all(&runs_dir).map_err(|source| state::StateError::Io {
                action: "creating",
                path: runs_dir.clone(),
                source,
            })?;
            state::write_atomic(&path, &me)?;
            std::fs::read_dir(&runs_dir)
                .map_err(|source| state::StateError::Io {
                    action: "listing",
                    path: runs_dir.clone(),
                    source,
                })?
                .filter_map(|e| e.ok())
                .filter_map(|e| done_index(&e.file_name().to_string_lossy()))
                .collect()
        }
    };
    let finished = done.iter().filter(|&&i| i < n).count() as u32;
    if finished < n {
        return Ok(LastTask::Waiting { done: finished });
    }

    // 2. Every task is done: the one whose create-only claim succeeds finalizes.
    let created = match mirror.remote() {
        Some(remote) => remote.put_new(&claim_rel, me.clone())?,
        None => {
            let path = dir.join(&claim_rel);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(&me)
                        .and_then(|_| f.sync_all())
                        .map_err(|source| state::StateError::Io {
                            action: "writing",
                            path: path.clone(),
                            source,
                        })?;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(source) => {
                    return Err(state::StateError::Io {
                        action: "creating",
                        path,
                        source,
                    }
                    .into())
                }
            }
        }
    };
    if !created {
        let holder = match mirror.remote() {
            Some(remote) => remote.get_bytes(&claim_rel)?.unwrap_or_default(),
            None => std::fs::read(dir.join(&claim_rel)).unwrap_or_default(),
        };
        let by = String::from_utf8_lossy(&holder).trim().parse::<u32>().ok();
        if by != Some(task.index) {
            return Ok(LastTask::OtherFinalizes {
                by: by.unwrap_or(u32::MAX),
            });
        }
    }

    // 3. Finalize. Tasks that finished a moment ago may still hold their locks (same machine or
    // shared directory): wait for them, within `wait`.
    let deadline = std::time::Instant::now() + wait;
    loop {
        match finalize(target, Some(n), accept_drift) {
            Ok(report) => return Ok(LastTask::Finalized(Box::new(report))),
            Err(PipelineError::NotReady(_))
            | Err(PipelineError::State(state::StateError::Locked(_)))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The task index of a done record's name (`<runs>/<I>.done` or `<I>.done`).
fn done_index(name: &str) -> Option<u32> {
    let file = name.rsplit('/').next()?;
    file.strip_suffix(".done")?.parse().ok()
}

/// Joins the tasks' quarantines, in task order, into `_state/tasks/<N>/quarantine.jsonl`.
fn join_quarantines(dir: &Path, n: u32) -> Result<std::path::PathBuf, PipelineError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| state::StateError::Io {
            action,
            path,
            source,
        }
    };
    let joined = dir.join(format!("_state/tasks/{n}/quarantine.jsonl"));
    let tmp = joined.with_extension("jsonl.tmp");
    let mut out = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    for i in 0..n {
        let part = dir.join(TaskSlice { index: i, count: n }.quarantine_rel());
        match std::fs::File::open(&part) {
            Ok(mut f) => {
                std::io::copy(&mut f, &mut out).map_err(io("reading", &part))?;
            }
            // A task whose share quarantined nothing may have no file on a store.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", &part)(e).into()),
        }
    }
    out.sync_all().map_err(io("writing", &tmp))?;
    drop(out);
    std::fs::rename(&tmp, &joined).map_err(io("renaming", &joined))?;
    Ok(joined)
}

/// What [`merge`] did.
pub(super) struct Merged {
    /// Every chunk the tasks own (the run's chunks, merged now or before).
    pub chunks: HashSet<String>,
    /// Chunks merged now.
    pub chunks_merged: u64,
    /// Rows dropped because an earlier chunk (of another task or an earlier run) has them.
    pub duplicates_removed: u64,
}

/// Merges the tasks' chunks into the dataset, walking them in input order: a row whose
/// `sample_id` an earlier chunk (merged, or earlier in this walk) already has is dropped as
/// `duplicate_across_runs`, exactly the row a single task would have dropped, and its chunk's
/// shards are rewritten without it; every merged chunk loses its task tag. For a plain run
/// (one task, which deduplicates as it goes) nothing is dropped and only the tags go.
pub(super) fn merge(
    dataset: &DatasetWriter,
    st: &mut RunState,
    markers: &[TaskMarker],
) -> Result<Merged, PipelineError> {
    let label = dataset.label();
    let n = markers.first().map_or(1, |m| m.num_tasks);
    // Chunk order of this run, from the markers (authoritative for the current input).
    let mut ordinal: HashMap<String, u64> = HashMap::new();
    for m in markers {
        for (id, o) in &m.chunks {
            if !st.is_committed(id) {
                return Err(PipelineError::Tasks(format!(
                    "task {} of {n} lists chunk {id} but its state is missing on {label}; \
                     rerun task {} and finalize again",
                    m.task_index, m.task_index
                )));
            }
            ordinal.insert(id.clone(), *o);
        }
    }

    // The merged chunks' ids, on disk (bounded memory whatever the dataset's age).
    let mut seen = super::idset::IdSet::open(dataset.dir(), "merge", st, |c| c.task.is_none())?;
    let mut pending = Vec::new();
    for c in st.committed() {
        let Some(tag) = c.task else {
            continue;
        };
        let o = match ordinal.get(&c.chunk_id) {
            Some(o) => *o,
            // An interrupted plain run's chunk of an input that has changed since: the chunks
            // after it were deduplicated against it, so it goes first.
            None if n == 1 && tag.num_tasks == 1 => 0,
            None => {
                return Err(PipelineError::Tasks(format!(
                    "chunk {} on {label} was written by a sharded task that is not part of this \
                     {n}-task run; rerun the tasks of one run on the same input, then finalize",
                    c.chunk_id
                )))
            }
        };
        pending.push((o, (*c).clone()));
    }
    pending.sort_by_key(|(o, _)| *o);

    let mut duplicates_removed = 0u64;
    let chunks_merged = pending.len() as u64;
    for (_, chunk) in pending {
        let ids_file = dataset.dir().join(chunk_ids_rel(&chunk.chunk_id));
        let text = std::fs::read_to_string(&ids_file).map_err(|source| state::StateError::Io {
            action: "reading",
            path: ids_file.clone(),
            source,
        })?;
        let ids: Vec<&str> = text.lines().collect();
        let dups: HashSet<&str> = ids.iter().copied().filter(|i| seen.contains(i)).collect();
        let mut merged = chunk.clone();
        merged.task = None;
        if dups.is_empty() {
            dataset.recommit(&chunk.chunk_id, || {
                st.commit(merged).map_err(PipelineError::from)
            })?;
            for id in &ids {
                seen.insert(id);
            }
            continue;
        }
        // Rewrite the chunk's shards without the rows an earlier chunk already has.
        let mut kept = Vec::new();
        let mut dropped_tokens = 0u64;
        // Counted from the rows, not the id list: a damaged id file must not underflow.
        let mut dropped = 0u64;
        for s in &chunk.shards {
            for row in dataset.read_shard(&s.file)? {
                if dups.contains(row.sample_id.as_str()) {
                    dropped_tokens += row.response_tokens() as u64;
                    dropped += 1;
                } else {
                    kept.push(row);
                }
            }
        }
        duplicates_removed += dropped;
        let kept_ids: Vec<String> = kept.iter().map(|r| r.sample_id.clone()).collect();
        let counts = &mut merged.counts;
        counts.rows_written = counts.rows_written.saturating_sub(dropped);
        counts.response_tokens = counts.response_tokens.saturating_sub(dropped_tokens);
        // Per-row exact KL is not stored: the chunk's KL sums are prorated by the tokens kept.
        let kl_tokens = merged.kl.tokens;
        merged.kl.tokens = kl_tokens.saturating_sub(dropped_tokens);
        if kl_tokens > 0 {
            let share = merged.kl.tokens as f64 / kl_tokens as f64;
            merged.kl.exact *= share;
            merged.kl.topk_tail *= share;
        }
        merged
            .counts
            .drop_n(super::DropReason::DuplicateAcrossRuns, dropped);
        dataset.rewrite(&chunk.chunk_id, &chunk.shards, kept, |shards| {
            merged.shards = shards;
            st.commit(merged).map_err(PipelineError::from)
        })?;
        for id in &kept_ids {
            seen.insert(id);
        }
    }
    Ok(Merged {
        chunks: ordinal.into_keys().collect(),
        chunks_merged,
        duplicates_removed,
    })
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_contiguous_disjoint_balanced_and_cover_the_input() {
        let cases: Vec<Vec<u64>> = vec![
            vec![100, 100, 100],
            vec![10, 500, 10, 10, 10, 300, 1],
            vec![0, 0, 0, 0, 0],
            vec![7],
            vec![],
            (1..=40).map(|i| i * 37 % 101).collect(),
        ];
        for sizes in &cases {
            for n in 1..=5u32 {
                let shares: Vec<Range<usize>> = (0..n)
                    .map(|i| TaskSlice::new(i, n).expect("slice").share(sizes))
                    .collect();
                // Consecutive ranges from 0 to the end: disjoint, and their union is the input.
                let mut next = 0;
                for r in &shares {
                    assert_eq!(r.start, next, "{sizes:?} n={n}: {shares:?}");
                    assert!(r.end >= r.start);
                    next = r.end;
                }
                assert_eq!(next, sizes.len(), "{sizes:?} n={n}: {shares:?}");
            }
        }
        // Equal files split evenly; a big file is not split but its neighbours balance it.
        let even: Vec<_> = (0..3)
            .map(|i| TaskSlice::new(i, 3).expect("slice").share(&[5; 9]))
            .collect();
        assert_eq!(even, vec![0..3, 3..6, 6..9]);
        let big: Vec<_> = (0..2)
            .map(|i| {
                TaskSlice::new(i, 2)
                    .expect("slice")
                    .share(&[10, 1000, 10, 10])
            })
            .collect();
        assert_eq!(big, vec![0..2, 2..4]);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(TaskSlice::new(3, 3).unwrap_err().contains("out of range"));
        assert!(TaskSlice::new(0, 0).is_err());
        let s = TaskSlice::new(1, 4).expect("slice");
        assert_eq!(s.marker_rel(), "_state/tasks/4/1.json");
        assert_eq!(s.lock_name(), ".lock-task-1");
        let tag = TaskTag {
            index: 1,
            num_tasks: 4,
            ordinal: 9,
        };
        assert!(s.owns_tag(&tag));
        assert!(!TaskSlice::new(1, 3).expect("slice").owns_tag(&tag));
    }
}
