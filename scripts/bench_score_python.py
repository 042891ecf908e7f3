#!/usr/bin/env python3
"""The reference for `hindsight bench`'s scoring line: the same episodes scored with Hugging Face
transformers on the CPU, the way a Python pipeline would do it.

Usage (any virtualenv with torch + transformers + gguf):
    ./target/debug/hindsight bench --pipeline-only --dump-requests /tmp/requests.jsonl
    python scripts/bench_score_python.py /tmp/requests.jsonl [MODEL.gguf] [--dtype bf16]
(`scripts/compare-cpu.sh` runs both, interleaved, and prints the best of each.)

Per episode it runs the student, teacher and control sequences (context ++ response minus its
last token; the control only over the response's first `control_tokens`) through the model, the
LM head only on the rows that predict response tokens (`logits_to_keep`), then a float32
log-softmax, the teacher's top-20, and the student's and control's log-probs there; then the
`pmi` probes: the feedback after the response, after the history (when the template allows it)
and after the bare preamble, summing the log-probs of the feedback's first `pmi_tokens`. That is
the work of hindsight's `shared prefix, +control +pmi probes` line (the default pipeline) without
the prefix sharing. `--dtype bf16` runs the model in bfloat16 (oneDNN's AVX512_BF16 / AMX kernels
where the CPU has them), log-softmax still in float32. Prints episodes/s, response tokens/s and
forward tokens, plus raw forward tokens/s at T=512 with the LM head at every position.
"""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from transformers import AutoModelForCausalLM


def score_requests(model, reqs, device="cpu", k=20):
    """Scores `reqs` (hindsight's --dump-requests lines) as a Python pipeline would; returns
    (seconds, response tokens, forward tokens)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(ctx, completion):
        ids = torch.tensor(ctx + completion[:-1], device=device)[None]
        logits = model(input_ids=ids, logits_to_keep=len(completion), use_cache=False).logits[0]
        return torch.log_softmax(logits.float(), dim=-1)

    with torch.inference_mode():
        run(reqs[0]["prompt_ids"], reqs[0]["completion_ids"])  # warm-up
        sync()
        forward = resp = 0
        t0 = time.perf_counter()
        for r in reqs:
            c = r["completion_ids"]
            contexts = [(r["prompt_ids"], c), (r["teacher_prompt_ids"], c)]
            if r.get("control_prompt_ids"):
                # The control is scored on the response's first `control_tokens` (0: all).
                n = r.get("control_tokens") or len(c)
                contexts.append((r["control_prompt_ids"], c[:n]))
            lps = [run(ctx, y) for ctx, y in contexts]
            top = lps[1].topk(k, dim=-1).indices
            for lp in [lps[0]] + lps[2:]:
                lp.gather(-1, top[: lp.shape[0]]).cpu()
            lps[1].gather(-1, top).cpu()
            forward += sum(len(ctx) + len(y) - 1 for ctx, y in contexts)
            resp += len(c)
            probe = r.get("followup")
            if probe:
                f = probe["target"][: r.get("pmi_tokens") or None]
                for key in ("after_response", "after_history", "bare"):
                    if probe.get(key):
                        lp = run(probe[key], f)
                        lp.gather(-1, torch.tensor(f, device=device)[:, None]).sum().item()
                        forward += len(probe[key]) + len(f) - 1
        sync()
        return time.perf_counter() - t0, resp, forward


def forward_rate(model, ids, device="cpu", repeats=3):
    """Tokens/s of one forward over `ids` with the LM head and a float32 log-softmax at every
    position."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    ids = torch.tensor(ids, device=device)[None]
    with torch.inference_mode():
        torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), dim=-1)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), dim=-1)
        sync()
        return repeats * ids.shape[1] / (time.perf_counter() - t0)


def main(path, model_path, dtype):
    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path.parent), gguf_file=model_path.name, dtype=torch.float32).to(dtype)
    model.eval()
    reqs = [json.loads(l) for l in open(path)]
    k = 20
    dt, resp, forward = score_requests(model, reqs, k=k)
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {dtype}, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print(f"scoring {len(reqs)} episodes ({resp} response tokens), K={k}, student+teacher+control "
          f"+pmi probes, no prefix sharing: {len(reqs) / dt:.2f} episodes/s {resp / dt:.1f} "
          f"response tokens/s | forward tokens {forward}")
    rate = forward_rate(model, (reqs[0]["prompt_ids"] * 512)[:512])
    print(f"forward T=512 with LM head + log-softmax at every position: {rate:.1f} tokens/s")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    args = [a for a in sys.argv[1:] if not a.startswith("--dtype")]
    dtype = torch.bfloat16 if "--dtype=bf16" in sys.argv or (
        "--dtype" in sys.argv and sys.argv[sys.argv.index("--dtype") + 1] == "bf16") else torch.float32
    args = [a for a in args if a not in ("bf16", "f32")]
    main(args[0], Path(args[1]) if len(args) > 1 else
         root / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", dtype)
