#!/usr/bin/env bash
# The main job on the embedded default: provisions the model, builds hindsight, runs
# pipelines/chat_logs.toml over sample-data/, validates the dataset, runs the relevance
# self-check, writes the HTML report and prints where both are.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-model.sh
cargo build --quiet
out="$(./target/debug/hindsight run pipelines/chat_logs.toml "$@")"
./target/debug/hindsight validate "$out"
./target/debug/hindsight stats "$out"
# The relevance self-check (relevant vs swapped, ack-only and unrelated follow-ups; the kinds of
# sample-data/followups.jsonl are labelled) goes next to the dataset; the report shows it.
./target/debug/hindsight eval-relevance pipelines/chat_logs.toml \
  --labels pipelines/chat_logs.labels.jsonl --out "$out/relevance_eval.json"
report="$(./target/debug/hindsight report "$out")"
echo "dataset: $out"
echo "report:  $report"
