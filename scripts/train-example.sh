#!/usr/bin/env bash
# The example offline self-distillation trainer (examples/trainer/) end to end:
#   1. sets up .venv-trainer/ with the pinned PyTorch + transformers stack (about 5.8 GB: the
#      PyPI torch wheel for Linux x86_64 is the CUDA build and pulls the nvidia-* wheels; it runs
#      on the CPU all the same);
#   2. provisions the embedded model and, only when out/chat_logs/manifest.json is missing, makes
#      the sample dataset with ./scripts/run-sample.sh;
#   3. trains the model on out/chat_logs and exits non-zero unless the held-out
#      KL(teacher || student) after training is lower than before.
# Extra arguments go to train.py (e.g. --steps 10, --summary out.json, --save DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.venv-trainer
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/trainer/requirements.txt
# The hindsight_data package (python/): reading, decoding, alignment and the losses.
"$venv/bin/pip" install --quiet --disable-pip-version-check ./python
./scripts/fetch-model.sh
if [ ! -f out/chat_logs/manifest.json ]; then
  ./scripts/run-sample.sh
fi
"$venv/bin/python" examples/trainer/train.py out/chat_logs --require-kl-decrease "$@"
