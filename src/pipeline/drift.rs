//! Drift guards: tonight's increment (what a publish is about to make visible) against the
//! previous night's, so a nightly job that starts producing different data (another relevance
//! distribution, a drop reason that jumps, responses twice as long) stops before its rows reach
//! the trainers instead of after.
//!
//! Everything compared is additive per chunk, so the increment is the manifest's cumulative
//! statistics now minus those of the manifest readers see: it covers every chunk not yet
//! published, including those of a night whose publish was refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::steps::StepCounts;
pub use crate::config::DriftGuards;

/// Histogram bins per doubling of `1 + |relevance|`: about 4% wide, fine enough for a KS
/// distance, coarse enough that a manifest holds the whole distribution in a few hundred bins.
const BINS_PER_OCTAVE: f64 = 16.0;

/// A log-binned histogram of relevance values. Bins are additive, so per-chunk histograms sum
/// to the dataset's and differences of cumulative ones give an increment's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RelevanceHistogram(BTreeMap<i32, u64>);

impl RelevanceHistogram {
    /// Counts one value (non-finite values have no bin and are not counted).
    pub fn add(&mut self, value: f32) {
        if let Some(b) = bin(value) {
            *self.0.entry(b).or_insert(0) += 1;
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &RelevanceHistogram) {
        for (b, n) in &other.0 {
            *self.0.entry(*b).or_insert(0) += n;
        }
    }

    /// `self - earlier`, or `None` when `earlier` holds counts `self` does not (not a prefix
    /// of it: the dataset was rebuilt).
    pub fn minus(&self, earlier: &RelevanceHistogram) -> Option<RelevanceHistogram> {
        let mut out = self.0.clone();
        for (b, n) in &earlier.0 {
            let have = out.get_mut(b)?;
            *have = have.checked_sub(*n)?;
        }
        out.retain(|_, n| *n > 0);
        Some(RelevanceHistogram(out))
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The `q` quantile (0..=1), at the centre of its bin; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).round() as u64;
        let mut seen = 0u64;
        for (b, n) in &self.0 {
            seen += n;
            if seen > rank {
                return Some(bin_centre(*b));
            }
        }
        self.0.keys().next_back().map(|b| bin_centre(*b))
    }

    /// The Kolmogorov–Smirnov distance (largest gap between the two cumulative distributions,
    /// 0..=1) at bin resolution; `None` when either is empty.
    pub fn ks_distance(&self, other: &RelevanceHistogram) -> Option<f64> {
        let (na, nb) = (self.count(), other.count());
        if na == 0 || nb == 0 {
            return None;
        }
        let bins: std::collections::BTreeSet<i32> =
            self.0.keys().chain(other.0.keys()).copied().collect();
        let (mut ca, mut cb, mut worst) = (0u64, 0u64, 0f64);
        for b in bins {
            ca += self.0.get(&b).copied().unwrap_or(0);
            cb += other.0.get(&b).copied().unwrap_or(0);
            let gap = (ca as f64 / na as f64 - cb as f64 / nb as f64).abs();
            worst = worst.max(gap);
        }
        Some(worst)
    }
}

/// The bin of a value: monotone in the value, symmetric around 0.
fn bin(value: f32) -> Option<i32> {
    if !value.is_finite() {
        return None;
    }
    let m = (1.0 + f64::from(value).abs()).log2() * BINS_PER_OCTAVE;
    let b = m.floor() as i32;
    Some(if value < 0.0 { -b - 1 } else { b })
}

/// A representative value of a bin (the middle of its range on the log scale).
fn bin_centre(b: i32) -> f64 {
    let (m, sign) = if b < 0 { (-(b + 1), -1.0) } else { (b, 1.0) };
    sign * ((2f64).powf((f64::from(m) + 0.5) / BINS_PER_OCTAVE) - 1.0)
}

/// Drop reasons that count re-read rows (already in the dataset), left out of the drop-rate
/// guard.
const REREAD_REASONS: [&str; 2] = ["already_in_dataset", "duplicate_across_runs"];

/// What one increment of the dataset holds: the numbers the drift guards compare.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncrementProfile {
    /// Episodes that entered scoring.
    pub episodes_in: u64,
    /// Rows written.
    pub rows: u64,
    /// Response tokens of those rows.
    pub response_tokens: u64,
    /// Episodes dropped per reason.
    pub dropped: BTreeMap<String, u64>,
    /// Relevance of the scored rows (kept and dropped by the threshold).
    pub relevance: RelevanceHistogram,
}

impl IncrementProfile {
    /// The profile of cumulative step counts and relevance histogram.
    pub fn of(counts: &StepCounts, relevance: &RelevanceHistogram) -> Self {
        IncrementProfile {
            episodes_in: counts.episodes_in,
            rows: counts.rows_written,
            response_tokens: counts.response_tokens,
            dropped: counts
                .dropped
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect(),
            relevance: relevance.clone(),
        }
    }

    /// The profile of a manifest's cumulative statistics (`stats.episodes` and
    /// `stats.relevance_histogram`); `None` for a manifest without them.
    pub fn of_manifest_stats(stats: &serde_json::Value) -> Option<Self> {
        let counts: StepCounts = serde_json::from_value(stats.get("episodes")?.clone()).ok()?;
        let relevance: RelevanceHistogram = stats
            .get("relevance_histogram")
            .and_then(|h| serde_json::from_value(h.clone()).ok())
            .unwrap_or_default();
        Some(Self::of(&counts, &relevance))
    }

    /// `self - earlier`: what was added since `earlier` (both cumulative); `None` when
    /// `earlier` is not a prefix of `self` (the dataset was rebuilt or rewritten).
    pub fn minus(&self, earlier: &IncrementProfile) -> Option<IncrementProfile> {
        let mut dropped = BTreeMap::new();
        for (reason, n) in &self.dropped {
            let before = earlier.dropped.get(reason).copied().unwrap_or(0);
            let d = n.checked_sub(before)?;
            if d > 0 {
                dropped.insert(reason.clone(), d);
            }
        }
        if earlier
            .dropped
            .keys()
            .any(|r| !self.dropped.contains_key(r))
        {
            return None;
        }
        Some(IncrementProfile {
            episodes_in: self.episodes_in.checked_sub(earlier.episodes_in)?,
            rows: self.rows.checked_sub(earlier.rows)?,
            response_tokens: self.response_tokens.checked_sub(earlier.response_tokens)?,
            dropped,
            relevance: self.relevance.minus(&earlier.relevance)?,
        })
    }

    /// Mean response tokens per row (`None` without rows).
    pub fn tokens_per_row(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.response_tokens as f64 / self.rows as f64)
    }

    /// Fraction of the episodes that entered scoring dropped for `reason`.
    pub fn drop_rate(&self, reason: &str) -> f64 {
        let n = self.dropped.get(reason).copied().unwrap_or(0);
        n as f64 / self.episodes_in.max(1) as f64
    }
}

/// Compares tonight's increment with the baseline (the last published night with at least
/// `guards.min_rows` rows). Checks that cannot be made say why in `skipped`.
pub fn check(
    guards: &DriftGuards,
    tonight: &IncrementProfile,
    baseline: Option<&IncrementProfile>,
) -> Vec<DriftCheck> {
    let mut out = Vec::new();
    let skip_all = match baseline {
        _ if !guards.any() => return out,
        None => Some("no earlier night to compare with".to_string()),
        Some(_) if tonight.rows < guards.min_rows => Some(format!(
            "tonight has {} new rows, fewer than guards.min_rows {}",
            tonight.rows, guards.min_rows
        )),
        Some(b) if b.rows < guards.min_rows => Some(format!(
            "the previous night has {} rows, fewer than guards.min_rows {}",
            b.rows, guards.min_rows
        )),
        Some(_) => None,
    };
    let mut push = |name: String, threshold: f64, measured: Option<(f64, f64, f64)>| {
        let (value, tonight_v, baseline_v) = match (&skip_all, measured) {
            (None, Some(m)) => (Some(m.0), Some(m.1), Some(m.2)),
            _ => (None, None, None),
        };
        out.push(DriftCheck {
            passed: value.is_none_or(|v| v <= threshold),
            skipped: match (&skip_all, value) {
                (Some(why), _) => Some(why.clone()),
                (None, None) => Some("not measurable on these nights".into()),
                _ => None,
            },
            name,
            value,
            threshold,
            tonight: tonight_v,
            baseline: baseline_v,
        });
    };
    let b = baseline.cloned().unwrap_or_default();
    if let Some(t) = guards.max_relevance_ks {
        let m = tonight.relevance.ks_distance(&b.relevance).map(|ks| {
            let median = |h: &RelevanceHistogram| h.quantile(0.5).unwrap_or(f64::NAN);
            (ks, median(&tonight.relevance), median(&b.relevance))
        });
        push("relevance_ks".into(), t, m);
    }
    if let Some(t) = guards.max_drop_rate_change {
        // Rows skipped because the dataset has them say how much was re-read, not what
        // the data is like.
        let reasons: std::collections::BTreeSet<&String> = tonight
            .dropped
            .keys()
            .chain(b.dropped.keys())
            .filter(|r| !REREAD_REASONS.contains(&r.as_str()))
            .collect();
        if reasons.is_empty() {
            push("drop_rate".into(), t, Some((0.0, 0.0, 0.0)));
        }
        for r in reasons {
            let (now, then) = (tonight.drop_rate(r), b.drop_rate(r));
            push(
                format!("drop_rate.{r}"),
                t,
                Some(((now - then).abs(), now, then)),
            );
        }
    }
    if let Some(t) = guards.max_tokens_per_row_change {
        let m = match (tonight.tokens_per_row(), b.tokens_per_row()) {
            (Some(now), Some(then)) if then > 0.0 => Some(((now - then).abs() / then, now, then)),
            _ => None,
        };
        push("tokens_per_row".into(), t, m);
    }
    out
}

/// One drift check: what was measured, against what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftCheck {
    /// `relevance_ks`, `drop_rate.<reason>` or `tokens_per_row`.
    pub name: String,
    /// The change measured (KS distance, absolute rate change, relative change); `None` when
    /// skipped.
    pub value: Option<f64>,
    /// The configured limit.
    pub threshold: f64,
    /// Tonight's figure (median relevance, drop rate, tokens per row).
    pub tonight: Option<f64>,
    /// The previous night's figure.
    pub baseline: Option<f64>,
    /// Within the threshold (or skipped).
    pub passed: bool,
    /// Why the check was not made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl std::fmt::Display for DriftCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.skipped, self.value) {
            (Some(why), _) => write!(f, "{}: skipped ({why})", self.name),
            (None, Some(v)) => write!(
                f,
                "{}: {v:.4} {} {} (tonight {:.4}, previous night {:.4})",
                self.name,
                if self.passed { "<=" } else { ">" },
                self.threshold,
                self.tonight.unwrap_or(f64::NAN),
                self.baseline.unwrap_or(f64::NAN)
            ),
            (None, None) => write!(f, "{}: not measured", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[f32]) -> RelevanceHistogram {
        let mut h = RelevanceHistogram::default();
        for v in values {
            h.add(*v);
        }
        h
    }

    #[test]
    fn bins_are_monotone_and_their_centres_lie_inside_them() {
        let values: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.37).collect();
        let bins: Vec<i32> = values.iter().filter_map(|v| bin(*v)).collect();
        assert!(bins.windows(2).all(|w| w[0] <= w[1]), "{bins:?}");
        for v in values {
            let c = bin_centre(bin(v).expect("finite"));
            // Same bin, or the centre within one bin width (4.4%) of the value.
            assert!(
                (c - f64::from(v)).abs() <= 0.05 * (1.0 + f64::from(v).abs()),
                "{v} -> {c}"
            );
        }
        assert_eq!(bin(f32::NAN), None);
    }

    #[test]
    fn the_median_and_the_ks_distance_follow_the_values() {
        let a = hist(&(0..1000).map(|i| i as f32 / 100.0).collect::<Vec<_>>());
        let median = a.quantile(0.5).expect("values");
        assert!((median - 5.0).abs() < 0.3, "{median}");
        assert_eq!(a.ks_distance(&a), Some(0.0));
        // Shifted by half the range: half the mass moves past the other's median.
        let b = hist(
            &(0..1000)
                .map(|i| 5.0 + i as f32 / 100.0)
                .collect::<Vec<_>>(),
        );
        let ks = a.ks_distance(&b).expect("values");
        assert!((ks - 0.5).abs() < 0.05, "{ks}");
        assert_eq!(a.ks_distance(&RelevanceHistogram::default()), None);
    }

    #[test]
    fn an_increment_is_the_difference_of_cumulative_profiles() {
        let mut before = StepCounts {
            episodes_in: 10,
            rows_written: 8,
            response_tokens: 80,
            ..Default::default()
        };
        before.drop_n(super::super::steps::DropReason::LowRelevance, 2);
        let mut after = before.clone();
        after.episodes_in += 5;
        after.rows_written += 5;
        after.response_tokens += 100;
        let (h1, mut h2) = (hist(&[1.0, 2.0]), hist(&[1.0, 2.0]));
        h2.merge(&hist(&[7.0]));
        let inc = IncrementProfile::of(&after, &h2)
            .minus(&IncrementProfile::of(&before, &h1))
            .expect("prefix");
        assert_eq!(
            (inc.episodes_in, inc.rows, inc.response_tokens),
            (5, 5, 100)
        );
        assert!(inc.dropped.is_empty());
        assert_eq!(inc.relevance, hist(&[7.0]));
        assert_eq!(inc.tokens_per_row(), Some(20.0));
        // A rebuilt dataset is not a prefix.
        assert!(IncrementProfile::of(&before, &h1)
            .minus(&IncrementProfile::of(&after, &h2))
            .is_none());
    }

    #[test]
    fn a_guard_fails_only_past_its_threshold_and_skips_small_nights() {
        let night = |rows: u64, tokens: u64, low: u64, values: &[f32]| IncrementProfile {
            episodes_in: rows + low,
            rows,
            response_tokens: tokens,
            dropped: [("low_relevance".to_string(), low)].into_iter().collect(),
            relevance: hist(values),
        };
        let spread: Vec<f32> = (0..200).map(|i| i as f32 / 20.0).collect();
        let shifted: Vec<f32> = spread.iter().map(|v| v + 8.0).collect();
        let guards = DriftGuards {
            max_relevance_ks: Some(0.3),
            max_drop_rate_change: Some(0.1),
            max_tokens_per_row_change: Some(0.5),
            min_rows: 100,
            enforce: true,
        };
        let base = night(180, 1800, 20, &spread);
        let same = check(&guards, &night(180, 1900, 22, &spread), Some(&base));
        assert!(
            same.iter().all(|c| c.passed && c.skipped.is_none()),
            "{same:?}"
        );
        let drifted = check(&guards, &night(100, 3000, 100, &shifted), Some(&base));
        let failed: Vec<&str> = drifted
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failed,
            ["relevance_ks", "drop_rate.low_relevance", "tokens_per_row"]
        );
        let small = check(&guards, &night(10, 3000, 100, &shifted), Some(&base));
        assert!(small.iter().all(|c| c.passed && c.skipped.is_some()));
        assert!(check(&guards, &base, None)
            .iter()
            .all(|c| c.passed && c.skipped.is_some()));
        assert!(check(&DriftGuards::default(), &base, Some(&base)).is_empty());
    }
}
