//! Sharded runs: `hindsight run … --task-index I --num-tasks N` scores a deterministic slice of
//! the input's chunks, and `hindsight finalize DIR` merges the slices once every task is done.
//!
//! Every task reads the whole input (reading is cheap next to scoring, and it keeps ingest's
//! exact episode dedup and the chunk numbering identical in every task) and scores the chunks
//! whose ordinal (position in reading order) is `I mod N`. Tasks share the dataset directory:
//! each holds its own lock (`.lock-task-<I>`) and a shared hold on `.lock`, so a plain run or a
//! finalize (which take `.lock` exclusively) cannot start while a task writes, nor a task while
//! they do; it writes its shards and chunk states (tagged with
//! the task and the chunk's ordinal), never writes `manifest.json`, and ends by writing its
//! completion marker `_state/tasks/<N>/<I>.json`.
//!
//! `finalize` refuses until all N markers exist and agree on the input and config, then merges:
//! walking the new chunks in input order, a row whose `sample_id` is already in the dataset (an
//! earlier chunk or an earlier run) is dropped as `duplicate_across_runs`, exactly the row a
//! single-task run would have dropped; the affected chunk's shards are rewritten without it.
//! Then it writes the manifest, `quarantine.jsonl` and a merged `run_report.json`.
//!
//! A plain run is task 0 of 1: it writes its quarantine in place, keeps no marker, and ends with
//! the same [`merge`] (which then finds nothing to drop: a single task deduplicates as it goes)
//! and the same publish step.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{self, DatasetBinding, RunLock, RunState, TaskTag};
use super::{build_manifest, PipelineError, RunReport};
use crate::episode::IngestStats;
use crate::sink::dataset::{chunk_ids_rel, DatasetWriter, QUARANTINE_FILE};
use crate::sink::{DatasetMeta, ShardConfig};
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

    /// Whether the chunk at `ordinal` (reading order) is this task's.
    pub fn owns(&self, ordinal: u64) -> bool {
        ordinal % u64::from(self.count) == u64::from(self.index)
    }

    /// Whether a committed chunk was written by this task (of a run with the same N).
    pub fn owns_tag(&self, tag: &TaskTag) -> bool {
        tag.index == self.index && tag.num_tasks == self.count
    }

    /// The task's lock file in the dataset directory.
    pub fn lock_name(&self) -> String {
        format!(".lock-task-{}", self.index)
    }

    /// Where the task writes its quarantine (every task reads all input, so all are equal); a
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

fn marker_rel(count: u32, index: u32) -> String {
    format!("_state/tasks/{count}/{index}.json")
}

/// What a finished task leaves behind: `_state/tasks/<N>/<I>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskMarker {
    pub task_index: u32,
    pub num_tasks: u32,
    /// sha256 over the chunk ids of the whole input: tasks of one run agree on it, so a marker
    /// left by an earlier run over other inputs is recognised as stale.
    pub inputs_sha256: String,
    pub config_sha256: String,
    /// The shard metadata (finalize writes the manifest without loading the model).
    pub dataset: DatasetMeta,
    /// Chunks this task owns, as (chunk id, ordinal), including ones committed before.
    pub chunks: Vec<(String, u64)>,
    /// The task's run report (its ingest statistics cover the whole input).
    pub report: RunReport,
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
    /// Ingest statistics of the input (every task read all of it).
    pub ingest: IngestStats,
    /// What the scoring steps did over the merged chunks, after dedup.
    pub counts: super::StepCounts,
    /// Wall-clock seconds of each task.
    pub task_seconds: Vec<f64>,
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
pub fn finalize(target: &str, num_tasks: Option<u32>) -> Result<FinalizeReport, PipelineError> {
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
    let slice = TaskSlice::new(0, n).map_err(PipelineError::Tasks)?;
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
    let ingest = first.report.ingest.clone();
    if markers.iter().any(|m| m.report.ingest != ingest) {
        tracing::warn!("tasks report different ingest statistics; using task 0's");
    }

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

    let dataset = DatasetWriter::new(mirror.clone(), meta.clone(), shard_config(&meta));
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
    };
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| PipelineError::Stage(e.to_string()))?;
    let manifest = build_manifest(&meta, &st, Some(&ingest));
    dataset.publish(Some(&dir.join(slice.quarantine_rel())), &json, &manifest)?;
    Ok(report)
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

    let mut seen = super::load_committed_sample_ids(dataset.dir(), st, |c| c.task.is_none())?;
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
        let dups: HashSet<&str> = ids.iter().copied().filter(|i| seen.contains(*i)).collect();
        let mut merged = chunk.clone();
        merged.task = None;
        if dups.is_empty() {
            dataset.recommit(&chunk.chunk_id, || {
                st.commit(merged).map_err(PipelineError::from)
            })?;
            seen.extend(ids.iter().map(|s| s.to_string()));
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
        seen.extend(kept_ids);
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

/// The shard limits the run used (recorded in the dataset's pipeline config).
fn shard_config(meta: &DatasetMeta) -> ShardConfig {
    let out = &meta.pipeline_config["output"];
    let mut cfg = ShardConfig::default();
    if let Some(n) = out["shard_max_rows"].as_u64() {
        cfg.max_rows = n as usize;
    }
    if let Some(n) = out["shard_max_bytes"].as_u64() {
        cfg.max_bytes = n;
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_partition_the_chunks_and_bad_flags_are_refused() {
        let n = 3;
        let slices: Vec<TaskSlice> = (0..n)
            .map(|i| TaskSlice::new(i, n).expect("slice"))
            .collect();
        for ordinal in 0..20u64 {
            let owners = slices.iter().filter(|s| s.owns(ordinal)).count();
            assert_eq!(owners, 1, "chunk {ordinal} must have exactly one owner");
        }
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
        assert!(s.owns_tag(&tag) && s.owns(9));
        assert!(!TaskSlice::new(1, 3).expect("slice").owns_tag(&tag));
    }
}
