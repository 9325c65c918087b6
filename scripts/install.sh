#!/usr/bin/env bash
# Install selfhost into ./.venv (Python >= 3.11). Never pulls torch or vLLM: those are the deploy's business.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e .
echo "installed: $(.venv/bin/selfhost --version)"
