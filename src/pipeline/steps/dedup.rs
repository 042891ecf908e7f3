//! Dedup, twice. Before scoring ([`skip_known`]): an episode whose `sample_id` is already in
//! the dataset (an earlier run, or an earlier chunk of this one) is not scored again, so a
//! nightly run over a log that only grows pays for its new episodes alone. After scoring
//! ([`dedup`], step 5): two copies of one episode in the same batch, which the first check cannot
//! see, become one row.

use super::counts::{DropReason, StepCounts};
use super::prepare::Ready;
use super::score::Scored;
use crate::pipeline::idset::IdSet;
use crate::sink::sample_id;

/// Drops, before any forward pass, the episodes whose rows the dataset already has.
pub fn skip_known(seen: &mut IdSet, ready: Vec<Ready>, counts: &mut StepCounts) -> Vec<Ready> {
    let mut out = Vec::with_capacity(ready.len());
    for r in ready {
        if seen.contains(&sample_id(&r.episode, &r.prepared.request.completion_ids)) {
            counts.drop(DropReason::AlreadyInDataset);
        } else {
            out.push(r);
        }
    }
    out
}

/// Keeps the rows whose `sample_id` is new, and remembers them.
pub fn dedup(seen: &mut IdSet, scored: Vec<Scored>, counts: &mut StepCounts) -> Vec<Scored> {
    let mut out = Vec::with_capacity(scored.len());
    for s in scored {
        if seen.insert(&s.row.sample_id) {
            out.push(s);
        } else {
            counts.drop(DropReason::DuplicateAcrossRuns);
        }
    }
    out
}
