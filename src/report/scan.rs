//! One streaming pass over the rows: histograms, top-k coverage sums and the sample picks.

use super::*;

/// Streaming accumulation over all rows: histograms, coverage sums and the sample choice.
pub(super) struct Scan {
    pub(super) per_group: usize,
    pub(super) relevance: Vec<f64>,
    pub(super) lengths: Vec<f64>,
    pub(super) prompt_lengths: Vec<f64>,
    pub(super) advantages: Histogram,
    pub(super) coverage_ks: Vec<usize>,
    pub(super) coverage_sums: Vec<f64>,
    /// Rows sorted by relevance, highest first (at most `per_group`).
    pub(super) highest: Vec<OutputRow>,
    pub(super) lowest: Vec<OutputRow>,
    /// Rows with the smallest hash of their sample_id: a deterministic "random" pick.
    pub(super) random: Vec<(u64, OutputRow)>,
}

impl Scan {
    pub(super) fn new(per_group: usize, k: usize) -> Self {
        let mut ks: Vec<usize> = [1, 2, 5, 10, 20, 50, 100]
            .into_iter()
            .filter(|&x| x < k)
            .collect();
        if k > 0 {
            ks.push(k);
        }
        Self {
            per_group,
            relevance: Vec::new(),
            lengths: Vec::new(),
            prompt_lengths: Vec::new(),
            advantages: Histogram::new("advantages", "per-token advantage (nats)", -8.0, 8.0, 32),
            coverage_sums: vec![0.0; ks.len()],
            coverage_ks: ks,
            highest: Vec::new(),
            lowest: Vec::new(),
            random: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, row: OutputRow) {
        if let Some(r) = row.relevance {
            self.relevance.push(f64::from(r));
        }
        self.lengths.push(f64::from(row.num_completion_tokens));
        self.prompt_lengths.push(row.prompt_ids.len() as f64);
        for &a in &row.advantages {
            self.advantages.add(f64::from(a));
        }
        let k = row.k;
        // The coverage needs the student's log-probs at the teacher's top-k (not stored in the
        // compact encoding).
        if let (true, Some(student_topk)) = (k > 0, row.student_topk_logprobs.as_deref()) {
            let mut lp = Vec::with_capacity(k);
            let mut lq = Vec::with_capacity(k);
            let teacher = row.teacher_topk_logprobs.chunks_exact(k);
            let student = student_topk.chunks_exact(k);
            for (tp, sp) in teacher.zip(student) {
                lp.clear();
                lq.clear();
                lp.extend(tp.iter().map(|&x| f64::from(x)));
                lq.extend(sp.iter().map(|&x| f64::from(x)));
                for (i, &kk) in self.coverage_ks.iter().enumerate() {
                    let kk = kk.min(k);
                    self.coverage_sums[i] += kl_topk_tail(&lp[..kk], &lq[..kk]);
                }
            }
        }
        self.choose(row);
    }

    pub(super) fn choose(&mut self, row: OutputRow) {
        let n = self.per_group;
        if n == 0 {
            return;
        }
        // Rows without a relevance (the method does not apply) are only drawn at random.
        let ranked = row.relevance.is_some();
        // Ties are broken by sample_id so the choice does not depend on shard order.
        let higher = |a: &OutputRow, b: &OutputRow| {
            a.relevance > b.relevance || (a.relevance == b.relevance && a.sample_id < b.sample_id)
        };
        let pos = self
            .highest
            .iter()
            .position(|r| higher(&row, r))
            .unwrap_or(self.highest.len());
        if ranked && pos < n {
            self.highest.insert(pos, row.clone());
            self.highest.truncate(n);
        }
        let pos = self
            .lowest
            .iter()
            .position(|r| higher(r, &row))
            .unwrap_or(self.lowest.len());
        if ranked && pos < n {
            self.lowest.insert(pos, row.clone());
            self.lowest.truncate(n);
        }
        let h = xxh3_64(row.sample_id.as_bytes());
        let pos = self
            .random
            .iter()
            .position(|(x, _)| h < *x)
            .unwrap_or(self.random.len());
        // Keep extra candidates: rows already shown as highest/lowest are skipped at the end.
        if pos < 3 * n {
            self.random.insert(pos, (h, row));
            self.random.truncate(3 * n);
        }
    }

    pub(super) fn chosen(&self) -> Vec<(&'static str, OutputRow)> {
        let mut out: Vec<(&'static str, OutputRow)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in &self.highest {
            if seen.insert(r.sample_id.clone()) {
                out.push(("highest", r.clone()));
            }
        }
        for r in &self.lowest {
            if seen.insert(r.sample_id.clone()) {
                out.push(("lowest", r.clone()));
            }
        }
        let mut random = 0;
        for (_, r) in &self.random {
            if random < self.per_group && seen.insert(r.sample_id.clone()) {
                out.push(("random", r.clone()));
                random += 1;
            }
        }
        out
    }

    pub(super) fn histograms(
        &self,
        dropped: &crate::sink::DroppedRelevance,
        threshold: Option<f64>,
    ) -> Vec<Histogram> {
        vec![
            Histogram::kept_vs_dropped(&self.relevance, dropped, threshold, 24),
            self.advantages.clone(),
            Histogram::of(
                "completion_tokens",
                "response length (tokens)",
                &self.lengths,
                24,
            ),
            Histogram::of(
                "prompt_tokens",
                "student prompt length (tokens)",
                &self.prompt_lengths,
                24,
            ),
        ]
    }
}
