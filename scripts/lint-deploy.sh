#!/usr/bin/env bash
# Validates deploy/k8s/*.yaml against the Kubernetes API schemas (kubernetes-validate, which
# ships the OpenAPI schemas of each release: no cluster and no network beyond PyPI needed).
# --strict rejects unknown fields, so a misspelt securityContext key fails instead of being
# ignored by the API server. Uses the test virtualenv (.venv-test/) if there is one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${HINDSIGHT_VENV:-.venv-test}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.37.0 deploy/k8s/*.yaml
echo "deploy/k8s: $(ls deploy/k8s/*.yaml | wc -l) manifests valid against Kubernetes 1.37 (strict)"
