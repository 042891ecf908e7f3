#!/usr/bin/env python3
"""The GPU check, the half that runs on the GPU machine: it needs only the folder that
`scripts/gpu-check/prepare.sh` made, the NVIDIA driver, PyTorch (with CUDA 13 libraries, which
the hindsight binary loads) and transformers. No Rust toolchain, no network.

    python3 run.py                 # in the folder, on the GPU machine
    python3 run.py --device cpu --tiny   # the same steps on a CPU with toy shapes (a smoke test)

Steps:
  1. random-weight checkpoints of real shapes, made here with transformers: Llama-3.2-1B (f32)
     and Llama-3.1-8B (bf16), with the real Llama 3 tokenizer and chat template;
  2. fidelity: `hindsight score` on the GPU against transformers on the same GPU, token by token
     (f32 must agree within 1e-3; bf16's drift from the f32 reference is reported next to
     transformers' own bf16 drift);
  3. speed: `hindsight bench --pipeline-only` against transformers on the same episodes and the
     same work (student, teacher, control and the pmi probes; the raw forward at T=512 with the
     LM head at every position), f32 and bf16.
Prints a table and writes results.json beside this script (or to --out).
"""
import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from bench_score_python import forward_rate, score_requests  # noqa: E402

LLAMA3_COMMON = dict(
    vocab_size=128256, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
    hidden_act="silu", max_position_embeddings=131072, rms_norm_eps=1e-5,
    attention_bias=False, mlp_bias=False,
)


def rope(factor):
    """Llama 3's RoPE scaling, spelled the way the installed transformers reads it."""
    p = {"rope_type": "llama3", "factor": factor, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
         "original_max_position_embeddings": 8192}
    if int(__import__("transformers").__version__.split(".")[0]) >= 5:
        return {"rope_parameters": {**p, "rope_theta": 500000.0}}
    return {"rope_scaling": p, "rope_theta": 500000.0}


SHAPES = {
    # config.json of meta-llama/Llama-3.2-1B-Instruct and Llama-3.1-8B-Instruct (shapes only).
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         tie_word_embeddings=False),
    # --tiny: the same code path in seconds on a CPU.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 tie_word_embeddings=True),
}


def dtype_kwargs(dtype):
    """`dtype=` for transformers 5 (and late 4.x), `torch_dtype=` for older 4.x."""
    major, minor = (int(x) for x in __import__("transformers").__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def unpack(src: Path, dst: Path):
    if not dst.exists():
        with lzma.open(src) as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
    return dst


# What the binary links (readelf -d: libcudart, libcublas, libcurand; libcuda.so.1 comes with
# the driver) and what cudarc opens at run time (NVRTC, cuBLASLt).
CUDA_LIBS = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10",
             "libnvrtc.so.13")


def cuda_library_path():
    """Directories of the CUDA 13 libraries PyTorch's wheels installed, and which were found."""
    dirs, found = [], set()
    for root in map(Path, sys.path):
        nv = root / "nvidia"
        if not nv.is_dir():
            continue
        for lib in nv.glob("**/lib*.so*"):
            if lib.name in CUDA_LIBS:
                found.add(lib.name)
                if str(lib.parent) not in dirs:
                    dirs.append(str(lib.parent))
    return dirs, found


def make_checkpoint(name, dtype, device, out: Path, tokenizer: Path):
    d = out / f"{name}-{str(dtype).split('.')[-1]}"
    if (d / "config.json").exists():
        return d
    cfg = LlamaConfig(**LLAMA3_COMMON, **rope(8.0 if name == "llama-3.1-8b" else 32.0),
                      **SHAPES[name])
    torch.manual_seed(0)
    t = time.time()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, **dtype_kwargs(dtype))
    model.save_pretrained(d, safe_serialization=True, max_shard_size="5GB")
    for f in tokenizer.iterdir():
        shutil.copy(f, d / f.name)
    log(f"checkpoint {d.name}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters "
        f"in {time.time() - t:.0f}s")
    del model
    return d


def load_reference(d: Path, dtype, device):
    model = AutoModelForCausalLM.from_pretrained(d, **dtype_kwargs(dtype)).to(device)
    model.eval()
    return model


def hindsight(binary, args, env):
    r = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"hindsight {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r.stdout


def score_inputs(conversations: Path, path: Path):
    lines = []
    for c in json.loads(conversations.read_text()):
        if any("tool" in m.get("role", "") for m in c["messages"]):
            continue
        lines.append(json.dumps({
            "id": c["id"], "prompt": c["messages"], "privileged_context": "Check the edge cases.",
            "teacher_template": "opd_hint_v1", "completion": c["response"]["content"],
        }))
    path.write_text("\n".join(lines) + "\n")


def reference_logprobs(model, ctx, completion, device):
    ids = torch.tensor(ctx + completion[:-1], device=device)[None]
    with torch.inference_mode():
        logits = model(input_ids=ids, logits_to_keep=len(completion), use_cache=False).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1)
    return lp.gather(-1, torch.tensor(completion, device=device)[:, None])[:, 0].cpu().tolist()


def fidelity(binary, env, ckpt, compute, ref_models, inputs, work, device):
    out = work / f"scores-{ckpt.name}-{compute}.jsonl"
    hindsight(binary, ["score", "--strict", "--relevance", "kl", "--model", str(ckpt),
                       "--device", device, "--compute", compute, "-i", str(inputs), "-o", str(out)],
              env)
    worst, ref_worst, tokens = 0.0, 0.0, 0
    for line in out.read_text().splitlines():
        row = json.loads(line)
        c = row["completion_ids"]
        for ctx, got in ((row["prompt_ids"], row["student_logprobs"]),
                         (row["teacher_prompt_ids"], row["teacher_logprobs"])):
            want = reference_logprobs(ref_models["f32"], ctx, c, device)
            worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
            if "bf16" in ref_models:
                other = reference_logprobs(ref_models["bf16"], ctx, c, device)
                ref_worst = max(ref_worst, max(abs(a - b) for a, b in zip(other, want)))
            tokens += len(c)
    return {"checkpoint": ckpt.name, "compute": compute, "tokens": tokens,
            "max_abs_diff_vs_transformers_f32": worst,
            "transformers_bf16_max_abs_diff": ref_worst if "bf16" in ref_models else None}


def speed(binary, env, ckpt, compute, dtype, device, work, episodes):
    reqs_path = work / f"requests-{ckpt.name}.jsonl"
    out = hindsight(binary, ["bench", "--model", str(ckpt), "--device", device, "--compute", compute,
                             "--pipeline-only", "--seq-lens", "512", "--json",
                             *[a for e in episodes for a in ("--episodes", str(e))],
                             "--dump-requests", str(reqs_path)], env)
    h = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    model = load_reference(ckpt, dtype, device)
    reqs = [json.loads(l) for l in reqs_path.read_text().splitlines()]
    dt, _, _ = score_requests(model, reqs, device=device)
    fwd = forward_rate(model, (reqs[0]["prompt_ids"] * 512)[:512], device=device)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    hs = h["scoring"][0]
    return {"checkpoint": ckpt.name, "compute": compute, "episodes": len(reqs),
            "hindsight_episodes_per_s": hs["episodes_per_s"],
            "transformers_episodes_per_s": len(reqs) / dt,
            "hindsight_forward_tokens_per_s": h["forward"][0]["full_logits_tokens_per_s"],
            "transformers_forward_tokens_per_s": fwd}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy shapes (smoke test on a CPU)")
    ap.add_argument("--skip-8b", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "hindsight-gpu-check")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    a = ap.parse_args()
    t0 = time.time()
    a.work.mkdir(parents=True, exist_ok=True)
    binary = unpack(HERE / "hindsight.xz", a.work / "hindsight")
    binary.chmod(0o755)
    tok = a.work / "tokenizer"
    tok.mkdir(exist_ok=True)
    unpack(HERE / "tokenizer" / "tokenizer.json.xz", tok / "tokenizer.json")
    shutil.copy(HERE / "tokenizer" / "tokenizer_config.json", tok / "tokenizer_config.json")
    env = dict(os.environ)
    if a.device.startswith("cuda"):
        log(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                            "--format=csv,noheader"], capture_output=True, text=True).stdout.strip())
        dirs, found = cuda_library_path()
        missing = set(CUDA_LIBS) - found
        if "libcurand.so.10" in missing:
            # See prepare.sh: set-up succeeds, any random generation on the GPU fails loudly.
            log("this PyTorch has no cuRAND: using the folder's stub (hindsight draws no random "
                "numbers on the GPU)")
            dirs.insert(0, str(HERE / "curand-stub"))
            missing.discard("libcurand.so.10")
        if missing:
            sys.exit(f"this PyTorch brings no CUDA 13 {sorted(missing)} (the binary is built "
                     f"against CUDA 13): install a cu13x torch wheel")
        env["LD_LIBRARY_PATH"] = ":".join(dirs + [env.get("LD_LIBRARY_PATH", "")])
    log(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    inputs = a.work / "inputs.jsonl"
    score_inputs(HERE / "conversations.json", inputs)
    episodes = sorted((HERE / "episodes").iterdir())
    small = "tiny" if a.tiny else "llama-3.2-1b"
    results = {"device": a.device, "fidelity": [], "speed": []}

    ckpt = make_checkpoint(small, torch.float32, a.device, a.work, tok)
    refs = {"f32": load_reference(ckpt, torch.float32, a.device),
            "bf16": load_reference(ckpt, torch.bfloat16, a.device)}
    for compute in ("f32", "bf16"):
        r = fidelity(binary, env, ckpt, compute, refs, inputs, a.work, a.device)
        log(f"fidelity {r}")
        results["fidelity"].append(r)
    del refs
    for compute, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        r = speed(binary, env, ckpt, compute, dtype, a.device, a.work, episodes)
        log(f"speed {r}")
        results["speed"].append(r)
    if not (a.skip_8b or a.tiny):
        big = make_checkpoint("llama-3.1-8b", torch.bfloat16, a.device, a.work, tok)
        r = speed(binary, env, big, "bf16", torch.bfloat16, a.device, a.work, episodes)
        log(f"speed {r}")
        results["speed"].append(r)
    results["seconds"] = time.time() - t0
    a.out.write_text(json.dumps(results, indent=2))
    print(f"\n{'checkpoint':<20} {'compute':<6} {'max |Δ| vs transformers f32':>28} {'(transformers bf16)':>20}")
    for r in results["fidelity"]:
        ref = r["transformers_bf16_max_abs_diff"]
        print(f"{r['checkpoint']:<20} {r['compute']:<6} {r['max_abs_diff_vs_transformers_f32']:>28.2e} "
              f"{ref:>20.2e}")
    print(f"\n{'checkpoint':<20} {'compute':<6} {'hindsight ep/s':>15} {'transformers ep/s':>18} "
          f"{'hindsight fwd tok/s':>20} {'transformers fwd tok/s':>23}")
    for r in results["speed"]:
        print(f"{r['checkpoint']:<20} {r['compute']:<6} {r['hindsight_episodes_per_s']:>15.2f} "
              f"{r['transformers_episodes_per_s']:>18.2f} {r['hindsight_forward_tokens_per_s']:>20.1f} "
              f"{r['transformers_forward_tokens_per_s']:>23.1f}")
    f32 = next(r for r in results["fidelity"] if r["compute"] == "f32")
    ok = f32["max_abs_diff_vs_transformers_f32"] < 1e-3
    print(f"\nf32 fidelity {'PASS' if ok else 'FAIL'} (max |Δ| {f32['max_abs_diff_vs_transformers_f32']:.2e}, "
          f"limit 1e-3); {results['seconds']:.0f}s in all; results in {a.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
