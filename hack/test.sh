#!/usr/bin/env bash
# The project's one test command (README's `make test`; .ci/run calls it): lint, unit tests, then the
# Kubernetes and Docker integration suites against real parts. Everything it needs is installed by
# the scripts it calls (venv, Go-built control plane, Debian's docker.io), cached outside the repo.
#
#   bash hack/test.sh          # everything
#   bash hack/test.sh unit     # lint + unit tests (no cluster, no Docker)
#   bash hack/test.sh lint     # ruff + mypy only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
start=$(date +%s)
step() { echo "== [$(date +%H:%M:%S) +$(( $(date +%s) - start ))s] $*"; }

step "python environment (.venv)"
bash hack/venv.sh >/dev/null
bin=.venv/bin

step "lint: ruff check, ruff format --check, mypy"
"$bin/ruff" check operator tests bench
"$bin/ruff" format --check operator tests bench
"$bin/mypy"
[ "$mode" = lint ] && exit 0

if [ "$mode" = unit ]; then
  step "unit tests"
  exec "$bin/pytest" -q tests/unit
fi

step "stopping a demo operator if one runs (the tests start their own; two would fight)"
bash hack/demo.sh stop-operator

step "Kubernetes control plane binaries (built once from Go modules, then cached)"
bash hack/cluster.sh build
step "checkov: the Helm chart and the rendered samples (findings not in hack/checkov-skips.yaml fail)"
bash hack/checkov.sh
step "GitOps health harness (kstatus + gopher-lua, built once from Go modules, then cached)"
bash hack/gitops-health.sh build >/dev/null
step "Docker engine and locally built test images"
bash hack/docker.sh up
bash hack/test-images.sh
bash hack/test-images.sh base

step "pytest: unit, Kubernetes and Docker suites"
"$bin/pytest" -q --durations=15 tests
step "done"
