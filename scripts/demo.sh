#!/usr/bin/env bash
# Install Pathway and run the demo gateway on http://127.0.0.1:8000 (fresh SQLite database).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pathway demo "$@"
