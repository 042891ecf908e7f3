//! The device-side statistics (`score::device_stats`, what a GPU run uses) against the host ones,
//! with the CPU backend running the device code path: same top-k ids, same values to float
//! rounding, on the real model and the sample episodes with every column switched on.

use crate::common;

use hindsight::score::device_stats;
use hindsight::score::logprobs;
use hindsight::score::{
    EpisodeScores, Scorer, ScorerConfig, StatsPlacement, DEFAULT_CONTROL_TOKENS,
};

fn score_with(stats: StatsPlacement) -> Vec<EpisodeScores> {
    let m = common::model();
    let inputs = vec![
        common::sample("wildchat_1m.jsonl"),
        common::sample("sharegpt.json"),
    ];
    let requests = hindsight::bench::episode_requests(&m.tokenizer, &inputs).expect("requests");
    assert!(requests.len() >= 5, "{} requests", requests.len());
    assert!(requests.iter().any(|r| r.followup.is_some()));
    let cfg = ScorerConfig {
        student_top_k: 8,
        control: true,
        followup: true,
        stats,
        ..ScorerConfig::default()
    };
    Scorer::new(&m.transformer, cfg)
        .score(&requests)
        .expect("score")
        .0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn device_statistics_equal_host_statistics_on_real_episodes() {
    let host = score_with(StatsPlacement::Host);
    let device = score_with(StatsPlacement::Device);
    let mut worst = 0f32;
    let mut tokens = 0;
    for (h, d) in host.iter().zip(&device) {
        tokens += h.teacher_logprobs.len();
        assert_eq!(h.teacher_topk_ids, d.teacher_topk_ids, "teacher top-k ids");
        assert_eq!(h.student_topk_ids, d.student_topk_ids, "student top-k ids");
        assert_eq!(h.student_topk_ids.len(), 8 * h.teacher_logprobs.len());
        for (name, a, b) in [
            ("student", &h.student_logprobs, &d.student_logprobs),
            ("teacher", &h.teacher_logprobs, &d.teacher_logprobs),
            ("advantages", &h.advantages, &d.advantages),
            (
                "teacher top-k",
                &h.teacher_topk_logprobs,
                &d.teacher_topk_logprobs,
            ),
            (
                "student at teacher top-k",
                &h.student_topk_logprobs,
                &d.student_topk_logprobs,
            ),
            (
                "student top-k",
                &h.student_topk_logprobs_self,
                &d.student_topk_logprobs_self,
            ),
            (
                "teacher at student top-k",
                &h.teacher_logprobs_at_student_topk,
                &d.teacher_logprobs_at_student_topk,
            ),
            ("tail", &h.teacher_tail_logmass, &d.teacher_tail_logmass),
            ("teacher logz", &h.teacher_logz, &d.teacher_logz),
            ("student logz", &h.student_logz, &d.student_logz),
            ("kl top-k", &h.kl_topk_tail, &d.kl_topk_tail),
            ("kl full", &h.kl_full_vocab, &d.kl_full_vocab),
        ] {
            let diff = max_diff(a, b);
            assert!(diff < 2e-4, "{name}: max |host - device| = {diff}");
            worst = worst.max(diff);
        }
        let (hc, dc) = (
            h.control_kl_topk_tail.as_deref().expect("control"),
            d.control_kl_topk_tail.as_deref().expect("control"),
        );
        // The control's window (its first 8 response tokens) may end inside a head chunk.
        let window = h.teacher_logprobs.len().min(DEFAULT_CONTROL_TOKENS);
        assert_eq!(hc.len(), window);
        assert!(max_diff(hc, dc) < 2e-4);
        match (h.followup, d.followup) {
            (Some(hf), Some(df)) => {
                assert_eq!(hf.tokens, df.tokens);
                assert!((hf.pmi() - df.pmi()).abs() < 2e-3, "{hf:?} vs {df:?}");
                assert!((hf.bare - df.bare).abs() < 2e-3, "{hf:?} vs {df:?}");
            }
            (None, None) => {}
            other => panic!("follow-up scored on one side only: {other:?}"),
        }
    }
    assert!(tokens > 100, "{tokens} response tokens");
    eprintln!("device vs host statistics: {tokens} tokens, max |Δ| {worst:.2e}");
}

/// Deterministic pseudo-random logits, quantised to quarters so that many values tie.
fn rows(n_rows: usize, width: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n_rows)
        .map(|_| {
            (0..width)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) % 64) as f32 / 4.0 - 8.0
                })
                .collect()
        })
        .collect()
}

#[test]
fn device_top_k_equals_host_top_k_with_ties_at_every_width() {
    let dev = candle_core::Device::Cpu;
    for (width, k) in [
        (7, 3),
        (1024, 20),
        (1025, 20),
        (5000, 1),
        (5000, 300),
        (49152, 20),
        (49152, 1000),
        (128_256, 64),
    ] {
        let rs = rows(3, width, width as u64 + k as u64);
        let flat: Vec<f32> = rs.iter().flatten().copied().collect();
        let x = candle_core::Tensor::from_vec(flat, (rs.len(), width), &dev).expect("tensor");
        let (ids, vals) = device_stats::top_k(&x, k).expect("top_k");
        let ids = ids.to_vec2::<u32>().expect("ids");
        let vals = vals.to_vec2::<f32>().expect("vals");
        for (r, row) in rs.iter().enumerate() {
            assert_eq!(
                ids[r],
                logprobs::top_k(row, k),
                "width {width}, k {k}, row {r}"
            );
            let want: Vec<f32> = ids[r].iter().map(|&i| row[i as usize]).collect();
            assert_eq!(vals[r], want);
        }
    }
}

#[test]
fn device_top_k_covers_real_vocabularies_and_refuses_unreducible_rows() {
    assert!(device_stats::device_top_k_supported(128_256, 20));
    assert!(device_stats::device_top_k_supported(262_208, 100));
    // A k close to a wide row's width cannot be reduced to sorts of 1024 columns.
    assert!(!device_stats::device_top_k_supported(3000, 1000));
    assert!(!device_stats::device_top_k_supported(128_256, 2000));
}

#[test]
fn device_normaliser_matches_the_host_one() {
    let dev = candle_core::Device::Cpu;
    let rs = rows(4, 49152, 7);
    let flat: Vec<f32> = rs.iter().flatten().copied().collect();
    let x = candle_core::Tensor::from_vec(flat, (4, 49152), &dev).expect("tensor");
    let lse = device_stats::log_normaliser(&x)
        .expect("lse")
        .flatten_all()
        .expect("flat")
        .to_vec1::<f32>()
        .expect("vec");
    for (row, got) in rs.iter().zip(lse) {
        let want = logprobs::log_sum_exp(row);
        assert!((f64::from(got) - want).abs() < 1e-4, "{got} vs {want}");
    }
}
