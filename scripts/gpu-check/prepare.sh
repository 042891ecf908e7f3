#!/usr/bin/env bash
# The GPU check, the half that runs here (a machine with the Rust toolchain; no GPU needed):
# builds the CUDA binary and packs everything the GPU machine needs into one folder under
# 64 MiB, which `run.py` in it uses with only the NVIDIA driver, PyTorch and transformers there.
#
#   scripts/gpu-check/prepare.sh [OUT, default target/gpu-check/bundle]
#   scripts/gpu-check/prepare.sh --dry-run     # the same, then checks the folder (size, files)
#   scripts/gpu-check/prepare.sh --cpu OUT     # around the CPU binary: run.py --device cpu --tiny
#
# The folder holds: hindsight.xz (stripped CUDA build, kernels for CUDA_COMPUTE_CAP, default 90:
# H100/H200), the Llama 3 tokenizer and chat template (sha-pinned, see
# tests/fixtures/real_templates/sources.json), the conversations scored for fidelity, the
# sample chat logs benchmarked, run.py and the Python reference (bench_score_python.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dry_run=0 cpu=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    # The same folder around the CPU binary, to smoke-test run.py without a GPU:
    #   python3 run.py --device cpu --tiny
    --cpu) cpu=1 ;;
    *) break ;;
  esac
  shift
done
out="${1:-target/gpu-check/bundle}"
limit=$((64 * 1024 * 1024))

if [ "$cpu" = 1 ]; then
  cargo build
  mkdir -p target/gpu-check
  bin=target/gpu-check/hindsight-cpu
  objcopy --strip-all target/debug/hindsight "$bin"
else
  . scripts/cuda-env.sh
  echo "== building with CUDA (compute capability $CUDA_COMPUTE_CAP, profile gpu-check)"
  cargo build --profile gpu-check --features cuda
  bin=target/gpu-check/hindsight
fi
if readelf -d "$bin" | grep -q 'NEEDED.*libcuda'; then
  echo "note: the binary links libcuda directly (the driver provides it)"
fi

echo "== the Llama 3 tokenizer (pinned)"
if [ ! -f target/real-templates/llama3/tokenizer.json ]; then
  venv=.venv-test
  [ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet numpy; }
  HINDSIGHT_VENV="$venv" ./scripts/real-templates/fetch.sh target/real-templates
fi

rm -rf "$out"
mkdir -p "$out/tokenizer" "$out/episodes" "$out/curand-stub"
# PyTorch's CUDA 13 wheels bring cuBLAS, the runtime and NVRTC but not cuRAND, which candle's
# CUDA device opens at creation (hindsight draws no random numbers on the GPU: sampling runs on
# the host). The real library is 105 MB (42 MB as xz), over the folder's budget beside the
# binary, so the folder carries a stub: set-up calls succeed, any generation call fails with
# CURAND_STATUS_INTERNAL_ERROR (never silently). run.py uses it only when torch has no cuRAND.
{
  echo '/* cuRAND stub for the GPU check: see scripts/gpu-check/prepare.sh. */'
  for sym in $(nm -D --undefined-only "$bin" | sed -nE 's/.*U (curand[A-Za-z0-9_]*)@.*/\1/p' | sort -u); do
    case "$sym" in
      curandCreateGenerator) echo 'int curandCreateGenerator(void **g, int t) { *g = (void *)0x1; return 0; }' ;;
      curandDestroyGenerator|curandSetPseudoRandomGeneratorSeed|curandSetStream|curandSetGeneratorOffset)
        echo "int $sym(void) { return 0; }" ;;
      *) echo "int $sym(void) { return 999; }" ;;
    esac
  done
} > "$out/curand-stub/curand_stub.c"
echo 'libcurand.so.10 { global: curand*; local: *; };' > "$out/curand-stub/version.map"
cc -shared -fPIC -Wl,-soname,libcurand.so.10 -Wl,--version-script="$out/curand-stub/version.map" \
  -o "$out/curand-stub/libcurand.so.10" "$out/curand-stub/curand_stub.c"
xz -T0 -6 -c "$bin" > "$out/hindsight.xz"
xz -T0 -9 -c target/real-templates/llama3/tokenizer.json > "$out/tokenizer/tokenizer.json.xz"
cp target/real-templates/llama3/tokenizer_config.json "$out/tokenizer/"
cp tests/fixtures/real_templates/conversations.json "$out/"
cp sample-data/wildchat_1m.jsonl sample-data/sharegpt.json sample-data/openai_messages.jsonl "$out/episodes/"
cp scripts/gpu-check/run.py scripts/bench_score_python.py "$out/"

size=$(du -sb "$out" | cut -f1)
echo "== $out: $((size / 1024 / 1024)) MiB ($size bytes; limit $limit)"
ls -la "$out" "$out/tokenizer" "$out/episodes"
if [ "$dry_run" = 1 ]; then
  [ "$size" -lt "$limit" ] || { echo "FAIL: the folder is over 64 MiB"; exit 1; }
  for f in hindsight.xz run.py bench_score_python.py conversations.json tokenizer/tokenizer.json.xz \
           tokenizer/tokenizer_config.json; do
    [ -s "$out/$f" ] || { echo "FAIL: $f missing"; exit 1; }
  done
  xz -t "$out/hindsight.xz"
  python3 -m py_compile "$out/run.py" "$out/bench_score_python.py"
  echo "dry run OK: carry $out to the GPU machine and run: python3 run.py"
fi
