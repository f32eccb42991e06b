#!/usr/bin/env bash
# Install Pathway and run the test suite. SQLite by default; set
# PATHWAY_TEST_DATABASE_URL=postgresql://user@host:port/postgres to run it on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
