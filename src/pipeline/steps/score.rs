//! Step 3, score: one forward pass per context over the batch (packed, prefix-shared), and an
//! output row per episode with its relevance under the run's method.
//!
//! One episode never ends a run: when a batch fails, each of its episodes is scored alone and
//! the ones that still fail are dropped (`score_error`) once the model has scored anything in
//! this run, so a broken model or device still fails the run. A row holding a NaN or an
//! infinity is dropped (`non_finite`), never written.

use super::counts::{DropReason, StepCounts};
use super::prepare::Ready;
use crate::error::Result;
use crate::score::{EpisodeScores, RelevanceMethod, ScoreRequest, Scorer};
use crate::sink::columns::first_non_finite;
use crate::sink::OutputRow;

/// A scored episode: its row and the scores it was built from (KL sums).
pub struct Scored {
    /// The output row.
    pub row: OutputRow,
    /// The scores it was built from.
    pub scores: EpisodeScores,
}

/// Whether the run's model has scored an episode yet: until it has, a failure may be the
/// model's, not the episode's, and ends the run.
#[derive(Debug, Default)]
pub struct ScoreHealth {
    scored_any: bool,
}

/// Scores a prepared batch.
pub fn score_batch(
    scorer: &Scorer<'_>,
    ready: Vec<Ready>,
    method: RelevanceMethod,
    counts: &mut StepCounts,
    health: &mut ScoreHealth,
) -> Result<Vec<Scored>> {
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let requests: Vec<_> = ready.iter().map(|r| r.prepared.request.clone()).collect();
    let scores: Vec<Option<EpisodeScores>> = match scorer.score(&requests) {
        Ok((scores, _)) => scores.into_iter().map(Some).collect(),
        Err(batch_error) => {
            tracing::warn!(
                episodes = requests.len(),
                "a scoring batch failed ({batch_error}); scoring its episodes one by one"
            );
            score_alone(scorer, &requests, &ready, health, batch_error)?
        }
    };
    let mut out = Vec::with_capacity(ready.len());
    for (r, s) in ready.iter().zip(scores) {
        let Some(s) = s else {
            counts.drop(DropReason::ScoreError);
            continue;
        };
        health.scored_any = true;
        let row = OutputRow::new(&r.episode, &r.prepared, &s, method);
        if let Some(column) = first_non_finite(&row) {
            tracing::warn!(uri = %crate::util::terminal_safe(&r.episode.provenance.source_uri), record = r.episode.provenance.source_record, column, "dropping a row with a non-finite value");
            counts.drop(DropReason::NonFinite);
            continue;
        }
        counts.episodes_scored += 1;
        // A row the method does not apply to (a demonstration under `pmi`) is kept and counted;
        // its `relevance` is null.
        if row.relevance.is_none() {
            counts.relevance_not_applicable += 1;
        }
        out.push(Scored { row, scores: s });
    }
    Ok(out)
}

/// Scores each request of a failed batch on its own; `None` for those that fail alone. Fails
/// with the batch's error when nothing has scored yet in the run and no request scores alone
/// either (then the model, not an episode, is at fault).
fn score_alone(
    scorer: &Scorer<'_>,
    requests: &[ScoreRequest],
    ready: &[Ready],
    health: &mut ScoreHealth,
    batch_error: crate::error::Error,
) -> Result<Vec<Option<EpisodeScores>>> {
    let mut out = Vec::with_capacity(requests.len());
    for (req, r) in requests.iter().zip(ready) {
        match scorer.score(std::slice::from_ref(req)) {
            Ok((mut s, _)) => {
                health.scored_any = true;
                out.push(s.pop());
            }
            Err(e) => {
                tracing::warn!(uri = %crate::util::terminal_safe(&r.episode.provenance.source_uri), record = r.episode.provenance.source_record, "cannot score episode: {}", crate::util::terminal_safe(&e.to_string()));
                out.push(None);
            }
        }
    }
    if !health.scored_any {
        return Err(batch_error);
    }
    Ok(out)
}
