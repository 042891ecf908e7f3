"""torch pieces that need no transformers: a ``Dataset`` wrapper, the collator as a
``collate_fn``, and the two measurements every run should print (needs torch)."""

import torch
from torch.utils.data import Dataset

from .collate import collate
from .losses import forward_kl, student_logprobs


class TorchDataset(Dataset):
    """A :class:`~hindsight_data.HindsightDataset` (or any row sequence) as a torch ``Dataset``."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class DistillationCollator:
    """:func:`hindsight_data.collate` returning torch tensors (a ``DataLoader``'s ``collate_fn``)."""

    def __init__(self, pad_token_id=0, pad_to_multiple_of=None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows):
        return collate(rows, self.pad_token_id, self.pad_to_multiple_of, return_tensors="pt")


def _batches(model, rows, batch_size):
    device = next(model.parameters()).device
    rows = list(rows)
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate(rows[i:i + batch_size], return_tensors="pt").items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits
        yield logits, batch


@torch.no_grad()
def heldout_kl(model, rows, batch_size=4):
    """Mean over rows of each row's token-mean KL(teacher ‖ student) on the teacher's top-K +
    tail: the contract's ``relevance_kl`` for the live student. Training should lower it."""
    was_training = model.training
    model.eval()
    values = []
    for logits, batch in _batches(model, rows, batch_size):
        per = forward_kl(logits, batch, reduction="none")
        values += (per.sum(-1) / batch["distill_mask"].sum(-1).clamp(min=1.0)).tolist()
    model.train(was_training)
    return sum(values) / len(values)


@torch.no_grad()
def stored_logprob_gap(model, rows, batch_size=4):
    """Mean |live − stored| student log-prob of the response tokens, in nats: near 0 (1e-5 in
    f32) for the model the dataset was scored with, whole nats for another one. Check it before
    training: a signal made by another model is silently wrong."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for logits, batch in _batches(model, rows, batch_size):
        live = student_logprobs(logits).gather(-1, batch["response_ids"].unsqueeze(-1))[..., 0]
        mask = batch["distill_mask"]
        total += ((live - batch["student_logprobs"]).abs() * mask).sum().item()
        count += mask.sum().item()
    model.train(was_training)
    return total / max(count, 1.0)
