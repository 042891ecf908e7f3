#!/usr/bin/env bash
# GPU check (CI never has a GPU). Two halves, so that it runs where GPUs are lent without a Rust
# toolchain or network there:
#   1. here: scripts/gpu-check/prepare.sh builds the stripped CUDA binary and packs the folder
#      (under 64 MiB) that the GPU machine needs; `--dry-run` also checks its size and files;
#   2. there: `python3 run.py` in that folder (needs the NVIDIA driver, PyTorch with CUDA 13
#      libraries, transformers): random-weight Llama-3.2-1B / Llama-3.1-8B checkpoints made on
#      the spot, fidelity against transformers on the same GPU, and speed against it on the same
#      episodes and work, f32 and bf16.
# On a machine that has both a Rust toolchain and a GPU this script runs both halves:
#   scripts/gpu-check.sh [--dry-run]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=target/gpu-check/bundle
if command -v nvidia-smi >/dev/null 2>&1 && [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)"
  export CUDA_COMPUTE_CAP
fi
if [ "${1:-}" = --dry-run ]; then
  exec ./scripts/gpu-check/prepare.sh --dry-run "$out"
fi
./scripts/gpu-check/prepare.sh "$out"
command -v nvidia-smi >/dev/null 2>&1 || { echo "no GPU here: carry $out to a GPU machine and run python3 run.py there"; exit 0; }
py="${PYTHON:-python3}"
"$py" "$out/run.py"
