#!/usr/bin/env bash
# End-to-end test of the example trainer (kept out of scripts/test.sh: it installs PyTorch and
# trains on the CPU for minutes). Checks that
#   1. scripts/train-example.sh (default loss `kl`) lowers the held-out KL to the teacher, after the
#      sanity check (live student log-probs = stored ones) has passed;
#   2. a dataset whose manifest names another tokenizer hash is refused with exit status 2;
#   3. the same pipeline in the compact encoding trains with forward + reverse KL (--loss kl+rkl,
#      the student-side columns decoded from one-byte codes) and the held-out KL drops too.
# Prints 'N passed, N failed' last and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() { # name, expected exit status, command...
  local name="$1" want="$2"
  shift 2
  "$@"
  local got=$?
  if [ "$got" -eq "$want" ]; then
    passed=$((passed + 1)); echo "ok: $name"
  else
    failed=$((failed + 1)); echo "FAILED: $name (exit status $got, expected $want)"
  fi
}

check "held-out KL drops (train-example.sh)" 0 ./scripts/train-example.sh --summary "$tmp/summary.json"
if [ -f "$tmp/summary.json" ]; then cat "$tmp/summary.json"; fi

# The same shards under a manifest that names another tokenizer.
mkdir "$tmp/other"
ln -s "$PWD"/out/chat_logs/part-*.parquet "$tmp/other/"
.venv-trainer/bin/python - out/chat_logs/manifest.json "$tmp/other/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["dataset"]["tokenizer_sha256"] = "0" * 64
json.dump(m, open(sys.argv[2], "w"))
PY
check "manifest with another tokenizer hash is refused" 2 \
  .venv-trainer/bin/python examples/trainer/train.py "$tmp/other"

# The compact encoding, with the reverse-KL columns.
./target/debug/hindsight run pipelines/chat_logs.toml --output "$tmp/compact" --no-progress \
  --set contract.encoding=compact >/dev/null 2>&1
check "compact dataset, loss kl+rkl: held-out KL drops" 0 \
  .venv-trainer/bin/python examples/trainer/train.py "$tmp/compact" --loss kl+rkl --require-kl-decrease

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
