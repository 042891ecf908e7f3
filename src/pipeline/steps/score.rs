//! Step 3, score: one forward pass per context over the batch (packed, prefix-shared), and an
//! output row per episode with its relevance under the run's method.

use super::counts::StepCounts;
use super::prepare::Ready;
use crate::error::Result;
use crate::score::{EpisodeScores, RelevanceMethod, Scorer};
use crate::sink::OutputRow;

/// A scored episode: its row and the scores the run totals need (KL sums).
pub struct Scored {
    /// The output row.
    pub row: OutputRow,
    /// The scores it was built from.
    pub scores: EpisodeScores,
}

/// Scores a prepared batch.
pub fn score_batch(
    scorer: &Scorer<'_>,
    ready: Vec<Ready>,
    method: RelevanceMethod,
    counts: &mut StepCounts,
) -> Result<Vec<Scored>> {
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let requests: Vec<_> = ready.iter().map(|r| r.prepared.request.clone()).collect();
    let (scores, _) = scorer.score(&requests)?;
    let mut out = Vec::with_capacity(ready.len());
    for (r, s) in ready.iter().zip(scores) {
        counts.episodes_scored += 1;
        let row = OutputRow::new(&r.episode, &r.prepared, &s, method);
        // A row the method does not apply to (a demonstration under `pmi`) is kept and counted;
        // its `relevance` is null.
        if row.relevance.is_none() {
            counts.relevance_not_applicable += 1;
        }
        out.push(Scored { row, scores: s });
    }
    Ok(out)
}
