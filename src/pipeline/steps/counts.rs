//! Typed counters of the scoring side, and why an episode did not become a row.
//!
//! Persisted (chunk state, manifest `stats.episodes`, `run_report.json`) as the flat map they
//! always were (`episodes_scored`, `filtered:low_relevance`, ...), so datasets and reports keep
//! their format; in code every counter is a field or a [`DropReason`], never a string.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why an episode (or a rolled-out sample) was dropped by a scoring step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Rollout: the student could not generate a response (e.g. the prompt does not fit).
    RolloutError,
    /// Prepare: the episode cannot be tokenized (template or tokenizer error).
    TokenizationError,
    /// Prepare: the model's chat template renders the conversation so that the response
    /// cannot be placed exactly after the generation prompt (the whole conversation does not
    /// start with the prompt's tokens, or renders the response differently after the teacher's
    /// context); scoring it would be silently wrong.
    TemplateMismatch,
    /// Prepare: a context (student, teacher or control, plus the response) or a `pmi` feedback
    /// probe is longer than the model's context.
    ExceedsModelContext,
    /// Prepare: the response tokenizes to nothing.
    EmptyCompletion,
    /// Prepare: a `pmi` run cannot build the feedback probe (the chat template refuses the
    /// context), so the row could not be filtered by relevance.
    ProbeUnavailable,
    /// Before scoring: a row with this `sample_id` is already in the dataset (an earlier run,
    /// or an earlier chunk of this one), so the episode is not scored again.
    AlreadyInDataset,
    /// Score: the forward pass failed on this episode alone (others of the run scored).
    ScoreError,
    /// Score: a value of the row is NaN or infinite (never written).
    NonFinite,
    /// Relevance filter: `relevance` under the threshold.
    LowRelevance,
    /// Dedup: a row with this `sample_id` is already in the dataset.
    DuplicateAcrossRuns,
}

impl DropReason {
    /// Every reason, in pipeline order.
    pub const ALL: [DropReason; 11] = [
        DropReason::RolloutError,
        DropReason::TokenizationError,
        DropReason::TemplateMismatch,
        DropReason::ExceedsModelContext,
        DropReason::EmptyCompletion,
        DropReason::ProbeUnavailable,
        DropReason::AlreadyInDataset,
        DropReason::ScoreError,
        DropReason::NonFinite,
        DropReason::LowRelevance,
        DropReason::DuplicateAcrossRuns,
    ];

    /// The snake_case name (reports, `filtered:<name>` in persisted counts).
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::RolloutError => "rollout_error",
            DropReason::TokenizationError => "tokenization_error",
            DropReason::TemplateMismatch => "template_mismatch",
            DropReason::ExceedsModelContext => "exceeds_model_context",
            DropReason::EmptyCompletion => "empty_completion",
            DropReason::ProbeUnavailable => "probe_unavailable",
            DropReason::AlreadyInDataset => "already_in_dataset",
            DropReason::ScoreError => "score_error",
            DropReason::NonFinite => "non_finite",
            DropReason::LowRelevance => "low_relevance",
            DropReason::DuplicateAcrossRuns => "duplicate_across_runs",
        }
    }

    fn parse(name: &str) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// What the scoring steps did with a chunk's (or a run's) episodes. Reconciles:
/// `episodes_in - rollout_prompts + rollouts = rows_written + Σ dropped`, and
/// `episodes_scored = rows_written + dropped{low_relevance} + dropped{duplicate_across_runs}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BTreeMap<String, u64>", try_from = "BTreeMap<String, u64>")]
pub struct StepCounts {
    /// Episodes that entered the scoring side (from ingest).
    pub episodes_in: u64,
    /// Episodes whose response was rolled out from the student (demonstrations)...
    pub rollout_prompts: u64,
    /// ...and the samples that produced (each goes on like an episode).
    pub rollouts: u64,
    /// Episodes (and samples) that went through the forward pass.
    pub episodes_scored: u64,
    /// Scored rows whose relevance method does not apply (kept, `relevance` null).
    pub relevance_not_applicable: u64,
    /// Rows handed to the sink.
    pub rows_written: u64,
    /// Response tokens of those rows.
    pub response_tokens: u64,
    /// Drops per reason.
    pub dropped: BTreeMap<DropReason, u64>,
}

impl StepCounts {
    /// Counts one drop.
    pub fn drop(&mut self, reason: DropReason) {
        self.drop_n(reason, 1);
    }

    /// Counts `n` drops.
    pub fn drop_n(&mut self, reason: DropReason, n: u64) {
        if n > 0 {
            *self.dropped.entry(reason).or_insert(0) += n;
        }
    }

    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }

    /// Adds another chunk's counts.
    pub fn add(&mut self, o: &StepCounts) {
        self.episodes_in += o.episodes_in;
        self.rollout_prompts += o.rollout_prompts;
        self.rollouts += o.rollouts;
        self.episodes_scored += o.episodes_scored;
        self.relevance_not_applicable += o.relevance_not_applicable;
        self.rows_written += o.rows_written;
        self.response_tokens += o.response_tokens;
        for (r, n) in &o.dropped {
            self.drop_n(*r, *n);
        }
    }

    /// Whether every episode in is accounted for (see the type's documentation).
    pub fn reconciles(&self) -> bool {
        let dropped: u64 = self.dropped.values().sum();
        let after_scoring =
            self.dropped(DropReason::LowRelevance) + self.dropped(DropReason::DuplicateAcrossRuns);
        self.episodes_in + self.rollouts == self.rows_written + dropped + self.rollout_prompts
            && self.episodes_scored == self.rows_written + after_scoring
    }
}

impl From<StepCounts> for BTreeMap<String, u64> {
    fn from(c: StepCounts) -> Self {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: u64| {
            if v > 0 {
                m.insert(k.to_string(), v);
            }
        };
        put("episodes_in", c.episodes_in);
        put("rollout_prompts", c.rollout_prompts);
        put("rollouts", c.rollouts);
        put("episodes_scored", c.episodes_scored);
        put("relevance_not_applicable", c.relevance_not_applicable);
        put("rows_written", c.rows_written);
        put("response_tokens", c.response_tokens);
        for (r, n) in &c.dropped {
            put(&format!("filtered:{}", r.as_str()), *n);
        }
        m
    }
}

impl TryFrom<BTreeMap<String, u64>> for StepCounts {
    type Error = String;

    fn try_from(m: BTreeMap<String, u64>) -> Result<Self, String> {
        let mut c = StepCounts::default();
        for (k, v) in m {
            let field = match k.as_str() {
                "episodes_in" => &mut c.episodes_in,
                "rollout_prompts" => &mut c.rollout_prompts,
                "rollouts" => &mut c.rollouts,
                "episodes_scored" => &mut c.episodes_scored,
                "relevance_not_applicable" => &mut c.relevance_not_applicable,
                "rows_written" => &mut c.rows_written,
                "response_tokens" => &mut c.response_tokens,
                other => {
                    let reason = other
                        .strip_prefix("filtered:")
                        .and_then(DropReason::parse)
                        .ok_or_else(|| format!("unknown scoring counter `{other}`"))?;
                    c.drop_n(reason, v);
                    continue;
                }
            };
            *field += v;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_persisted_map_round_trips_and_unknown_counters_are_refused() {
        let mut c = StepCounts {
            episodes_in: 5,
            rollout_prompts: 1,
            rollouts: 2,
            episodes_scored: 4,
            rows_written: 3,
            response_tokens: 40,
            ..StepCounts::default()
        };
        c.drop(DropReason::EmptyCompletion);
        c.drop(DropReason::EmptyCompletion);
        c.drop(DropReason::LowRelevance);
        assert!(c.reconciles(), "{c:?}");
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert!(json.contains("\"filtered:empty_completion\":2"), "{json}");
        let back: StepCounts = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<StepCounts>(r#"{"filtered:typo":1}"#).is_err());
        c.rows_written -= 1;
        assert!(!c.reconciles());
    }
}
