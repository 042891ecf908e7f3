//! Step 5, dedup: a `sample_id` already in the dataset (an earlier run, or earlier in this one)
//! is not written again.

use std::collections::HashSet;

use super::counts::{DropReason, StepCounts};
use super::score::Scored;

/// Keeps the rows whose `sample_id` is new, and remembers them.
pub fn dedup(
    seen: &mut HashSet<String>,
    scored: Vec<Scored>,
    counts: &mut StepCounts,
) -> Vec<Scored> {
    let mut out = Vec::with_capacity(scored.len());
    for s in scored {
        if seen.insert(s.row.sample_id.clone()) {
            out.push(s);
        } else {
            counts.drop(DropReason::DuplicateAcrossRuns);
        }
    }
    out
}
