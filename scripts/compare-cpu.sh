#!/usr/bin/env bash
# hindsight against the script a user would write instead (Hugging Face transformers on the same
# CPU, same episodes, same work: student + teacher + control contexts and the `pmi` probes), in
# f32 and bf16, runs interleaved (these machines are noisy), best of ROUNDS per line. With
# AVX2=1 both sides are held to AVX2 kernels to stand for an AVX2-only machine
# (HINDSIGHT_CPU_KERNELS=avx2 for hindsight; ATEN_CPU_CAPABILITY=avx2 and
# ONEDNN_MAX_CPU_ISA=AVX2 for torch).
#
#   scripts/compare-cpu.sh                  # needs a virtualenv with torch + transformers + gguf:
#   PY=/path/to/venv/bin/python ROUNDS=2 AVX2=1 DTYPES="f32 bf16" scripts/compare-cpu.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-.venv-trainer/bin/python}"
ROUNDS="${ROUNDS:-2}"
bin=./target/debug/hindsight
[ -x "$bin" ] || cargo build
./scripts/fetch-model.sh >/dev/null
out="$(mktemp -d)"
env_vars=()
if [ "${AVX2:-0}" = 1 ]; then
  env_vars=(HINDSIGHT_CPU_KERNELS=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)
fi
"$bin" bench --pipeline-only --seq-lens 512 --dump-requests "$out/requests.jsonl" >/dev/null
"$bin" bench --pipeline-only --seq-lens 512 --json | grep '^{' | "$PY" -c \
  'import json,sys; c=json.load(sys.stdin)["cpu"]; print("cpu:", c["model"], "| flags:", " ".join(c["flags"]))'
for round in $(seq "$ROUNDS"); do
  for dtype in ${DTYPES:-f32 bf16}; do
    env "${env_vars[@]}" "$bin" bench --pipeline-only --seq-lens 512 --compute "$dtype" \
      > "$out/hindsight-$dtype-$round.txt" 2>&1
    env "${env_vars[@]}" "$PY" scripts/bench_score_python.py "$out/requests.jsonl" --dtype "$dtype" \
      > "$out/transformers-$dtype-$round.txt" 2>&1
  done
done
"$PY" - "$out" "$ROUNDS" ${DTYPES:-f32 bf16} <<'PYEOF'
import re, sys, pathlib
out, rounds, dtypes = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def best(name, pattern):
    vals = []
    for r in range(1, rounds + 1):
        m = re.search(pattern, (out / f"{name}-{r}.txt").read_text())
        if not m:
            sys.exit(f"{name}-{r}: no match for {pattern}:\n" + (out / f"{name}-{r}.txt").read_text())
        vals.append(float(m.group(1)))
    return max(vals)
ep = r"([\d.]+) episodes/s"
fw_h = r"with LM head \+ log-softmax at every position\s+([\d.]+) tokens/s"
fw_t = r"forward T=512 with LM head \+ log-softmax at every position: ([\d.]+) tokens/s"
print(f"{'':6} {'hindsight ep/s':>15} {'transformers ep/s':>18} {'ratio':>6} | "
      f"{'hindsight fwd tok/s':>19} {'transformers fwd tok/s':>22} {'ratio':>6}")
for d in dtypes:
    he, te = best(f"hindsight-{d}", ep), best(f"transformers-{d}", ep)
    hf, tf = best(f"hindsight-{d}", fw_h), best(f"transformers-{d}", fw_t)
    print(f"{d:6} {he:15.2f} {te:18.2f} {he/te:5.2f}x | {hf:19.1f} {tf:22.1f} {hf/tf:5.2f}x")
PYEOF
echo "(raw outputs in $out)"
