"""A TRL SDFT script with an offline teacher: TRL's own `SDFTConfig` selects the loss
(`distillation_mode="topk_logits"`, `distillation_alpha`, `distillation_add_tail`,
`distillation_topk`), and hindsight_data computes it from the teacher log-probs hindsight stored
on the student's top-k; no teacher model is loaded and nothing is generated.

    python examples/trl/train.py DATASET_DIR HF_MODEL_DIR [--alpha 1.0] [--add-tail] [--steps N]

The dataset must be scored with score.student_top_k >= distillation_topk.
"""
import argparse
import os
import tempfile

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch
from transformers import AutoModelForCausalLM
from trl.experimental.sdft import SDFTConfig

from hindsight_data import open_dataset, split_heldout
from hindsight_data.torch_data import heldout_kl
from hindsight_data.trainer import DistillationTrainer

p = argparse.ArgumentParser()
p.add_argument("dataset")
p.add_argument("model")
p.add_argument("--alpha", type=float, default=1.0, help="distillation_alpha (1: reverse KL, 0: forward KL)")
p.add_argument("--add-tail", action="store_true", help="distillation_add_tail")
p.add_argument("--steps", type=int, default=10)
args = p.parse_args()

ds = open_dataset(args.dataset, student_side=True)
train, held = split_heldout(ds)
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
config = SDFTConfig(output_dir=tempfile.mkdtemp(), distillation_mode="topk_logits", distillation_alpha=args.alpha,
                    distillation_add_tail=args.add_tail, distillation_topk=ds.student_top_k, max_steps=args.steps,
                    per_device_train_batch_size=4, num_generations=1, learning_rate=3e-5, logging_steps=1, save_strategy="no",
                    report_to=[], use_cpu=not torch.cuda.is_available(), seed=0)
trainer = DistillationTrainer(model=model, args=config, train_dataset=train, loss=None)  # loss from config
before = heldout_kl(model, held)
trainer.train()
after = heldout_kl(model, held)
print(f"held-out KL(teacher || student): {before:.5f} -> {after:.5f}")
raise SystemExit(0 if after < before else 1)
