//! The writer stage: each scored chunk's shards, ids and state record, committed in order.

use std::sync::mpsc::Receiver;

use super::scorer::ScoredChunk;
use super::state::{ChunkState, RunState, TaskTag};
use super::{progress, PipelineError, TaskSlice};
use crate::sink::dataset::DatasetWriter;

/// The writer stage: each scored chunk's shards and ids, then its state record (tagged with the
/// task and the chunk's place in the input), through the dataset writer's commit order.
pub(super) fn write_chunks(
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
