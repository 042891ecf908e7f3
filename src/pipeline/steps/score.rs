//! Step 3, score: one forward pass per context over the batch (packed, prefix-shared), and an
//! output row per episode with its relevance under the run's method.
//!
//! One episode never ends a run: when a batch fails, each of its episodes is scored alone and
//! the ones that still fail are dropped (`score_error`) once the model has scored anything in
//! this run, so a broken model or device still fails the run. A row holding a NaN or an
//! infinity is dropped (`non_finite`), never written.

use super::counts::{DropReason, StepCounts};
use super::prepare::Ready;
use crate::episode::Episode;
use crate::error::Result;
use crate::score::contexts::Prepared;
use crate::score::{EpisodeScores, RelevanceMethod, ScoreRequest, Scorer};
use crate::sink::columns::first_non_finite;
use crate::sink::{self, OutputRow};

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
        let row = output_row(&r.episode, &r.prepared, &s, method);
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

/// The row of one scored episode; `method` defines the `relevance` column (every
/// method's value is recorded in its own column as well).
pub fn output_row(
    episode: &Episode,
    prepared: &Prepared,
    scores: &EpisodeScores,
    method: RelevanceMethod,
) -> OutputRow {
    let req = &prepared.request;
    let t = req.completion_ids.len();
    OutputRow {
        schema_version: sink::schema::SCHEMA_VERSION,
        sample_id: sink::sample_id(episode, &req.completion_ids),
        source_kind: episode.source_kind.as_str().to_string(),
        source_format: episode.source_format.as_str().to_string(),
        source_uri: episode.provenance.source_uri.clone(),
        source_record: episode.provenance.source_record,
        conversation_id: episode.provenance.conversation_id.clone(),
        turn_index: episode.provenance.turn_index,
        event_time: episode.provenance.event_time_us,
        method: episode.method.as_str().to_string(),
        prompt: episode.prompt.clone(),
        privileged_context: sink::row::privileged_text(episode),
        teacher_template: episode.teacher_template.clone(),
        teacher_prompt: episode.teacher_prompt.clone(),
        completion: episode.completion.clone().unwrap_or_default(),
        prompt_ids: ids(&req.prompt_ids),
        teacher_prompt_ids: ids(&req.teacher_prompt_ids),
        completion_ids: ids(&req.completion_ids),
        loss_mask: vec![1; t],
        finish_reason: episode.finish_reason.as_str().to_string(),
        is_on_policy: episode.is_on_policy,
        student_logprobs: scores.student_logprobs.clone(),
        teacher_logprobs: scores.teacher_logprobs.clone(),
        advantages: scores.advantages.clone(),
        teacher_topk_ids: ids(&scores.teacher_topk_ids),
        teacher_topk_logprobs: scores.teacher_topk_logprobs.clone(),
        teacher_tail_logmass: scores.teacher_tail_logmass.clone(),
        student_topk_logprobs: Some(scores.student_topk_logprobs.clone()),
        student_topk_ids: (scores.student_k > 0).then(|| ids(&scores.student_topk_ids)),
        student_topk_logprobs_self: (scores.student_k > 0)
            .then(|| scores.student_topk_logprobs_self.clone()),
        teacher_logprobs_at_student_topk: (scores.student_k > 0)
            .then(|| scores.teacher_logprobs_at_student_topk.clone()),
        teacher_logz: scores.teacher_logz.clone(),
        student_logz: scores.student_logz.clone(),
        num_completion_tokens: i32::try_from(t).unwrap_or(i32::MAX),
        relevance_kl: scores.relevance_kl,
        relevance: scores.relevance(method),
        relevance_control_kl: scores.relevance(RelevanceMethod::ControlKl),
        relevance_pmi: scores.relevance(RelevanceMethod::Pmi),
        relevance_pmi_mean: scores.relevance(RelevanceMethod::PmiMean),
        relevance_pmi_answer: scores.relevance(RelevanceMethod::PmiAnswer),
        k: scores.k,
        ks: scores.student_k,
    }
}

/// Token ids as the contract's int32. Ids come from a vocabulary far below 2^31; an id that did
/// not fit would become negative, which `validate` reports as out of range.
fn ids(v: &[u32]) -> Vec<i32> {
    v.iter().map(|&x| x as i32).collect()
}
