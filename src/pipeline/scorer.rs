//! The scoring stage: chunks → scored rows, on the thread that owns the model.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, SyncSender};

use super::reader::ReaderMsg;
use super::state::KlTotals;
use super::steps::{ChunkOutput, ScoringSteps};
use super::{drift, idset, DroppedExample, PipelineError, RunOptions, StepCounts};
use crate::config::PipelineConfig;
use crate::model::LoadedModel;
use crate::sink::OutputRow;

/// A scored chunk on its way to the writer.
pub(super) struct ScoredChunk {
    pub(super) id: String,
    pub(super) source_uri: String,
    pub(super) source_identity: String,
    pub(super) index: u64,
    pub(super) ordinal: u64,
    pub(super) rows: Vec<OutputRow>,
    pub(super) counts: StepCounts,
    pub(super) kl: KlTotals,
    /// `relevance` of the rows dropped under the threshold (the report's histogram).
    pub(super) dropped_relevance: Vec<f32>,
    /// `relevance` of every scored row (the drift guards' distribution).
    pub(super) relevance: drift::RelevanceHistogram,
}

pub(super) struct ScoringOutcome {
    pub(super) counts: StepCounts,
    pub(super) chunks_seen: u64,
    pub(super) chunks_skipped: u64,
    pub(super) chunks_sent: u64,
    pub(super) examples: Vec<DroppedExample>,
    pub(super) stopped_early: bool,
    /// Chunks this task owns (all chunks in a single-task run), as (chunk id, ordinal).
    pub(super) owned: Vec<(String, u64)>,
}

// The scoring stage's inputs are the run's own pieces (config, model, the two channels, resume
// state, options, progress total); bundling them in a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) fn score_chunks(
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
