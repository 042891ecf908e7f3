#!/usr/bin/env bash
# The main job on the embedded default: provisions the model, builds hindsight, runs
# pipelines/chat_logs.toml over sample-data/, validates the dataset and prints where it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-model.sh
cargo build --quiet
out="$(./target/debug/hindsight run pipelines/chat_logs.toml "$@")"
./target/debug/hindsight validate "$out"
./target/debug/hindsight stats "$out"
echo "dataset: $out"
