#!/usr/bin/env bash
# The main job (as root): set up if needed, then run the demo (fat-tree, waypoint, replicas) and print its report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
