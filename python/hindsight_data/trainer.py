"""A transformers ``Trainer`` that trains from the stored teacher signal (needs torch and
transformers). TRL's trainers subclass ``transformers.Trainer`` too, so TRL scripts use it the
same way; the teacher model is never loaded.

    from hindsight_data import open_dataset
    from hindsight_data.trainer import DistillationTrainer
    trainer = DistillationTrainer(model=model, args=TrainingArguments(...),
                                  train_dataset=open_dataset("out/chat_logs"), loss="forward_kl")
    trainer.train()
"""

import functools

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from .losses import LOSSES
from .torch_data import DistillationCollator, TorchDataset


class DistillationTrainer(Trainer):
    """``compute_loss`` from the stored signal: ``loss`` names one of
    :data:`hindsight_data.losses.LOSSES` (``forward_kl``, ``reverse_kl``, ``advantage``) or is a
    callable ``loss(logits, batch)``; ``loss_kwargs`` go to it (``tail``, ``temperature``,
    ``reduction``, ...). ``remove_unused_columns`` is turned off: the batch carries the teacher
    columns, and only ``input_ids`` / ``attention_mask`` reach the model."""

    def __init__(self, *args, loss="forward_kl", loss_kwargs=None, pad_token_id=0, **kwargs):
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable, not {loss!r}")
            loss = LOSSES[loss]
        self.distill_loss = functools.partial(loss, **(loss_kwargs or {}))
        kwargs.setdefault("data_collator", DistillationCollator(pad_token_id))
        for name in ("train_dataset", "eval_dataset"):
            ds = kwargs.get(name)
            if ds is not None and not isinstance(ds, (Dataset, dict)):
                kwargs[name] = TorchDataset(ds)
        super().__init__(*args, **kwargs)
        self.args.remove_unused_columns = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        use_cache=False)
        loss = self.distill_loss(outputs.logits, inputs)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation reports the distillation loss (the model's own labels are not the target)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
