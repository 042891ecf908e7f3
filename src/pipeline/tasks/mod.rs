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

mod election;
mod finalize;
mod shares;

pub use election::{finalize_if_last, run_id_segment, LastTask};
pub(super) use finalize::merge;
pub use finalize::{finalize, FinalizeReport};
pub use shares::{InputShare, TaskSlice};

fn marker_rel(count: u32, index: u32) -> String {
    format!("_state/tasks/{count}/{index}.json")
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

pub(super) fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::shares::*;
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
