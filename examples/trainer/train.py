#!/usr/bin/env python3
"""Offline self-distillation on a hindsight dataset: proof that the shards feed a trainer.

Reads the Parquet shards listed in `manifest.json`, loads the GGUF model the dataset was scored
with (transformers dequantizes it to f32), refuses a dataset scored with another model or
tokenizer, checks that the live student reproduces the stored `student_logprobs`, then trains a
few steps with one of four losses and reports held-out KL(teacher || student) and the mean student
log-prob of the response tokens before and after.

The teacher is never run: its signal is the stored top-k + tail (loss `kl`), the stored teacher
log-probs at the student's top-k (loss `rkl`, reverse KL on the student's support; `kl+rkl` sums
both; needs a dataset with `score.student_top_k > 0`) or the stored advantages (loss `awll`).
Token ids are used exactly as stored; no text is re-tokenized. Reading, checking, decoding
(compact encoding), alignment and the losses come from the hindsight_data package
(`pip install ./python`); this script adds the GGUF model check and the training loop.

Exit status: 0 done; 1 `--require-kl-decrease` and held-out KL did not drop; 2 unusable input
(bad arguments, dataset or model file, or a model/tokenizer that does not match the manifest);
3 the sanity check failed (live student log-probs far from the stored ones).
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for a hub
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization bar floods logs
# OpenMP threads that spin while waiting make torch 3-8x slower when the cores are shared with
# other work (measured on a busy 2-core machine); sleeping waiters cost little when they are not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from gguf import GGUFReader

from hindsight_data import DatasetError, collate, open_dataset, split_heldout
from hindsight_data.dataset import read_manifest as _read_manifest
from hindsight_data.dataset import sha256_file
from hindsight_data.losses import advantage_loss, forward_kl, reverse_kl, student_logprobs

SANITY_LIMIT = 0.1  # nats; a model mismatch gives differences of whole nats


class Refusal(Exception):
    """Input the trainer will not use (exit status 2)."""


def parse_args(argv):
    default_model = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, help="hindsight dataset directory (with manifest.json)")
    p.add_argument("--model", type=Path, default=default_model, help="GGUF file (default: %(default)s)")
    p.add_argument("--loss", choices=["kl", "rkl", "kl+rkl", "awll"], default="kl",
                   help="kl: forward KL to the stored teacher top-k + tail (default); "
                        "awll: advantage-weighted log-likelihood -(A_t * log p_student(y_t))")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="rows per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--heldout-fraction", type=float, default=0.2,
                   help="share of rows held out for evaluation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of batch order and torch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--summary", type=Path, help="write a JSON summary here")
    p.add_argument("--save", type=Path, help="save the trained model here (save_pretrained)")
    p.add_argument("--require-kl-decrease", action="store_true",
                   help="exit 1 unless the held-out KL after training is lower than before")
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="warn instead of refusing when the model or tokenizer hash differs from the manifest")
    args = p.parse_args(argv)
    if args.steps < 0 or args.batch_size < 1 or not 0 < args.heldout_fraction < 1:
        p.error("need --steps >= 0, --batch-size >= 1 and 0 < --heldout-fraction < 1")
    return args


def gguf_identity(path):
    """The hashes hindsight records for a GGUF model (src/model/mod.rs, src/tokenize/gguf_vocab.rs).

    tokenizer_sha256 = sha256(model "\\0pre\\0" pre {"\\0" token} "\\0merges" {"\\0" merge}
    {token_type as u32 LE}); chat_template_sha256 = sha256(tokenizer.chat_template).
    """
    reader = GGUFReader(path)

    def field(key, default=None):
        f = reader.get_field(key)
        return default if f is None else f.contents()

    model, pre = field("tokenizer.ggml.model", "gpt2"), field("tokenizer.ggml.pre", "gpt2")
    tokens = field("tokenizer.ggml.tokens")
    if tokens is None:
        raise Refusal(f"{path}: GGUF has no tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type", [1] * len(tokens))
    h = hashlib.sha256(model.encode() + b"\0pre\0" + pre.encode())
    for tok in tokens:
        h.update(b"\0" + tok.encode())
    h.update(b"\0merges")
    for merge in field("tokenizer.ggml.merges", []):
        h.update(b"\0" + merge.encode())
    h.update(b"".join(struct.pack("<I", t & 0xFFFFFFFF) for t in types))
    template = field("tokenizer.chat_template", "")
    return {
        "model_id": field("general.name", path.stem),
        "weights_sha256": sha256_file(path),
        "tokenizer_sha256": h.hexdigest(),
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "vocab_size": len(tokens),
    }


def read_manifest(directory):
    """Manifest checks a trainer can do in O(manifest + shard bytes): version, listed shards, sha256."""
    try:
        return _read_manifest(directory, verify=True)
    except DatasetError as e:
        raise Refusal(str(e))


def check_model(dataset_meta, identity, allow_mismatch):
    """Refuses (or, with --allow-model-mismatch, warns about) a model the dataset was not scored with."""
    diffs = [
        f"  {key}: dataset {dataset_meta.get(key)}, model {identity[key]}"
        for key in ("weights_sha256", "tokenizer_sha256", "chat_template_sha256", "vocab_size")
        if dataset_meta.get(key) != identity[key]
    ]
    if not diffs:
        return "hashes match"
    msg = (f"the model file does not match the model the dataset was scored with "
           f"(dataset: '{dataset_meta.get('model_id')}', file: '{identity['model_id']}'):\n" + "\n".join(diffs))
    if not allow_mismatch:
        raise Refusal(msg + "\npass --model with the dataset's model (or --allow-model-mismatch)")
    print(f"warning: {msg}", file=sys.stderr)
    return "hashes DIFFER (--allow-model-mismatch)"


def load_rows(directory, manifest, loss):
    """The dataset's rows (hindsight_data: shards from the manifest, compact codes decoded)."""
    reverse = loss in ("rkl", "kl+rkl")
    try:
        rows = list(open_dataset(directory, verify=False, student_side=True if reverse else None))
    except DatasetError as e:
        raise Refusal(f"{e}" + (f" (loss {loss} needs the student-side columns)" if reverse else ""))
    no_mask = [r["sample_id"] for r in rows if r["loss_mask"].sum() == 0]
    if no_mask:
        print(f"note: {len(no_mask)} rows have no trainable token (loss_mask all 0); skipped")
    return [r for r in rows if r["loss_mask"].sum() > 0]


def split_rows(rows, fraction):
    """Deterministic held-out split: rows ranked by sha256(sample_id); both sides non-empty."""
    try:
        return split_heldout(rows, fraction)
    except DatasetError as e:
        raise Refusal(str(e))


def forward(model, row):
    """The live student's logits for one row and the row as a batch aligned to them."""
    batch = collate([row], return_tensors="pt")
    logits = model(input_ids=batch["input_ids"], use_cache=False).logits
    return logits, batch


def row_loss(model, row, loss):
    """Per-row training loss, averaged over the row's masked response tokens.

    awll uses the stored advantages as they are (teacher - student log-prob, no normalization):
    tokens the teacher likes more get pushed up, tokens it likes less get pushed down.
    """
    logits, batch = forward(model, row)
    if loss == "kl":
        return forward_kl(logits, batch)
    if loss == "rkl":
        return reverse_kl(logits, batch)
    if loss == "kl+rkl":
        return forward_kl(logits, batch) + reverse_kl(logits, batch)
    return advantage_loss(logits, batch, advantages="stored", reduction="token_mean")


@torch.no_grad()
def evaluate(model, rows):
    """Per row: masked-mean KL(teacher || student) and student log-prob, and |live - stored| log-prob sum."""
    model.eval()
    out = []
    for row in rows:
        logits, batch = forward(model, row)
        mask = batch["distill_mask"]
        token_logp = student_logprobs(logits).gather(-1, batch["response_ids"][..., None])[..., 0]
        out.append({
            "kl": forward_kl(logits, batch).item(),
            "logprob": ((token_logp * mask).sum() / mask.sum()).item(),
            "diff_sum": ((token_logp - batch["student_logprobs"]).abs() * mask).sum().item(),
            "tokens": int(mask.sum()),
        })
    return out


def row_mean(stats, key):
    """Mean over rows (each row already averaged over its tokens), as the contract's relevance_kl."""
    return sum(s[key] for s in stats) / len(stats)


def load_model(path):
    """transformers reads the GGUF (config, dequantized f32 weights); needs `gguf` and `accelerate`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The weights are plain f32 now; dropping the GGUF quantizer lets save_pretrained write them.
    model.hf_quantizer = None
    del model.config.quantization_config
    return model


def train(model, rows, args):
    """AdamW over shuffled epochs of the training rows; each step averages `batch_size` row losses."""
    generator = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    model.train()
    order, losses = [], []
    for step in range(1, args.steps + 1):
        batch = []
        while len(batch) < args.batch_size:
            if not order:
                order = torch.randperm(len(rows), generator=generator).tolist()
            batch.append(rows[order.pop()])
        t0 = time.time()
        opt.zero_grad()
        total = 0.0
        for row in batch:
            loss = row_loss(model, row, args.loss) / len(batch)
            loss.backward()
            total += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        losses.append(total)
        print(f"step {step:3d}/{args.steps}  loss {total:+.5f}  grad_norm {grad_norm:.3f}  {time.time() - t0:.1f}s",
              flush=True)
    return losses


def run(args):
    started = time.time()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.model.is_file():
        raise Refusal(f"{args.model}: model file not found (scripts/fetch-model.sh provisions the default)")

    manifest = read_manifest(args.dataset)
    meta = manifest["dataset"]
    identity = gguf_identity(args.model)
    verdict = check_model(meta, identity, args.allow_model_mismatch)
    rows = load_rows(args.dataset, manifest, args.loss)
    train_rows, held = split_rows(rows, args.heldout_fraction)
    print(f"dataset {args.dataset}: {len(rows)} rows ({len(train_rows)} train, {len(held)} held out), "
          f"K={meta['top_k']}, model '{meta['model_id']}' {meta['weights_sha256'][:12]}: {verdict}")

    t0 = time.time()
    model = load_model(args.model)
    print(f"model loaded in {time.time() - t0:.1f}s; torch {torch.__version__}, {torch.get_num_threads()} threads")

    stats = evaluate(model, held + train_rows)
    before_held = stats[:len(held)]
    n_tok = sum(s["tokens"] for s in stats)
    sanity = sum(s["diff_sum"] for s in stats) / n_tok
    print(f"sanity: mean |live - stored student_logprobs| = {sanity:.2e} nats over {len(stats)} rows, "
          f"{n_tok} tokens (limit {SANITY_LIMIT})")
    if sanity > SANITY_LIMIT:
        print(f"error: sanity check failed ({sanity:.3f} > {SANITY_LIMIT} nats): this is not the model the "
              "dataset was scored with, or its weights load differently", file=sys.stderr)
        return 3
    before = {"kl": row_mean(before_held, "kl"), "logprob": row_mean(before_held, "logprob")}
    stored_kl = sum(r["relevance_kl"] for r in held) / len(held)
    print(f"held-out before: KL {before['kl']:.5f} (stored relevance_kl {stored_kl:.5f}), "
          f"student log-prob {before['logprob']:.5f}")

    t0 = time.time()
    losses = train(model, train_rows, args)
    train_s = time.time() - t0

    after_held = evaluate(model, held)
    after = {"kl": row_mean(after_held, "kl"), "logprob": row_mean(after_held, "logprob")}
    print(f"held-out after:  KL {after['kl']:.5f}, student log-prob {after['logprob']:.5f}")
    decreased = after["kl"] < before["kl"]
    print(f"held-out KL(teacher || student): {before['kl']:.5f} -> {after['kl']:.5f} "
          f"({'lower' if decreased else 'NOT lower'}; loss {args.loss}, {args.steps} steps)")
    if args.save:
        model.save_pretrained(args.save)
        print(f"saved model to {args.save}")

    summary = {
        "dataset": str(args.dataset),
        "model": str(args.model),
        "model_id": meta["model_id"],
        "weights_sha256": identity["weights_sha256"],
        "config": {k: args.__dict__[k] for k in ("loss", "steps", "batch_size", "lr", "heldout_fraction", "seed")},
        "rows": {"train": len(train_rows), "heldout": len(held)},
        "heldout_ids": sorted(r["sample_id"] for r in held),
        "sanity_mean_abs_diff_nats": sanity,
        "heldout_kl_before": before["kl"],
        "heldout_kl_after": after["kl"],
        "heldout_logprob_before": before["logprob"],
        "heldout_logprob_after": after["logprob"],
        "kl_decreased": decreased,
        "step_losses": losses,
        "train_seconds": train_s,
        "total_seconds": time.time() - started,
    }
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done in {summary['total_seconds']:.0f}s (training {train_s:.0f}s)")
    if args.require_kl_decrease and not decreased:
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
