#!/usr/bin/env bash
# The trainers teams already use, on hindsight's shards with no glue code (issue 28). Kept out
# of scripts/test.sh: it installs two PyTorch stacks (.venv-trl and .venv-axolotl, about 6 GB
# each: Axolotl pins its own torch) and trains on the CPU for minutes. Checks that
#   1. TRL's own SDFT/SDPO loss functions with an ONLINE teacher (the model run on the teacher's
#      sequence) equal hindsight_data's losses from the STORED signal, within 1e-4;
#   2. Axolotl's own KD collator and loss on `hindsight export --to axolotl-kd` rows equal
#      hindsight_data's on the source dataset, within 1e-5 (kd_beta 0, 1 and 0.5);
#   3. `axolotl train examples/axolotl/kd.yml` (a tiny model with the embedded tokenizer, CPU,
#      5 steps) finishes and Axolotl's KD loss over all exported rows falls;
#   4. the TRL example (examples/trl/train.py: TRL's SDFTConfig selects the loss, DistillationTrainer
#      computes it offline) lowers held-out KL(teacher || student);
#   5. the plain PyTorch example (examples/pytorch/train.py) lowers it too;
#   6. the package's unit tests pass with torch installed.
# Prints each check's time, and 'N passed, N failed' last; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE TQDM_DISABLE=1 TRL_EXPERIMENTAL_SILENCE=1 HF_HUB_OFFLINE=1 \
  HF_DATASETS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 WANDB_MODE=disabled
passed=0 failed=0
check() { # name, command...
  local name="$1" start=$SECONDS
  shift
  "$@"
  local got=$?
  if [ "$got" -eq 0 ]; then
    passed=$((passed + 1)); echo "ok: $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); echo "FAILED: $name (exit status $got, $((SECONDS - start)) s)"
  fi
}
venv() { # dir, requirements file
  [ -x "$1/bin/python" ] || python3 -m venv "$1"
  "$1/bin/pip" install --quiet --disable-pip-version-check -r "$2" && \
    "$1/bin/pip" install --quiet --disable-pip-version-check ./python
}

set -e
start=$SECONDS
venv .venv-trl tests/trainers/requirements-trl.txt
venv .venv-axolotl tests/trainers/requirements-axolotl.txt
./scripts/fetch-model.sh
cargo build --quiet
[ -f out/chat_logs/manifest.json ] || ./scripts/run-sample.sh
hs=./target/debug/hindsight
$hs export-hf --out "$tmp/model" >/dev/null
$hs export out/chat_logs --to axolotl-kd --out "$tmp/axolotl" >/dev/null
echo "set-up: $((SECONDS - start)) s"
set +e

trl=.venv-trl/bin/python ax=.venv-axolotl/bin/python
check "TRL losses with an online teacher = hindsight_data offline (1e-4)" \
  $trl tests/trainers/check_trl_equivalence.py out/chat_logs "$tmp/model"
check "Axolotl's KD collator + loss on the export = hindsight_data (1e-5)" \
  $ax tests/trainers/check_axolotl.py out/chat_logs "$tmp/axolotl" "$tmp/model"
mkdir "$tmp/axolotl-run"
$ax tests/trainers/make_tiny_axolotl_run.py "$tmp/model" "$tmp/axolotl" "$tmp/axolotl-run"
axolotl_train() {
  PATH="$PWD/.venv-axolotl/bin:$PATH" axolotl train "$tmp/axolotl-run/kd.yml" >"$tmp/axolotl-run/train.log" 2>&1 \
    || { tail -30 "$tmp/axolotl-run/train.log"; return 1; }
  grep -o "{'loss': '[0-9.]*'" "$tmp/axolotl-run/train.log" | sed 's/^/  axolotl step /'
  $ax tests/trainers/check_axolotl.py --falls "$tmp/axolotl" "$tmp/axolotl-run/tiny" "$tmp/axolotl-run/out"
}
check "axolotl train (CPU, tiny model, 5 steps): KD loss falls" axolotl_train
check "TRL SDFTConfig + DistillationTrainer (examples/trl/train.py, reverse KL + tail): held-out KL drops" \
  $trl examples/trl/train.py out/chat_logs "$tmp/model" --add-tail --steps 10
check "plain PyTorch (examples/pytorch/train.py): held-out KL drops" \
  $trl examples/pytorch/train.py out/chat_logs "$tmp/model" --steps 10
$hs run pipelines/hints.toml --output "$tmp/hints" --no-progress >/dev/null 2>&1
$hs run pipelines/hints.toml --output "$tmp/hints-compact" --no-progress --set score.student_top_k=8 \
  --set contract.encoding=compact >/dev/null 2>&1
check "hindsight_data unit tests (with torch installed)" env HINDSIGHT_TEST_LOSSLESS="$tmp/hints" \
  HINDSIGHT_TEST_COMPACT="$tmp/hints-compact" $trl -m unittest discover -s python/tests

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
