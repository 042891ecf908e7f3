//! The scoring side of a run as a list of steps, one file each:
//! [`rollout`] → [`prepare`] → skip known ids ([`dedup::skip_known`]) → [`score`] →
//! [`relevance`] filter → [`dedup`] → the sink (the
//! writer thread in `super`). Each step takes the survivors of the one before, drops what it
//! must with a typed [`DropReason`], and counts into the same [`StepCounts`], so a chunk's
//! counts reconcile like ingest counts do: every episode in is written or dropped for a reason.

pub mod counts;
pub mod dedup;
pub mod prepare;
pub mod relevance;
pub mod rollout;
pub mod score;

pub use counts::{DropReason, StepCounts};

use super::idset::IdSet;
use super::state::KlTotals;
use super::{DroppedExample, PipelineError};
use crate::config::PipelineConfig;
use crate::episode::Episode;
use crate::model::LoadedModel;
use crate::score::{RelevanceMethod, Scorer, ScorerConfig};
use crate::sink::OutputRow;

/// What one chunk's episodes became: rows for the sink and the chunk's counts.
#[derive(Default)]
pub struct ChunkOutput {
    /// Rows to write, in input order.
    pub rows: Vec<OutputRow>,
    /// The chunk's counters.
    pub counts: StepCounts,
    /// KL sums over the written rows' response tokens.
    pub kl: KlTotals,
    /// `relevance` of the rows dropped under the threshold (the report's histogram).
    pub dropped_relevance: Vec<f32>,
    /// `relevance` of every scored row (the drift guards' distribution).
    pub relevance: crate::pipeline::drift::RelevanceHistogram,
}

/// The steps of one run, with their state (template cache, seen ids, dropped examples).
pub struct ScoringSteps<'a> {
    model: &'a LoadedModel,
    cfg: &'a PipelineConfig,
    scorer: Scorer<'a>,
    method: RelevanceMethod,
    prepare: prepare::PrepareStep<'a>,
    relevance: relevance::RelevanceFilter,
    seen_ids: &'a mut IdSet,
    health: score::ScoreHealth,
}

impl<'a> ScoringSteps<'a> {
    /// The steps of a run of `cfg` on `model`; `seen_ids` holds the dataset's committed rows.
    pub fn new(cfg: &'a PipelineConfig, model: &'a LoadedModel, seen_ids: &'a mut IdSet) -> Self {
        let method = cfg.score.relevance;
        let scorer_cfg = ScorerConfig {
            top_k: cfg.score.top_k,
            student_top_k: cfg.score.student_top_k,
            token_budget: cfg.score.token_budget,
            prefix_sharing: cfg.score.prefix_sharing,
            relevance: method,
            control: true,
            control_tokens: cfg.score.control_tokens,
            followup: method.needs_followup(),
            pmi_tokens: cfg.score.pmi_tokens,
            ..ScorerConfig::default()
        };
        ScoringSteps {
            model,
            cfg,
            scorer: Scorer::new(&model.transformer, scorer_cfg),
            method,
            prepare: prepare::PrepareStep::new(
                model,
                cfg.episode.custom_templates.clone(),
                prepare::Probes::for_method(method),
            ),
            relevance: relevance::RelevanceFilter::new(cfg.score.threshold()),
            seen_ids,
            health: score::ScoreHealth::default(),
        }
    }

    /// Runs every step over one batch of a chunk's episodes, adding to `out`.
    pub fn run_batch(
        &mut self,
        batch: &[Episode],
        out: &mut ChunkOutput,
    ) -> Result<(), PipelineError> {
        let counts = &mut out.counts;
        counts.episodes_in += batch.len() as u64;
        let candidates = rollout::rollout_batch(self.model, batch, &self.cfg.rollout, counts);
        let ready = self.prepare.apply(candidates, counts);
        let ready = dedup::skip_known(self.seen_ids, ready, counts);
        let scored =
            score::score_batch(&self.scorer, ready, self.method, counts, &mut self.health)?;
        for s in &scored {
            if let Some(r) = s.row.relevance {
                out.relevance.add(r);
            }
        }
        let kept = self
            .relevance
            .apply(scored, counts, &mut out.dropped_relevance);
        for s in dedup::dedup(self.seen_ids, kept, counts) {
            counts.rows_written += 1;
            counts.response_tokens += s.row.response_tokens() as u64;
            let kl = &s.scores;
            out.kl.tokens += kl.kl_full_vocab.len() as u64;
            out.kl.exact += kl.kl_full_vocab.iter().map(|&x| f64::from(x)).sum::<f64>();
            out.kl.topk_tail += kl.kl_topk_tail.iter().map(|&x| f64::from(x)).sum::<f64>();
            out.rows.push(s.row);
        }
        debug_assert!(out.counts.reconciles(), "{:?}", out.counts);
        Ok(())
    }

    /// The dropped rows kept as examples for the run report.
    pub fn examples(&self) -> &[DroppedExample] {
        &self.relevance.examples
    }
}
