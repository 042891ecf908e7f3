//! Per-position distribution statistics, computed in f64 from f32 logits: log-softmax, the
//! teacher's top-k, the tail bucket, and KL estimates.

use crate::model::fastmath;

/// Log-sum-exp of a logit row: f32 exponentials (≈1 ulp) accumulated in f64 lanes. Agrees with
/// an all-f64 computation to ~1e-7 and is several times faster (this runs over the whole
/// vocabulary for every scored row).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = fastmath::max(logits);
    if !max.is_finite() {
        return max as f64;
    }
    max as f64 + sum_exp(logits, max).ln()
}

/// Indices of the `k` largest logits, descending; ties broken by the lower id so the choice is
/// deterministic.
pub fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    // Small sorted buffer (descending); only values beating the current k-th are inserted.
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &x) in logits.iter().enumerate() {
        if best.len() == k {
            let (last, _) = best[k - 1];
            if x <= last || x.is_nan() {
                continue;
            }
        }
        let pos = best.iter().position(|&(v, _)| x > v).unwrap_or(best.len());
        best.insert(pos, (x, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Log of the probability mass outside `top` (ids of one row), computed by summing the excluded
/// entries directly rather than as `1 - Σ top`, which cancels catastrophically when the tail is
/// tiny (a 1e-6 tail would lose most of its digits). `lse` is the row's log-sum-exp. Clamped to
/// at most -1e-7, and to a finite value when the tail underflows.
pub fn tail_log_mass_of_row(logits: &[f32], lse: f64, top: &[u32]) -> f64 {
    let max = fastmath::max(logits);
    let mut sorted: Vec<usize> = top.iter().map(|&i| i as usize).collect();
    sorted.sort_unstable();
    let mut rest = 0f64;
    let mut from = 0;
    for &skip in sorted.iter().chain(std::iter::once(&logits.len())) {
        if skip > from {
            rest += sum_exp(&logits[from..skip.min(logits.len())], max);
        }
        from = skip + 1;
    }
    let lm = if rest > 0.0 {
        (rest.ln() + max as f64 - lse).max(-1e4)
    } else {
        -1e4
    };
    lm.min(-1e-7)
}

/// Σ exp(x - shift) over a slice, f32 exponentials in f64 lanes.
fn sum_exp(xs: &[f32], shift: f32) -> f64 {
    crate::model::fastmath::avx2!(sum_exp_body(xs, shift))
}

#[inline(always)]
fn sum_exp_body(xs: &[f32], shift: f32) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lanes[i] += fastmath::exp(c[i] - shift) as f64;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| fastmath::exp(x - shift) as f64)
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// KL(p ‖ q) estimated on p's top-k plus one tail bucket: `lp`/`lq` are the log-probs of both at
/// p's top-k ids.
pub fn kl_topk_tail(lp: &[f64], lq: &[f64]) -> f64 {
    let mut kl = 0.0;
    let mut mass_p = 0.0;
    let mut mass_q = 0.0;
    for (&a, &b) in lp.iter().zip(lq) {
        let pa = a.exp();
        kl += pa * (a - b);
        mass_p += pa;
        mass_q += b.exp();
    }
    let tail_p = (1.0 - mass_p).max(0.0);
    let tail_q = (1.0 - mass_q).max(1e-12);
    if tail_p > 0.0 {
        kl += tail_p * (tail_p.ln() - tail_q.ln());
    }
    kl
}

/// KL(p ‖ q) over the full vocabulary from two logit rows and their log-sum-exps (the exact
/// value the top-k + tail estimate approximates; used to measure that approximation).
pub fn kl_full(p_logits: &[f32], p_lse: f64, q_logits: &[f32], q_lse: f64) -> f64 {
    crate::model::fastmath::avx2!(kl_full_body(p_logits, p_lse, q_logits, q_lse))
}

#[inline(always)]
fn kl_full_body(p_logits: &[f32], p_lse: f64, q_logits: &[f32], q_lse: f64) -> f64 {
    let pl = p_lse as f32;
    let shift = (p_lse - q_lse) as f32;
    let term = |a: f32, b: f32| fastmath::exp(a - pl) * ((a - b) - shift);
    let mut lanes = [0f64; 8];
    let mut pc = p_logits.chunks_exact(8);
    let mut qc = q_logits.chunks_exact(8);
    for (a, b) in (&mut pc).zip(&mut qc) {
        for i in 0..8 {
            lanes[i] += term(a[i], b[i]) as f64;
        }
    }
    let tail: f64 = pc
        .remainder()
        .iter()
        .zip(qc.remainder())
        .map(|(&a, &b)| term(a, b) as f64)
        .sum();
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_descending_and_breaks_ties_by_id() {
        let logits = [1.0, 3.0, 3.0, -1.0, 2.0];
        assert_eq!(top_k(&logits, 3), vec![1, 2, 4]);
        assert_eq!(top_k(&logits, 10).len(), 5);
    }

    #[test]
    fn log_sum_exp_matches_direct_sum() {
        let logits = [0.5f32, -1.25, 2.0];
        let direct: f64 = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&logits) - direct).abs() < 1e-6);
    }

    #[test]
    fn tail_of_row_is_accurate_when_tiny() {
        // One dominant logit: the tail is ~ (n-1) * e^-20, far below f64's 1 - Σ resolution
        // only in relative terms; the direct sum keeps full precision.
        let mut logits = vec![0f32; 1000];
        logits[7] = 20.0;
        let lse = log_sum_exp(&logits);
        let exact = (999f64).ln() - 20.0 - (1.0 + 999f64 * (-20f64).exp()).ln();
        let got = tail_log_mass_of_row(&logits, lse, &[7]);
        assert!((got - exact).abs() < 1e-5, "{got} vs {exact}");
    }

    #[test]
    fn tail_bucket_makes_kl_exact_for_two_outcomes() {
        // p = (0.7, 0.3), q = (0.4, 0.6): top-1 plus tail covers the whole distribution.
        let kl = kl_topk_tail(&[0.7f64.ln()], &[0.4f64.ln()]);
        let exact = 0.7 * (0.7f64 / 0.4).ln() + 0.3 * (0.3f64 / 0.6).ln();
        assert!((kl - exact).abs() < 1e-12);
    }
}
