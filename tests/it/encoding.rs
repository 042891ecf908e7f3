//! The compact encoding against the lossless one on real scored data: every coded log-prob
//! within the code's bound, the KL a trainer computes within the documented bound
//! (docs/CONTRACT.md "Compact encoding"), everything else stored exactly; and `validate` holds
//! the student-side invariants.

use crate::common;
use crate::common::temp_dir;

use std::path::Path;
use std::sync::OnceLock;

use hindsight::pipeline::steps::score::output_row;
use hindsight::score::contexts::prepare_episode;
use hindsight::score::logprobs::kl_topk_tail;
use hindsight::score::{RelevanceMethod, Scorer, ScorerConfig};
use hindsight::sink::encoding::{error_bound, CODE_FLOOR};
use hindsight::sink::{validate, DatasetMeta, Encoding, Manifest, OutputRow, ShardWriter};

const KS: usize = 8;

/// Scored rows of every sample-data episode with a logged response (with K_s = 8) and their metadata.
fn scored() -> &'static (Vec<OutputRow>, DatasetMeta) {
    static ROWS: OnceLock<(Vec<OutputRow>, DatasetMeta)> = OnceLock::new();
    ROWS.get_or_init(|| {
        let m = common::model();
        let all = format!("{}/sample-data", env!("CARGO_MANIFEST_DIR"));
        let run = common::run(&[&all], None);
        let mut eps = Vec::new();
        let mut prepared = Vec::new();
        for ep in run.episodes.iter().filter(|e| e.completion.is_some()) {
            let t = hindsight::template::builtin(&ep.teacher_template);
            if let Ok(p) = prepare_episode(&m.tokenizer, ep, t.as_ref()) {
                eps.push(ep);
                prepared.push(p);
            }
        }
        assert!(eps.len() >= 10, "{} episodes", eps.len());
        let cfg = ScorerConfig {
            student_top_k: KS,
            ..ScorerConfig::default()
        };
        let requests: Vec<_> = prepared.iter().map(|p| p.request.clone()).collect();
        let (scores, _) = Scorer::new(&m.transformer, cfg.clone())
            .score(&requests)
            .expect("score");
        let rows = eps
            .iter()
            .zip(&prepared)
            .zip(&scores)
            .map(|((ep, p), s)| output_row(ep, p, s, RelevanceMethod::ControlKl))
            .collect();
        let meta = DatasetMeta::new(
            &m.info,
            cfg.top_k,
            RelevanceMethod::ControlKl,
            None,
            &serde_json::json!({"scorer": cfg}),
        );
        (rows, meta)
    })
}

/// Writes `rows` as a one-shard dataset in `encoding`; returns the rows read back and the
/// shard's size.
fn write_and_read(
    dir: &Path,
    rows: &[OutputRow],
    meta: &DatasetMeta,
    encoding: Encoding,
) -> (Vec<OutputRow>, u64) {
    let meta = meta.clone().with_layout(KS, encoding);
    let mut w = ShardWriter::new(dir, "c0", meta.clone(), Default::default()).expect("writer");
    w.write_rows(rows.iter().cloned()).expect("write");
    let shards = w.finish().expect("finish");
    let bytes = shards.iter().map(|s| s.bytes).sum();
    Manifest::new(meta, shards, serde_json::json!({}))
        .write(dir)
        .expect("manifest");
    let rep = validate(dir).expect("validate");
    assert!(rep.is_ok(), "{rep}");
    (common::manifest_rows(dir), bytes)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn compact_encoding_stays_within_the_documented_bound() {
    let (rows, meta) = scored();
    let base = temp_dir("encoding-fidelity");
    let (exact, lossless_bytes) =
        write_and_read(&base.join("lossless"), rows, meta, Encoding::Lossless);
    let (compact, compact_bytes) =
        write_and_read(&base.join("compact"), rows, meta, Encoding::Compact);
    assert_eq!(&exact, rows, "lossless is lossless");
    assert!(
        compact_bytes * 2 < lossless_bytes,
        "compact {compact_bytes} B vs lossless {lossless_bytes} B"
    );
    let (mut kl_max, mut kl_sum, mut rkl_max, mut rkl_sum, mut n) = (0f64, 0f64, 0f64, 0f64, 0);
    for (x, c) in exact.iter().zip(&compact) {
        // Not coded: identical.
        assert_eq!(c.teacher_topk_ids, x.teacher_topk_ids);
        assert_eq!(c.student_topk_ids, x.student_topk_ids);
        assert_eq!(c.teacher_logprobs, x.teacher_logprobs);
        assert_eq!(c.student_logprobs, x.student_logprobs);
        assert_eq!(c.teacher_tail_logmass, x.teacher_tail_logmass);
        assert_eq!(c.teacher_logz, x.teacher_logz);
        assert_eq!(c.student_logz, x.student_logz);
        // The student's snapshots are not stored.
        assert_eq!(c.student_topk_logprobs, None);
        assert_eq!(c.student_topk_logprobs_self, None);
        // Every coded value within the code's bound (the floor where below it).
        let t_at_s = x.teacher_logprobs_at_student_topk.as_deref().expect("K_s");
        let c_at_s = c.teacher_logprobs_at_student_topk.as_deref().expect("K_s");
        for (&want, &got) in x
            .teacher_topk_logprobs
            .iter()
            .chain(t_at_s)
            .zip(c.teacher_topk_logprobs.iter().chain(c_at_s))
        {
            if f64::from(want) >= CODE_FLOOR {
                let d = (f64::from(got) - f64::from(want)).abs();
                assert!(d <= error_bound(want), "{want} coded as {got}");
            } else {
                assert_eq!(got, CODE_FLOOR as f32, "{want} below the floor");
            }
        }
        // The KL a trainer computes from the stored values, both directions.
        let (k, s_topk) = (x.k, x.student_topk_logprobs.as_deref().expect("lossless"));
        let own = x.student_topk_logprobs_self.as_deref().expect("lossless");
        for t in 0..x.completion_ids.len() {
            let r = t * k..(t + 1) * k;
            let s = f64s(&s_topk[r.clone()]);
            let want = kl_topk_tail(&f64s(&x.teacher_topk_logprobs[r.clone()]), &s);
            let got = kl_topk_tail(&f64s(&c.teacher_topk_logprobs[r]), &s);
            kl_max = kl_max.max((got - want).abs());
            kl_sum += (got - want).abs();
            let r = t * KS..(t + 1) * KS;
            let o = f64s(&own[r.clone()]);
            let want = kl_topk_tail(&o, &f64s(&t_at_s[r.clone()]));
            let got = kl_topk_tail(&o, &f64s(&c_at_s[r]));
            rkl_max = rkl_max.max((got - want).abs());
            rkl_sum += (got - want).abs();
            n += 1;
        }
    }
    let (kl_mean, rkl_mean) = (kl_sum / n as f64, rkl_sum / n as f64);
    eprintln!(
        "KL error max {kl_max:.4} mean {kl_mean:.5}; reverse max {rkl_max:.4} mean {rkl_mean:.5}"
    );
    // The documented bound (docs/CONTRACT.md): per-token KL error at most 0.15 nats, mean at
    // most 0.01 nats.
    assert!(kl_max <= 0.15 && kl_mean <= 0.01, "{kl_max} {kl_mean}");
    assert!(rkl_max <= 0.15 && rkl_mean <= 0.01, "{rkl_max} {rkl_mean}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn validate_holds_the_student_side_invariants() {
    let (rows, meta) = scored();
    let base = temp_dir("encoding-invariants");
    // A teacher log-prob at a student top-k id that contradicts the teacher's own top-k entry
    // for the same id.
    let mut bad = rows[0].clone();
    let ids = bad.student_topk_ids.clone().expect("K_s");
    let j = (0..KS)
        .find(|&j| bad.teacher_topk_ids[..bad.k].contains(&ids[j]))
        .expect("the two top-ks overlap at t=0");
    if let Some(v) = bad.teacher_logprobs_at_student_topk.as_mut() {
        v[j] -= 0.5;
    }
    // A student top-k out of order.
    let mut unsorted = rows[1].clone();
    if let Some(v) = unsorted.student_topk_logprobs_self.as_mut() {
        v.swap(0, 1);
    }
    let dir = base.join("bad");
    let meta2 = meta.clone().with_layout(KS, Encoding::Lossless);
    let mut w = ShardWriter::new(&dir, "c0", meta2.clone(), Default::default()).expect("writer");
    w.write_rows([bad, unsorted, rows[2].clone()])
        .expect("write");
    let shards = w.finish().expect("finish");
    Manifest::new(meta2, shards, serde_json::json!({}))
        .write(&dir)
        .expect("manifest");
    let rep = validate(&dir).expect("validate");
    assert!(
        !rep.find(
            Some("teacher_logprobs_at_student_topk"),
            "differs from its teacher_topk_logprobs entry"
        )
        .is_empty(),
        "{rep}"
    );
    assert!(
        !rep.find(Some("student_topk_logprobs_self"), "not sorted")
            .is_empty(),
        "{rep}"
    );
    // A row with the student side missing cannot be written into a K_s > 0 dataset.
    let mut missing = rows[2].clone();
    missing.student_topk_ids = None;
    let mut w = ShardWriter::new(
        base.join("missing"),
        "c0",
        meta.clone().with_layout(KS, Encoding::Lossless),
        Default::default(),
    )
    .expect("writer");
    assert!(w.write_row(missing).is_err());
    let _ = std::fs::remove_dir_all(&base);
}

/// A NaN has no compact code (it used to code as 0, i.e. log-prob 0, p = 1) and passes every
/// threshold comparison: no encoding writes a row that holds one, naming the column.
#[test]
fn rows_with_nan_are_refused_by_every_encoding() {
    use hindsight::sink::schema::Layout;
    let (rows, meta) = scored();
    let mut bad = rows[0].clone();
    bad.teacher_topk_logprobs[3] = f32::NAN;
    for encoding in [Encoding::Lossless, Encoding::Compact] {
        let layout = Layout {
            top_k: meta.top_k,
            student_top_k: meta.student_top_k,
            encoding,
        };
        assert!(hindsight::sink::rows_to_batch(&rows[..2], &layout).is_ok());
        let e = hindsight::sink::rows_to_batch(&[rows[1].clone(), bad.clone()], &layout)
            .expect_err("a NaN row is refused");
        assert!(e.to_string().contains("teacher_topk_logprobs"), "{e}");
    }
}
