"""Offline self-distillation losses from the stored teacher signal (needs torch).

Every function takes the live student's ``logits`` ([B, L, V], as the model returns them for
``batch["input_ids"]``) and a batch from :func:`hindsight_data.collate` with
``return_tensors="pt"``, whose columns are aligned to those logits. The teacher is never run.

Temperature (docs/CONTRACT.md, "Re-tempering"): the stored log-probs are at temperature 1 and
normalised over the full vocabulary. A temperature ``tau != 1`` is exact only on a distribution
renormalised over the stored ids, so it needs ``tail=False``; with the tail bucket the tempered
teacher is not recoverable and these functions refuse it rather than train on a wrong signal.

Reductions: ``"token_mean"`` (Σ over masked tokens / their count), ``"sequence_mean"`` (each
row's token mean, then the batch mean: TRL's reduction), ``"sum"``, ``"none"`` ([B, L]).
"""

import torch
import torch.nn.functional as F

REDUCTIONS = ("token_mean", "sequence_mean", "sum", "none")


def _reduce(per_token, mask, reduction):
    # where(), not a product: a masked position may hold inf or nan (padding ids, -inf logits).
    mask = mask.to(per_token.dtype)
    per_token = torch.where(mask > 0, per_token, torch.zeros_like(per_token)) * mask
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    if reduction == "token_mean":
        return per_token.sum() / mask.sum().clamp(min=1.0)
    if reduction == "sequence_mean":
        return (per_token.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")


def _check_temperature(temperature, tail):
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    if tail and temperature != 1.0:
        raise ValueError(
            "a temperature other than 1 is exact only on the stored ids renormalised (tail=False); "
            "the full-vocabulary tempered teacher is not recoverable from the stored top-k "
            "(docs/CONTRACT.md, Re-tempering)")


def student_logprobs(logits, temperature=1.0):
    """The live student's log-softmax, in float32 at least, at ``temperature``."""
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _complement_logmass(logp, ids):
    """log of the student's mass outside ``ids``: exact and differentiable (no 1 - Σ)."""
    return torch.logsumexp(logp.scatter(-1, ids, float("-inf")), dim=-1)


def _stored_tail(logp_topk):
    """log(1 - Σ exp(top-k)) of stored log-probs, as TRL's ``add_tail_bucket`` computes it."""
    lse = torch.logsumexp(logp_topk, dim=-1).clamp(max=-1e-7)
    return torch.log(-torch.expm1(lse))


def _renormalised(logp, temperature):
    x = logp / temperature
    return x - torch.logsumexp(x, dim=-1, keepdim=True)


def divergence(s, t, alpha):
    """TRL's ``compute_divergence`` on log-probs over the same support: alpha 0 is
    KL(teacher ‖ student), alpha 1 is KL(student ‖ teacher), in between the generalised JSD
    (1 - alpha)·KL(S ‖ M) + alpha·KL(T ‖ M) with M = (1 - alpha)·S + alpha·T."""
    if alpha == 0.0:
        return (t.exp() * (t - s)).sum(-1)
    if alpha == 1.0:
        return (s.exp() * (s - t)).sum(-1)
    m = torch.logsumexp(torch.stack([s + torch.log(torch.tensor(1 - alpha)),
                                     t + torch.log(torch.tensor(alpha))]), dim=0)
    kl_t = (t.exp() * (t - m)).sum(-1)
    kl_s = (s.exp() * (s - m)).sum(-1)
    return torch.lerp(kl_s, kl_t, alpha)


def topk_divergence(logits, batch, support="teacher", alpha=0.0, tail=True, temperature=1.0,
                    reduction="token_mean", topk=None):
    """The divergence of :func:`divergence` on a stored support plus (``tail=True``) one tail
    bucket, or on the support renormalised (``tail=False``).

    ``support="teacher"``: the teacher's top-K (``teacher_topk_*`` and its stored tail mass);
    ``support="student"``: the student's top-K_s taken when the dataset was scored, with the
    teacher's log-probs there (``teacher_logprobs_at_student_topk``; its tail is 1 - Σ).
    ``topk``: use the first ``topk`` stored ids only (both supports are stored in descending
    order, so these are the top-``topk``); more than are stored is refused.
    """
    _check_temperature(temperature, tail)
    if support == "teacher":
        ids, t_top = batch["teacher_topk_ids"], batch["teacher_topk_logprobs"]
        t_tail = batch["teacher_tail_logmass"]
    elif support == "student":
        if "student_topk_ids" not in batch:
            raise ValueError("support='student' needs a dataset scored with score.student_top_k > 0")
        ids, t_top = batch["student_topk_ids"], batch["teacher_logprobs_at_student_topk"]
        t_tail = None
    else:
        raise ValueError(f"support must be 'teacher' or 'student', not {support!r}")
    if topk is not None:
        if topk > ids.shape[-1]:
            raise ValueError(f"top-{topk} asked, the dataset stores {ids.shape[-1]} ids per token on the "
                             f"{support}'s support; score it with a larger top_k / student_top_k")
        ids, t_top, t_tail = ids[..., :topk], t_top[..., :topk], None if support == "student" else t_tail
        if support == "teacher" and tail:
            # The stored tail is the mass outside all K; outside the first topk it is larger.
            t_tail = _stored_tail(t_top)
    logp = student_logprobs(logits, temperature)
    s_top = logp.gather(-1, ids)
    t_top = t_top.to(s_top.dtype)
    if tail:
        s_tail = _complement_logmass(logp, ids)
        if t_tail is None:
            t_tail = _stored_tail(t_top)
        s = torch.cat([s_top, s_tail.unsqueeze(-1)], dim=-1)
        t = torch.cat([t_top, t_tail.to(s_top.dtype).unsqueeze(-1)], dim=-1)
    else:
        s = s_top - torch.logsumexp(s_top, dim=-1, keepdim=True)
        t = _renormalised(t_top, temperature)
    return _reduce(divergence(s, t, alpha), batch["distill_mask"], reduction)


def forward_kl(logits, batch, tail=True, temperature=1.0, reduction="token_mean"):
    """KL(teacher ‖ student) on the teacher's top-K + tail (``tail=False``: renormalised over
    the top-K, as Axolotl's ``kd_normalize_topk``): what the pipeline's ``relevance_kl`` measures."""
    return topk_divergence(logits, batch, "teacher", 0.0, tail, temperature, reduction)


def reverse_kl(logits, batch, tail=True, temperature=1.0, reduction="sequence_mean"):
    """KL(student ‖ teacher) on the student's top-K_s + tail: TRL's SDFT/SDPO ``topk_logits``
    loss with ``distillation_alpha=1`` and ``distillation_add_tail=tail``, the teacher offline."""
    return topk_divergence(logits, batch, "student", 1.0, tail, temperature, reduction)


def advantage_loss(logits, batch, advantages="live", temperature=1.0, reduction="sequence_mean"):
    """SDPO's per-token advantage loss ``-A_t · log p_S(y_t)`` on the response tokens.

    ``advantages="live"``: ``A_t = log p_T(y_t) - log p_S(y_t)`` with the stored teacher and
    the live student (detached): TRL's ``sampled_token`` loss, whose gradient is the reverse-KL
    gradient on the sampled token. ``"stored"``: the dataset's ``advantages`` column (teacher
    minus the student that scored it), fixed for the whole run.
    """
    _check_temperature(temperature, tail=advantages == "live")
    s = student_logprobs(logits, temperature).gather(-1, batch["response_ids"].unsqueeze(-1))[..., 0]
    if advantages == "live":
        a = batch["teacher_logprobs"].to(s.dtype) - s.detach()
    elif advantages == "stored":
        a = batch["advantages"].to(s.dtype)
    else:
        raise ValueError(f"advantages must be 'live' or 'stored', not {advantages!r}")
    return _reduce(-a * s, batch["distill_mask"], reduction)


#: The losses by name, for configuration files and the trainer.
LOSSES = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "advantage": advantage_loss,
}
