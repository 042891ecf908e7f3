#!/usr/bin/env bash
# Builds hindsight with the CUDA backend on any Linux x86_64 machine, GPU or not: the CUDA
# compiler, headers and libraries come from PyPI (NVIDIA's wheels) into .venv-cuda/, nothing is
# installed system-wide. The binary then runs with `--device cuda` on a machine with a GPU.
#
#   scripts/build-cuda.sh            # release build: target/release/hindsight
#   PROFILE=dev scripts/build-cuda.sh
#   CUDA_COMPUTE_CAP=90 ...          # GPU architecture to compile kernels for (default 90: H100/H200)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/cuda-env.sh
nvcc --version | tail -2
if [ "${PROFILE:-release}" = dev ]; then
  cargo build --features cuda
else
  cargo build --release --features cuda
fi
echo "built with CUDA (compute capability $CUDA_COMPUTE_CAP); at run time set"
echo "  LD_LIBRARY_PATH=$CUDA_ROOT/lib:\$LD_LIBRARY_PATH"
