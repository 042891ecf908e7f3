//! Step 4, relevance filter: rows whose relevance is under the threshold are dropped (feedback
//! the teacher ignores); their values feed the report's histogram and a few are kept as examples.

use super::counts::{DropReason, StepCounts};
use super::score::Scored;
use crate::pipeline::DroppedExample;

/// How many dropped rows a run keeps as examples for its report.
const MAX_EXAMPLES: usize = 20;

/// The relevance filter of a run.
pub struct RelevanceFilter {
    threshold: f32,
    /// Dropped rows shown in the run report (the first [`MAX_EXAMPLES`]).
    pub examples: Vec<DroppedExample>,
}

impl RelevanceFilter {
    /// Drops rows under `threshold`; rows with a null relevance are kept.
    pub fn new(threshold: f32) -> Self {
        RelevanceFilter {
            threshold,
            examples: Vec::new(),
        }
    }

    /// Keeps the rows at or above the threshold; pushes the dropped values onto `dropped`.
    pub fn apply(
        &mut self,
        scored: Vec<Scored>,
        counts: &mut StepCounts,
        dropped: &mut Vec<f32>,
    ) -> Vec<Scored> {
        let mut out = Vec::with_capacity(scored.len());
        for s in scored {
            // NaN counts as under any threshold (rows holding one are dropped before this step).
            let Some(relevance) = s
                .row
                .relevance
                .filter(|&r| r.is_nan() || r < self.threshold)
            else {
                out.push(s);
                continue;
            };
            counts.drop(DropReason::LowRelevance);
            dropped.push(relevance);
            if self.examples.len() < MAX_EXAMPLES {
                let row = &s.row;
                self.examples.push(DroppedExample {
                    sample_id: row.sample_id.clone(),
                    source_uri: row.source_uri.clone(),
                    source_record: row.source_record,
                    relevance,
                    privileged_context: row.privileged_context.chars().take(300).collect(),
                });
            }
        }
        out
    }
}
