//! One row: the checks each contract column declares (shape, domain), then the invariants
//! between columns (top-k sorted and holding the mass, the response token's log-prob, advantages).

use super::*;
use crate::sink::columns::{Domain, Shape, Width};

/// Row-level invariants. Per-token checks report the first offending position per column.
/// Compact datasets are checked on the decoded values, with the code's error bound added to
/// each tolerance.
pub(super) fn check_row(
    r: &OutputRow,
    layout: &Layout,
    vocab: usize,
    file: &str,
    row: u64,
    rep: &mut ValidationReport,
) {
    let (k, ks) = (layout.top_k, layout.student_top_k);
    let compact = layout.encoding == Encoding::Compact;
    let mut bad =
        |column: &str, message: String| rep.push(Some(file), Some(row), Some(column), message);
    if r.schema_version != SCHEMA_VERSION {
        bad(
            "schema_version",
            format!("is {}, expected {SCHEMA_VERSION}", r.schema_version),
        );
    }
    // Label columns may only take the values the column table allows.
    for c in &CONTRACT {
        let (Some(allowed), Values::Text(_, get, _)) = (c.allowed, c.values) else {
            continue;
        };
        let v = get(r);
        if !allowed.contains(&v) {
            bad(c.name, format!("unknown value '{v}'"));
        }
    }
    // Columns the layout leaves null must be null; the others must not be.
    for c in &CONTRACT {
        let present = match c.values {
            Values::OptTopKI32(get, _) => get(r).is_some(),
            Values::OptTopKF32(get, _) => get(r).is_some(),
            _ => continue,
        };
        let omitted = layout.omitted(c);
        if present == omitted {
            let why = if omitted {
                format!(
                    "is set, but the dataset's layout (K_s={ks}, {}) leaves it null",
                    layout.encoding.as_str()
                )
            } else {
                format!(
                    "is null, but the dataset's layout (K_s={ks}, {}) stores it",
                    layout.encoding.as_str()
                )
            };
            bad(c.name, why);
        }
    }
    let t = r.completion_ids.len();
    if t == 0 {
        bad("completion_ids", "empty completion".into());
    }
    if r.num_completion_tokens as i64 != t as i64 {
        bad(
            "num_completion_tokens",
            format!(
                "is {}, but completion_ids has {t} tokens",
                r.num_completion_tokens
            ),
        );
    }
    let aligned = check_columns(r, layout, vocab, &mut bad);
    let s_ids = r.student_topk_ids.as_deref();
    let s_self = r.student_topk_logprobs_self.as_deref();
    let t_at_s = r.teacher_logprobs_at_student_topk.as_deref();
    if !aligned || k == 0 {
        return;
    }
    // A stored log-prob equals the exact one within this tolerance: float32 rounding, plus the
    // code's error bound in the compact encoding.
    let tol = |exact: f32| {
        if compact && exact as f64 >= encoding::CODE_FLOOR {
            TOPK_MATCH_TOLERANCE + encoding::error_bound(exact)
        } else if compact {
            f64::INFINITY
        } else {
            TOPK_MATCH_TOLERANCE
        }
    };
    let mass_tol = if compact {
        COMPACT_MASS_TOLERANCE
    } else {
        MASS_TOLERANCE
    };
    let mut sorted_bad = None;
    let mut mass_bad = None;
    let mut match_bad = None;
    let mut adv_bad = None;
    for i in 0..t {
        let lp = &r.teacher_topk_logprobs[i * k..(i + 1) * k];
        let ids = &r.teacher_topk_ids[i * k..(i + 1) * k];
        if sorted_bad.is_none() && lp.windows(2).any(|w| w[0] < w[1]) {
            sorted_bad = Some(i);
        }
        if mass_bad.is_none() {
            let mass: f64 = lp.iter().map(|&x| (x as f64).exp()).sum::<f64>()
                + (r.teacher_tail_logmass[i] as f64).exp();
            if !within(mass - 1.0, mass_tol) {
                mass_bad = Some((i, mass));
            }
        }
        if match_bad.is_none() {
            if let Some(j) = ids.iter().position(|&id| id == r.completion_ids[i]) {
                let d = (lp[j] as f64 - r.teacher_logprobs[i] as f64).abs();
                if !within(d, tol(r.teacher_logprobs[i])) {
                    match_bad = Some((i, lp[j], r.teacher_logprobs[i]));
                }
            }
        }
        if adv_bad.is_none() {
            let want = r.teacher_logprobs[i] as f64 - r.student_logprobs[i] as f64;
            if !within(r.advantages[i] as f64 - want, ADVANTAGE_TOLERANCE) {
                adv_bad = Some((i, r.advantages[i], want));
            }
        }
    }
    if let Some(i) = sorted_bad {
        bad(
            "teacher_topk_logprobs",
            format!("top-k not sorted descending at t={i}"),
        );
    }
    if let Some((i, mass)) = mass_bad {
        bad(
            "teacher_tail_logmass",
            format!(
                "sum exp(top-k) + exp(tail) = {mass:.6} at t={i}, expected 1 within {mass_tol}"
            ),
        );
    }
    if let Some((i, a, b)) = match_bad {
        bad("teacher_topk_logprobs", format!("top-k log-prob {a} of the completion token at t={i} differs from teacher_logprobs {b}"));
    }
    if let Some((i, a, want)) = adv_bad {
        bad(
            "advantages",
            format!("advantages[{i}] = {a} != teacher - student = {want}"),
        );
    }
    if let (Some(s_ids), Some(t_at_s)) = (s_ids, t_at_s) {
        check_student_side(r, k, ks, s_ids, s_self, t_at_s, &tol, &mut bad);
    }
}

/// The checks each contract column declares: T values for a per-token column, T × K for a
/// top-k one (K or K_s), and its domain (token ids in the vocabulary, log-probs finite and ≤ 0,
/// log-normalisers and scores finite, masks 0 or 1). Reports the first offending position per
/// column; returns whether every per-token and top-k column is aligned with T.
fn check_columns(
    r: &OutputRow,
    layout: &Layout,
    vocab: usize,
    bad: &mut dyn FnMut(&str, String),
) -> bool {
    let t = r.completion_ids.len();
    let mut aligned = true;
    for c in &CONTRACT {
        if let Some(Some(x)) = c.values.float(r) {
            if c.domain == Domain::Finite && !x.is_finite() {
                bad(c.name, format!("{x} is not finite"));
            }
            continue;
        }
        let Some(v) = c.values.numbers(r) else {
            continue;
        };
        match c.shape() {
            Shape::PerToken if v.len() != t => {
                aligned = false;
                bad(
                    c.name,
                    format!("length {} != T = {t} (len(completion_ids))", v.len()),
                );
            }
            Shape::TopK => {
                let width = match c.width {
                    Width::Teacher => layout.top_k,
                    Width::Student => layout.student_top_k,
                };
                if v.len() != t * width {
                    aligned = false;
                    bad(
                        c.name,
                        format!(
                            "{} values != T × K = {t} × {width} (len(completion_ids) × width)",
                            v.len()
                        ),
                    );
                }
            }
            _ => {}
        }
        let vocab_size = vocab as f64;
        let found = match c.domain {
            Domain::Any | Domain::Finite => None,
            Domain::TokenId => v.find(|x| x < 0.0 || x >= vocab_size).map(|i| {
                format!(
                    "token id {} at index {i} is outside the vocabulary ({vocab})",
                    v.show(i)
                )
            }),
            Domain::LogProb => v
                .find(|x| !x.is_finite() || x > 0.0)
                .map(|i| format!("log-prob {} at index {i} is not finite and <= 0", v.show(i))),
            Domain::LogNormaliser => v
                .find(|x| !x.is_finite())
                .map(|i| format!("log-normaliser {} at t={i} is not finite", v.show(i))),
            Domain::Mask => v
                .find(|x| x != 0.0 && x != 1.0)
                .map(|i| format!("value {} at t={i} is not 0 or 1", v.show(i))),
        };
        if let Some(message) = found {
            bad(c.name, message);
        }
    }
    aligned
}

/// The student-side columns agree with the rest of the row: the student's own top-k is sorted
/// and holds at most all the mass; where its id is the response token, its log-prob is
/// `student_logprobs` and the teacher's there is `teacher_logprobs`; where its id is also in the
/// teacher's top-k, the teacher's log-prob there is the same in both columns.
#[allow(clippy::too_many_arguments)]
fn check_student_side(
    r: &OutputRow,
    k: usize,
    ks: usize,
    s_ids: &[i32],
    s_self: Option<&[f32]>,
    t_at_s: &[f32],
    tol: &dyn Fn(f32) -> f64,
    bad: &mut dyn FnMut(&str, String),
) {
    if ks == 0 {
        return;
    }
    let t = r.completion_ids.len();
    let mut sorted_bad = None;
    let mut mass_bad = None;
    let mut self_bad = None;
    let mut teacher_bad = None;
    let mut cross_bad = None;
    for i in 0..t {
        let ids = &s_ids[i * ks..(i + 1) * ks];
        let tl = &t_at_s[i * ks..(i + 1) * ks];
        if let Some(sl) = s_self.map(|s| &s[i * ks..(i + 1) * ks]) {
            if sorted_bad.is_none() && sl.windows(2).any(|w| w[0] < w[1]) {
                sorted_bad = Some(i);
            }
            let mass: f64 = sl.iter().map(|&x| (x as f64).exp()).sum();
            if mass_bad.is_none() && mass > 1.0 + MASS_TOLERANCE {
                mass_bad = Some((i, mass));
            }
            if let Some(j) = ids.iter().position(|&id| id == r.completion_ids[i]) {
                let d = (sl[j] as f64 - r.student_logprobs[i] as f64).abs();
                if self_bad.is_none() && !within(d, TOPK_MATCH_TOLERANCE) {
                    self_bad = Some((i, sl[j], r.student_logprobs[i]));
                }
            }
        }
        if let Some(j) = ids.iter().position(|&id| id == r.completion_ids[i]) {
            let d = (tl[j] as f64 - r.teacher_logprobs[i] as f64).abs();
            if teacher_bad.is_none() && !within(d, tol(r.teacher_logprobs[i])) {
                teacher_bad = Some((i, tl[j], r.teacher_logprobs[i]));
            }
        }
        let t_ids = &r.teacher_topk_ids[i * k..(i + 1) * k];
        let t_lp = &r.teacher_topk_logprobs[i * k..(i + 1) * k];
        for (j, id) in ids.iter().enumerate() {
            if let Some(m) = t_ids.iter().position(|x| x == id) {
                // Both are stored approximations of one exact value in the compact encoding.
                let d = (tl[j] as f64 - t_lp[m] as f64).abs();
                let allowed = tol(tl[j].min(t_lp[m])) * 2.0;
                if cross_bad.is_none() && !within(d, allowed) {
                    cross_bad = Some((i, *id, tl[j], t_lp[m]));
                }
            }
        }
    }
    if let Some(i) = sorted_bad {
        bad(
            "student_topk_logprobs_self",
            format!("student top-k not sorted descending at t={i}"),
        );
    }
    if let Some((i, mass)) = mass_bad {
        bad(
            "student_topk_logprobs_self",
            format!("sum exp(student top-k) = {mass:.6} > 1 at t={i}"),
        );
    }
    if let Some((i, a, b)) = self_bad {
        bad(
            "student_topk_logprobs_self",
            format!(
                "log-prob {a} of the response token at t={i} differs from student_logprobs {b}"
            ),
        );
    }
    if let Some((i, a, b)) = teacher_bad {
        bad("teacher_logprobs_at_student_topk", format!("teacher log-prob {a} of the response token at t={i} differs from teacher_logprobs {b}"));
    }
    if let Some((i, id, a, b)) = cross_bad {
        bad("teacher_logprobs_at_student_topk", format!("teacher log-prob {a} of token {id} at t={i} differs from its teacher_topk_logprobs entry {b}"));
    }
}
