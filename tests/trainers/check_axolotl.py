"""Axolotl's own KD collator and loss on rows `hindsight export --to axolotl-kd` wrote, against
hindsight_data's losses on the source dataset (independent paths: Axolotl reads the exported
Parquet through `datasets`, pads with its DataCollatorForKD and computes its fused top-k KD loss
from the model's hidden states and LM head; hindsight_data aligns the source rows itself and
computes from the logits).

    python tests/trainers/check_axolotl.py SOURCE_DIR EXPORT_DIR HF_MODEL_DIR [--tolerance 1e-5]

Cases (kd_normalize_topk: true, kd_temperature 1, kd_alpha 1, kd_ce_alpha 0): kd_beta 0 (forward
KL), 1 (reverse KL on the teacher's support), 0.5 (the JSD); each against
topk_divergence(support="teacher", alpha=beta, tail=False, reduction="sum") / trainable tokens,
Axolotl's division by num_items_in_batch. Exit 1 when a batch differs by more than the tolerance.
"""
import argparse
import sys
import time

import datasets
import torch
from axolotl.integrations.kd.collator import DataCollatorForKD
from axolotl.integrations.kd.kernels.liger import LigerFusedLinearKLTopKLogprobLoss
from transformers import AutoModelForCausalLM, AutoTokenizer

import axolotl
from hindsight_data import collate, open_dataset
from hindsight_data.losses import topk_divergence

p = argparse.ArgumentParser()
p.add_argument("source", help="the hindsight dataset (or, with --falls, the export)")
p.add_argument("export", help="its export (or, with --falls, the model before training)")
p.add_argument("model", help="the model the dataset was scored with (or, with --falls, after training)")
p.add_argument("--tolerance", type=float, default=1e-5)
p.add_argument("--falls", action="store_true",
               help="EXPORT BEFORE AFTER: exit 1 unless Axolotl's KD loss over every exported row "
                    "(kd_beta 0, normalised top-k) is lower with the AFTER model than with BEFORE")
args = p.parse_args()
started = time.time()
torch.set_grad_enabled(False)


def axolotl_kd_loss(rows, model_dir):
    """Axolotl's own KD loss (its collator, its fused loss, kd_beta 0) over all rows, per label token."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    col = DataCollatorForKD(tokenizer=tok, padding=True, return_tensors="pt")
    fn = LigerFusedLinearKLTopKLogprobLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, temperature=1.0,
                                           beta=0.0, compiled=False, compute_ce_loss=False, normalize_topk=True)
    total, items = 0.0, 0
    for start in range(0, len(rows), 4):
        b = col([rows[i] for i in range(start, min(start + 4, len(rows)))])
        h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states[-1]
        total += fn(model.lm_head.weight, h, b["target_token_ids"], b["target_logprobs"], b["target_mask"],
                    true_labels=b["labels"]).item()
        items += (b["labels"] != -100).sum().item()
    return total / items


if args.falls:
    rows = datasets.load_dataset(args.source, split="train")
    before, after = axolotl_kd_loss(rows, args.export), axolotl_kd_loss(rows, args.model)
    print(f"{'ok' if after < before else 'FAILED'}: Axolotl KD loss over all {len(rows)} exported rows: "
          f"{before:.5f} before training, {after:.5f} after ({time.time() - started:.0f}s)")
    sys.exit(0 if after < before else 1)

source = list(open_dataset(args.source))
exported = datasets.load_dataset(args.export, split="train")
if len(exported) != len(source):
    sys.exit(f"FAILED: {len(exported)} exported rows, {len(source)} source rows (export with no filter)")
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
tokenizer = AutoTokenizer.from_pretrained(args.model)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
collator = DataCollatorForKD(tokenizer=tokenizer, padding=True, return_tensors="pt")

failed = False
print(f"axolotl {axolotl.__version__}, torch {torch.__version__}, {len(source)} rows")
for beta in (0.0, 1.0, 0.5):
    fn = LigerFusedLinearKLTopKLogprobLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, temperature=1.0,
                                           beta=beta, compiled=False, compute_ce_loss=False, normalize_topk=True)
    worst, theirs_all, ours_all = 0.0, [], []
    for start in range(0, len(source), 4):
        feats = [exported[i] for i in range(start, min(start + 4, len(source)))]
        b = collator(feats)
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        n_items = (b["labels"] != -100).sum().item()
        theirs = fn(model.lm_head.weight, out.hidden_states[-1], b["target_token_ids"], b["target_logprobs"],
                    b["target_mask"], true_labels=b["labels"]).item() / n_items
        ours_batch = collate(source[start:start + 4], return_tensors="pt")
        logits = model(input_ids=ours_batch["input_ids"], attention_mask=ours_batch["attention_mask"]).logits
        ours = (topk_divergence(logits, ours_batch, "teacher", beta, tail=False, reduction="sum")
                / ours_batch["distill_mask"].sum()).item()
        if ours_batch["distill_mask"].sum().item() != n_items:
            failed = True
            print(f"FAILED: batch {start}: {n_items} Axolotl label tokens, {ours_batch['distill_mask'].sum()} ours")
        worst = max(worst, abs(theirs - ours))
        theirs_all.append(theirs)
        ours_all.append(ours)
    ok = worst <= args.tolerance
    failed |= not ok
    print(f"{'ok' if ok else 'FAILED'}: kd_beta {beta}: Axolotl loss (mean over batches) {sum(theirs_all) / len(theirs_all):.6f}, "
          f"hindsight_data {sum(ours_all) / len(ours_all):.6f}; max |diff| per batch {worst:.2e} (tolerance {args.tolerance:g})")
print(f"done in {time.time() - started:.0f}s")
sys.exit(1 if failed else 0)
