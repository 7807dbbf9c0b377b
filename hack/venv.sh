#!/usr/bin/env bash
# Creates (or refreshes) .venv with the project and its dev tools; idempotent and quiet when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.xw-installed
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv" >&2
  "$PY" -m venv .venv
fi
# Reinstall only when the dependency declaration changed since the last install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== installing xw-operator (editable) and dev tools into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e '.[dev]' >&2
  touch "$stamp"
fi
echo "$PWD/.venv"
