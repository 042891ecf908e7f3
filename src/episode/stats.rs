//! Run statistics for the ingest stage, with a reconciliation check: nothing is lost silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts of everything the ingest stage saw and did.
///
/// Invariants ([`IngestStats::reconciles`]):
/// `records_read = records_with_episodes + Σ records_filtered + Σ records_quarantined` and
/// `episodes_built = episodes_emitted + Σ episodes_filtered`. `episodes_emitted` are the
/// episodes handed to the scorer, which keeps its own counts from there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStats {
    /// Input files opened.
    pub files: u64,
    /// Records read (every reader item, good or quarantined; a file that cannot be opened
    /// counts as one quarantined record).
    pub records_read: u64,
    /// Records that produced at least one episode (even if all were filtered later).
    pub records_with_episodes: u64,
    /// Records filtered, per reason.
    pub records_filtered: BTreeMap<String, u64>,
    /// Records quarantined, per reason.
    pub records_quarantined: BTreeMap<String, u64>,
    /// Episodes extracted from records.
    pub episodes_built: u64,
    /// Episodes that passed every prefilter and were handed on.
    pub episodes_emitted: u64,
    /// Episodes filtered, per reason.
    pub episodes_filtered: BTreeMap<String, u64>,
    /// Flags set on emitted episodes, per flag.
    pub flags: BTreeMap<String, u64>,
    /// PII replacements, per kind.
    pub pii_scrubbed: BTreeMap<String, u64>,
    /// Where the first few filtered records/episodes of each reason came from
    /// (`uri#record`), so a report can show examples of what was dropped and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filtered_examples: BTreeMap<String, Vec<String>>,
    /// What the input predicate (`input.where`) did, when there is one; the records it rejected
    /// are `records_filtered["where"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub where_filter: Option<crate::ingest::WhereStats>,
}

/// How many example locations are kept per filter reason.
pub const EXAMPLES_PER_REASON: usize = 3;

fn sum(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

impl IngestStats {
    /// Total records filtered.
    pub fn records_filtered_total(&self) -> u64 {
        sum(&self.records_filtered)
    }

    /// Total records quarantined.
    pub fn records_quarantined_total(&self) -> u64 {
        sum(&self.records_quarantined)
    }

    /// Total episodes filtered.
    pub fn episodes_filtered_total(&self) -> u64 {
        sum(&self.episodes_filtered)
    }

    /// Whether both accounting identities hold.
    pub fn reconciles(&self) -> bool {
        self.records_read
            == self.records_with_episodes
                + self.records_filtered_total()
                + self.records_quarantined_total()
            && self.episodes_built == self.episodes_emitted + self.episodes_filtered_total()
    }

    /// Adds the statistics of the next share of the input (a sharded run's tasks read
    /// consecutive shares, so absorbing them in task order keeps the examples in input order).
    pub fn absorb(&mut self, next: &IngestStats) {
        fn add(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_insert(0) += v;
            }
        }
        self.files += next.files;
        self.records_read += next.records_read;
        self.records_with_episodes += next.records_with_episodes;
        add(&mut self.records_filtered, &next.records_filtered);
        add(&mut self.records_quarantined, &next.records_quarantined);
        self.episodes_built += next.episodes_built;
        self.episodes_emitted += next.episodes_emitted;
        add(&mut self.episodes_filtered, &next.episodes_filtered);
        add(&mut self.flags, &next.flags);
        add(&mut self.pii_scrubbed, &next.pii_scrubbed);
        for (reason, examples) in &next.filtered_examples {
            let into = self.filtered_examples.entry(reason.clone()).or_default();
            let room = EXAMPLES_PER_REASON.saturating_sub(into.len());
            into.extend(examples.iter().take(room).cloned());
        }
        match (&mut self.where_filter, &next.where_filter) {
            (Some(w), Some(n)) => {
                w.parquet_row_groups += n.parquet_row_groups;
                w.parquet_row_groups_pruned += n.parquet_row_groups_pruned;
                w.parquet_rows_pruned += n.parquet_rows_pruned;
                w.records_evaluated += n.records_evaluated;
            }
            (None, Some(n)) => self.where_filter = Some(n.clone()),
            _ => {}
        }
    }

    pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
        *map.entry(key.to_string()).or_insert(0) += 1;
    }

    /// Counts a filtered record or episode and keeps its location if it is among the first few.
    pub(crate) fn filtered(&mut self, episode_level: bool, reason: &str, uri: &str, record: i64) {
        let map = if episode_level {
            &mut self.episodes_filtered
        } else {
            &mut self.records_filtered
        };
        Self::bump(map, reason);
        let examples = self
            .filtered_examples
            .entry(reason.to_string())
            .or_default();
        if examples.len() < EXAMPLES_PER_REASON {
            examples.push(format!("{uri}#{record}"));
        }
    }
}
