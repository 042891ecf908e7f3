"""Offline equals online for TRL users: hindsight_data's losses, computed from the teacher signal
hindsight stored, against TRL's own SDFT/SDPO loss functions (trl.experimental.sdft.loss_utils)
computed with an online teacher: the same model run on the teacher's sequence (privileged
context + the same response tokens).

    python tests/trainers/check_trl_equivalence.py DATASET_DIR HF_MODEL_DIR [--tolerance 1e-4]

Checks, per row and on the batch, with TRL's reduction (each row's token mean, then the mean):
  - reverse KL on the student's top-k with and without the tail bucket (TRL `topk_logits`,
    distillation_alpha=1, the SDPO default; and alpha=0.5, TRL's SDFT default, the generalised JSD);
  - the SDPO `sampled_token` loss (live advantages).
Our side runs batched (4 rows, right-padded) through hindsight_data.collate; TRL's side runs one
row at a time with its own top-k of the live student. Exit 1 when a difference exceeds the tolerance.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM
from trl.experimental.sdft.loss_utils import (
    compute_sampled_token_self_distillation_loss,
    compute_topk_self_distillation_loss,
)

import trl
from hindsight_data import collate, open_dataset
from hindsight_data.losses import advantage_loss, topk_divergence

p = argparse.ArgumentParser()
p.add_argument("dataset")
p.add_argument("model")
p.add_argument("--tolerance", type=float, default=1e-4)
p.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
args = p.parse_args()
started = time.time()
torch.set_grad_enabled(False)

ds = open_dataset(args.dataset, student_side=True)
rows = list(ds)[: args.rows or None]
k = ds.student_top_k
manifest = json.load(open(os.path.join(args.dataset, "manifest.json")))
teacher_ids = {}
for s in manifest["shards"]:
    t = pq.read_table(os.path.join(args.dataset, s["file"]), columns=["sample_id", "teacher_prompt_ids"])
    teacher_ids.update(zip(t.column("sample_id").to_pylist(), t.column("teacher_prompt_ids").to_pylist()))
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()


def completion_logits(prompt, completion):
    """Logits that predict the completion tokens: positions len(prompt)-1 .. len(prompt)+T-2."""
    ids = torch.tensor([list(prompt) + list(completion)])
    logits = model(input_ids=ids, use_cache=False).logits[0]
    return logits[len(prompt) - 1: len(prompt) - 1 + len(completion)]


CASES = [  # (name, TRL alpha, add_tail)
    ("reverse KL + tail (topk_logits, alpha=1, add_tail)", 1.0, True),
    ("reverse KL renormalised (topk_logits, alpha=1)", 1.0, False),
    ("JSD alpha=0.5 + tail (topk_logits, SDFT default alpha)", 0.5, True),
]
trl_rows = {name: [] for name, _, _ in CASES}
trl_rows["sampled_token"] = []
ours_rows = {name: [] for name in trl_rows}
support_mismatch = 0
positions = 0
for start in range(0, len(rows), 4):
    chunk = rows[start:start + 4]
    batch = collate(chunk, return_tensors="pt")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    mask = batch["distill_mask"]
    per_row = lambda per: (per.sum(-1) / mask.sum(-1).clamp(min=1.0)).tolist()
    for name, alpha, tail in CASES:
        ours_rows[name] += per_row(topk_divergence(logits, batch, "student", alpha, tail, reduction="none"))
    ours_rows["sampled_token"] += per_row(advantage_loss(logits, batch, "live", reduction="none"))
    for r in chunk:
        s_logits = completion_logits(r["prompt_ids"], r["completion_ids"])[None]
        t_logits = completion_logits(teacher_ids[r["sample_id"]], r["completion_ids"])[None]
        m = torch.tensor(r["loss_mask"], dtype=torch.float32)[None]
        reduce = lambda per: ((per * m).sum(-1) / m.sum(-1).clamp(min=1.0)).item()
        for name, alpha, tail in CASES:
            per = compute_topk_self_distillation_loss(s_logits, t_logits, distillation_topk=k,
                                                      distillation_alpha=alpha, distillation_add_tail=tail)
            trl_rows[name].append(reduce(per))
        per = compute_sampled_token_self_distillation_loss(
            s_logits, t_logits, torch.tensor([list(r["completion_ids"])]), distillation_alpha=1.0)
        trl_rows["sampled_token"].append(reduce(per))
        live_top = torch.topk(s_logits[0], k, dim=-1).indices.sort(-1).values
        stored = torch.as_tensor(r["student_topk_ids"]).sort(-1).values
        support_mismatch += int((live_top != stored).any(-1).sum())
        positions += len(r["completion_ids"])

failed = False
print(f"trl {trl.__version__}, torch {torch.__version__}; {len(rows)} rows, {positions} response tokens, "
      f"K_s = {k}; live vs stored student top-{k} differ at {support_mismatch} positions (near-ties)")
for name in trl_rows:
    a, b = torch.tensor(trl_rows[name], dtype=torch.float64), torch.tensor(ours_rows[name], dtype=torch.float64)
    row_diff = (a - b).abs().max().item()
    batch_diff = abs(a.mean().item() - b.mean().item())
    ok = row_diff <= args.tolerance
    failed |= not ok
    print(f"{'ok' if ok else 'FAILED'}: {name}: TRL online {a.mean():.6f}, hindsight offline {b.mean():.6f}; "
          f"max |diff| per row {row_diff:.2e}, batch {batch_diff:.2e} (tolerance {args.tolerance:g})")
print(f"done in {time.time() - started:.0f}s")
sys.exit(1 if failed else 0)
