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

from .losses import LOSSES, advantage_loss, topk_divergence
from .torch_data import DistillationCollator, TorchDataset


def loss_from_trl_config(config):
    """The offline form of the loss a TRL ``SDFTConfig`` / ``SDPOConfig`` selects:
    ``topk_logits`` is :func:`~hindsight_data.losses.topk_divergence` on the student's stored
    top-k (``distillation_topk`` of them, ``distillation_alpha``, ``distillation_add_tail``,
    ``temperature``, each row's token mean as TRL reduces); ``sampled_token`` is the live
    advantage loss. ``full_logits`` needs the teacher's whole distribution, which is not stored."""
    mode = getattr(config, "distillation_mode", None)
    alpha = float(getattr(config, "distillation_alpha", 1.0))
    temperature = float(getattr(config, "temperature", 1.0) or 1.0)
    if mode == "topk_logits":
        return functools.partial(topk_divergence, support="student", alpha=alpha,
                                 tail=bool(getattr(config, "distillation_add_tail", False)),
                                 temperature=temperature, reduction="sequence_mean",
                                 topk=getattr(config, "distillation_topk", None))
    if mode == "sampled_token":
        if alpha != 1.0:
            raise ValueError("sampled_token needs distillation_alpha = 1 (as TRL requires)")
        return functools.partial(advantage_loss, advantages="live", temperature=temperature,
                                 reduction="sequence_mean")
    raise ValueError(f"distillation_mode {mode!r} has no offline form: the stored signal is the "
                     "teacher's top-k (topk_logits) and its log-prob of each token (sampled_token)")


class DistillationTrainer(Trainer):
    """``compute_loss`` from the stored signal: ``loss`` names one of
    :data:`hindsight_data.losses.LOSSES` (``forward_kl``, ``reverse_kl``, ``advantage``) or is a
    callable ``loss(logits, batch)``; ``loss_kwargs`` go to it (``tail``, ``temperature``,
    ``reduction``, ...). With ``loss=None`` and a TRL ``SDFTConfig`` / ``SDPOConfig`` as
    ``args``, the loss is the one that config selects (:func:`loss_from_trl_config`).
    ``remove_unused_columns`` is turned off: the batch carries the teacher columns, and only
    ``input_ids`` / ``attention_mask`` reach the model."""

    def __init__(self, *args, loss="forward_kl", loss_kwargs=None, pad_token_id=0, **kwargs):
        if loss is None:
            config = kwargs.get("args", args[1] if len(args) > 1 else None)
            loss = loss_from_trl_config(config)
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
