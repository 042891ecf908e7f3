"""Pad rows to the batch and align every per-token column to the student's logits.

Alignment (docs/CONTRACT.md): the student sequence is ``prompt_ids ++ completion_ids`` and the
logits at position ``j`` predict ``input_ids[j + 1]``, so response token ``t`` is predicted at
``j = len(prompt_ids) - 1 + t``. Every per-token column ``X`` comes out as ``[B, L]`` (or
``[B, L, K]``) with ``X[b, j]`` describing the token the logits at ``[b, j]`` predict; positions
that predict no response token (the prompt, the last token, the padding) hold neutral values
and have ``distill_mask`` 0. ``labels`` follow the Hugging Face convention instead (unshifted,
-100 outside the trainable response tokens), so a model's own loss works on the same batch.
"""

import numpy as np

#: The label of a position a loss ignores (PyTorch's ``ignore_index``).
IGNORE_INDEX = -100

# Per-token columns aligned to the logits: name -> (value at padding, dtype).
_ALIGNED = {
    "student_logprobs": (0.0, np.float32),
    "teacher_logprobs": (0.0, np.float32),
    "advantages": (0.0, np.float32),
    "teacher_tail_logmass": (0.0, np.float32),
}
_ALIGNED_TOPK = {
    "teacher_topk_ids": (0, np.int64),
    "teacher_topk_logprobs": (0.0, np.float32),
    "student_topk_ids": (0, np.int64),
    "teacher_logprobs_at_student_topk": (0.0, np.float32),
}


def collate(rows, pad_token_id=0, pad_to_multiple_of=None, return_tensors="np"):
    """Rows of :class:`~hindsight_data.HindsightDataset` as one right-padded batch.

    Returns ``input_ids``, ``attention_mask``, ``labels`` ([B, L] int64), ``distill_mask``
    ([B, L] float32: 1 where the logits predict a response token whose ``loss_mask`` is 1),
    ``response_ids`` ([B, L]: the token those logits predict, 0 elsewhere), the per-token columns
    aligned to the logits (``student_logprobs``, ``teacher_logprobs``, ``advantages``,
    ``teacher_tail_logmass``: [B, L]; ``teacher_topk_ids`` / ``teacher_topk_logprobs``:
    [B, L, K]; the student-side pair [B, L, K_s] when the rows have it), and ``prompt_lengths`` /
    ``completion_lengths`` ([B]). ``return_tensors="pt"`` gives torch tensors.
    """
    if not rows:
        raise ValueError("collate needs at least one row")
    lengths = [len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows]
    if min(len(r["prompt_ids"]) for r in rows) == 0:
        raise ValueError("a row has no prompt token: nothing predicts its first response token")
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    b = len(rows)
    out = {
        "input_ids": np.full((b, width), pad_token_id, dtype=np.int64),
        "attention_mask": np.zeros((b, width), dtype=np.int64),
        "labels": np.full((b, width), IGNORE_INDEX, dtype=np.int64),
        "distill_mask": np.zeros((b, width), dtype=np.float32),
        "response_ids": np.zeros((b, width), dtype=np.int64),
        "prompt_lengths": np.array([len(r["prompt_ids"]) for r in rows], dtype=np.int64),
        "completion_lengths": np.array([len(r["completion_ids"]) for r in rows], dtype=np.int64),
    }
    for name, (pad, dt) in _ALIGNED.items():
        out[name] = np.full((b, width), pad, dtype=dt)
    for name, (pad, dt) in _ALIGNED_TOPK.items():
        present = [r.get(name) is not None for r in rows]
        if not any(present):
            continue
        if not all(present):
            raise ValueError(f"{name}: some rows have it and some do not")
        k = rows[0][name].shape[-1]
        out[name] = np.full((b, width, k), pad, dtype=dt)
    for i, r in enumerate(rows):
        p, t = len(r["prompt_ids"]), len(r["completion_ids"])
        out["input_ids"][i, :p] = r["prompt_ids"]
        out["input_ids"][i, p:p + t] = r["completion_ids"]
        out["attention_mask"][i, :p + t] = 1
        mask = np.asarray(r["loss_mask"], dtype=np.float32)
        out["labels"][i, p:p + t] = np.where(mask > 0, r["completion_ids"], IGNORE_INDEX)
        at = slice(p - 1, p - 1 + t)  # the logits that predict response tokens 0..T-1
        out["distill_mask"][i, at] = mask
        out["response_ids"][i, at] = r["completion_ids"]
        for name in _ALIGNED:
            out[name][i, at] = r[name]
        for name in _ALIGNED_TOPK:
            if name in out:
                out[name][i, at] = r[name]
    if return_tensors == "pt":
        import torch

        return {k: torch.from_numpy(v) for k, v in out.items()}
    if return_tensors != "np":
        raise ValueError(f"return_tensors must be 'np' or 'pt', not {return_tensors!r}")
    return out
