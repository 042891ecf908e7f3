"""TRL's SDFT/SDPO `topk_logits` distillation with an offline teacher: the loss TRL computes with
the teacher model online, here from the teacher log-probs hindsight stored (no teacher loaded).

    python examples/trl/train.py DATASET_DIR HF_MODEL_DIR [--alpha 1.0] [--add-tail] [--steps N]

The flags are SDFTConfig's: --alpha is `distillation_alpha` (1: reverse KL, TRL's SDPO default;
0: forward KL; between: generalised JSD), --add-tail is `distillation_add_tail`; the top-k is
the dataset's `student_top_k` (TRL's `distillation_topk`). The dataset must be scored with
score.student_top_k > 0.
"""
import argparse
import tempfile

import torch
from transformers import AutoModelForCausalLM, TrainingArguments

from hindsight_data import open_dataset, split_heldout
from hindsight_data.losses import topk_divergence
from hindsight_data.torch_data import heldout_kl
from hindsight_data.trainer import DistillationTrainer

p = argparse.ArgumentParser()
p.add_argument("dataset")
p.add_argument("model")
p.add_argument("--alpha", type=float, default=1.0)
p.add_argument("--add-tail", action="store_true")
p.add_argument("--steps", type=int, default=10)
args = p.parse_args()

train, held = split_heldout(open_dataset(args.dataset, student_side=True))
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
trainer = DistillationTrainer(
    model=model,
    args=TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=4,
                           learning_rate=3e-5, logging_steps=1, save_strategy="no", report_to=[],
                           use_cpu=not torch.cuda.is_available(), seed=0),
    train_dataset=train,
    loss=topk_divergence,
    loss_kwargs={"support": "student", "alpha": args.alpha, "tail": args.add_tail, "reduction": "sequence_mean"},
)
before = heldout_kl(model, held)
trainer.train()
after = heldout_kl(model, held)
print(f"held-out KL(teacher || student): {before:.5f} -> {after:.5f}")
raise SystemExit(0 if after < before else 1)
