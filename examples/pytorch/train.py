"""Offline self-distillation in plain PyTorch from a hindsight dataset (the teacher is never run).

    python examples/pytorch/train.py DATASET_DIR HF_MODEL_DIR [--steps N]
"""
import argparse
import itertools

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from hindsight_data import open_dataset, split_heldout
from hindsight_data.losses import forward_kl
from hindsight_data.torch_data import DistillationCollator, heldout_kl, stored_logprob_gap

p = argparse.ArgumentParser()
p.add_argument("dataset")
p.add_argument("model", help="the model the dataset was scored with (Hugging Face directory)")
p.add_argument("--steps", type=int, default=10)
args = p.parse_args()
torch.manual_seed(0)

train, held = split_heldout(open_dataset(args.dataset))          # manifest + sha256 checked
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
gap = stored_logprob_gap(model, held)                            # the scoring model? (~1e-5)
assert gap < 0.1, f"live vs stored student log-probs differ by {gap:.3f} nats: another model"
loader = DataLoader(train, batch_size=4, shuffle=True, collate_fn=DistillationCollator())
opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
before = heldout_kl(model, held)
model.train()
for step, batch in zip(range(args.steps), itertools.cycle(loader)):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = forward_kl(logits, batch)                             # KL(teacher || student), top-k + tail
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"step {step + 1}: loss {loss.item():.5f}", flush=True)
after = heldout_kl(model, held)
print(f"held-out KL(teacher || student): {before:.5f} -> {after:.5f} (live-stored gap {gap:.2e} nats)")
raise SystemExit(0 if after < before else 1)
