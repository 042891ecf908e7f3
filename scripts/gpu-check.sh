#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU (CI never has one):
#   1. builds with the CUDA backend (toolkit from PyPI, see scripts/cuda-env.sh);
#   2. runs the model-family fidelity tests on the GPU (tests/it/families.rs with
#      HINDSIGHT_DEVICE=cuda): every family against the transformers reference, f32 within 1e-3;
#   3. runs `hindsight bench` on the GPU in f32 and bf16 and prints tokens/s.
# Usage: scripts/gpu-check.sh [CUDA_COMPUTE_CAP, default: asked from nvidia-smi, else 90]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${1:-}" ]; then
  export CUDA_COMPUTE_CAP="$1"
elif command -v nvidia-smi >/dev/null 2>&1; then
  export CUDA_COMPUTE_CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
. scripts/cuda-env.sh
./scripts/fetch-model.sh
echo "== fidelity tests on cuda (compute capability $CUDA_COMPUTE_CAP)"
HINDSIGHT_DEVICE=cuda cargo test --release --features cuda --test it families:: -- --nocapture 2>&1 \
  | grep -E "vs transformers|mean \||^test |test result"
cargo build --release --features cuda
for compute in f32 bf16; do
  echo "== hindsight bench --device cuda --compute $compute"
  ./target/release/hindsight bench --device cuda --compute "$compute" --seq-lens 512,1024,4096
done
