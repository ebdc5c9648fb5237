#!/usr/bin/env bash
# The whole suite: set up if needed, lint, then unit and Mininet integration tests (as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
