//! Per-position results into an episode's scores, and the request checks before any forward pass.

use super::*;

pub(super) fn token_result(
    teacher: &[f32],
    student: &[f32],
    control: Option<&[f32]>,
    target: usize,
    k: usize,
    ks: usize,
) -> TokenResult {
    let lse_t = log_sum_exp(teacher);
    let lse_s = log_sum_exp(student);
    let ids = top_k(teacher, k);
    let topk_lp: Vec<f64> = ids
        .iter()
        .map(|&i| teacher[i as usize] as f64 - lse_t)
        .collect();
    let student_topk: Vec<f64> = ids
        .iter()
        .map(|&i| student[i as usize] as f64 - lse_s)
        .collect();
    let control_kl = control.map(|cl| {
        let lse_c = log_sum_exp(cl);
        let ctl: Vec<f64> = ids.iter().map(|&i| cl[i as usize] as f64 - lse_c).collect();
        kl_topk_tail(&topk_lp, &ctl)
    });
    let student_side = if ks == 0 {
        StudentSide::default()
    } else {
        let ids = top_k(student, ks);
        let at = |row: &[f32], lse: f64| -> Vec<f64> {
            ids.iter().map(|&i| row[i as usize] as f64 - lse).collect()
        };
        StudentSide {
            student: at(student, lse_s),
            teacher: at(teacher, lse_t),
            ids,
        }
    };
    TokenResult {
        student: student[target] as f64 - lse_s,
        teacher: teacher[target] as f64 - lse_t,
        tail: tail_log_mass_of_row(teacher, lse_t, &ids),
        kl: kl_topk_tail(&topk_lp, &student_topk),
        kl_full: kl_full(teacher, lse_t, student, lse_s),
        topk_ids: ids,
        topk_lp,
        student_topk,
        student_side,
        lse_t,
        lse_s,
        control_kl,
    }
}

pub(super) fn mean(xs: &[f32]) -> f32 {
    if xs.is_empty() {
        return 0.0;
    }
    (xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64) as f32
}

pub(super) fn assemble(
    results: Vec<TokenResult>,
    k: usize,
    ks: usize,
    has_control: bool,
) -> EpisodeScores {
    let t = results.len();
    let mut s = EpisodeScores {
        k,
        student_logprobs: Vec::with_capacity(t),
        teacher_logprobs: Vec::with_capacity(t),
        advantages: Vec::with_capacity(t),
        teacher_topk_ids: Vec::with_capacity(t * k),
        teacher_topk_logprobs: Vec::with_capacity(t * k),
        teacher_tail_logmass: Vec::with_capacity(t),
        student_topk_logprobs: Vec::with_capacity(t * k),
        student_k: ks,
        student_topk_ids: Vec::with_capacity(t * ks),
        student_topk_logprobs_self: Vec::with_capacity(t * ks),
        teacher_logprobs_at_student_topk: Vec::with_capacity(t * ks),
        teacher_logz: Vec::with_capacity(t),
        student_logz: Vec::with_capacity(t),
        kl_topk_tail: Vec::with_capacity(t),
        kl_full_vocab: Vec::with_capacity(t),
        control_kl_topk_tail: has_control.then(|| Vec::with_capacity(t)),
        relevance_kl: 0.0,
        relevance_control_kl: None,
        followup: None,
    };
    for r in results {
        let (st, te) = (r.student as f32, r.teacher as f32);
        s.student_logprobs.push(st);
        s.teacher_logprobs.push(te);
        // Computed from the stored f32 values so `advantages == teacher - student` holds exactly.
        s.advantages.push(te - st);
        s.teacher_topk_ids.extend(&r.topk_ids);
        s.teacher_topk_logprobs
            .extend(r.topk_lp.iter().map(|&x| x as f32));
        s.student_topk_logprobs
            .extend(r.student_topk.iter().map(|&x| x as f32));
        s.teacher_tail_logmass.push(r.tail as f32);
        s.student_topk_ids.extend(&r.student_side.ids);
        s.student_topk_logprobs_self
            .extend(r.student_side.student.iter().map(|&x| x as f32));
        s.teacher_logprobs_at_student_topk
            .extend(r.student_side.teacher.iter().map(|&x| x as f32));
        s.teacher_logz.push(r.lse_t as f32);
        s.student_logz.push(r.lse_s as f32);
        s.kl_topk_tail.push(r.kl as f32);
        s.kl_full_vocab.push(r.kl_full as f32);
        if let (Some(v), Some(c)) = (s.control_kl_topk_tail.as_mut(), r.control_kl) {
            v.push(c as f32);
        }
    }
    s.relevance_kl = mean(&s.kl_topk_tail);
    s.relevance_control_kl = s.control_kl_topk_tail.as_deref().map(mean);
    s
}

pub(super) fn validate_request(
    i: usize,
    r: &ScoreRequest,
    vocab: usize,
    control: bool,
) -> Result<()> {
    let err = |m: String| Error::Request {
        id: Some(i.to_string()),
        message: m,
    };
    if r.completion_ids.is_empty() {
        return Err(err("empty completion: nothing to score".into()));
    }
    if r.prompt_ids.is_empty() || r.teacher_prompt_ids.is_empty() {
        return Err(err(
            "empty prompt: the first response token has no context".into()
        ));
    }
    if control && r.control_prompt_ids.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(err("empty control prompt".into()));
    }
    let probe = r.followup.iter().flat_map(|p| {
        p.after_response
            .iter()
            .chain(&p.bare)
            .chain(p.after_history.iter().flatten())
            .chain(&p.target)
    });
    let all = r
        .prompt_ids
        .iter()
        .chain(&r.teacher_prompt_ids)
        .chain(&r.completion_ids)
        .chain(r.control_prompt_ids.iter().flatten())
        .chain(probe);
    if let Some(bad) = all.into_iter().find(|&&id| id as usize >= vocab) {
        return Err(err(format!(
            "token id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    Ok(())
}
