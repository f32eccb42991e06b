#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Pathway with its test extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Pathway needs Python 3.11 or newer")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.pathway-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    touch "$stamp"
fi
# axe-core (pinned in tests/browser/package-lock.json) for the console's accessibility check.
if command -v npm >/dev/null 2>&1; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
