//! A fixed-width histogram with clipped end bins and the relevance filter's dropped rows beside the kept ones.

use super::*;

/// A fixed-width histogram; values outside `[lo, hi]` are counted in the end bins.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub key: String,
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    pub n: u64,
    pub mean: f64,
    /// Values clipped into the end bins.
    pub clipped: u64,
    /// Rows dropped by the relevance filter, in the same bins (the relevance histogram only:
    /// kept rows are in `counts`, dropped ones here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Vec<u64>>,
    /// The dataset's relevance threshold, drawn as a line (the relevance histogram only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl Histogram {
    pub(super) fn new(key: &str, label: &str, lo: f64, hi: f64, bins: usize) -> Self {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Self {
            key: key.into(),
            label: label.into(),
            lo,
            hi,
            counts: vec![0; bins.max(1)],
            n: 0,
            mean: 0.0,
            clipped: 0,
            dropped: None,
            threshold: None,
        }
    }

    /// The bin of `x` (clamped into the end bins).
    pub(super) fn bin(&self, x: f64) -> usize {
        let bins = self.counts.len();
        let pos = (x - self.lo) / (self.hi - self.lo) * bins as f64;
        (pos.floor().max(0.0) as usize).min(bins - 1)
    }

    /// The relevance of kept rows (`kept`) against the rows the filter dropped: one range over
    /// both, kept rows in `counts`, dropped ones in `dropped` (each stored value stands for
    /// `count / values.len()` rows, see [`crate::sink::DroppedRelevance`]).
    pub(super) fn kept_vs_dropped(
        kept: &[f64],
        dropped: &crate::sink::DroppedRelevance,
        threshold: Option<f64>,
        bins: usize,
    ) -> Self {
        let d: Vec<f64> = dropped.values.iter().map(|&x| f64::from(x)).collect();
        let all = kept.iter().chain(&d).copied().chain(threshold);
        let lo = all.clone().fold(f64::INFINITY, f64::min);
        let hi = all.fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let mut h = Self::new(
            "relevance",
            "relevance per row: kept and dropped by the filter",
            lo,
            hi,
            bins,
        );
        for &v in kept {
            h.add(v);
        }
        let weight = dropped.count as f64 / d.len().max(1) as f64;
        let mut sums = vec![0.0f64; h.counts.len()];
        for &v in &d {
            sums[h.bin(v)] += weight;
        }
        h.dropped = Some(sums.iter().map(|x| x.round() as u64).collect());
        h.threshold = threshold;
        h
    }

    pub(super) fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.clipped += 1;
            return;
        }
        if x < self.lo || x > self.hi {
            self.clipped += 1;
        }
        let i = self.bin(x);
        self.counts[i] += 1;
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
    }

    pub(super) fn of(key: &str, label: &str, values: &[f64], bins: usize) -> Self {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let mut h = Self::new(key, label, lo, hi, bins);
        for &v in values {
            h.add(v);
        }
        h
    }
}
