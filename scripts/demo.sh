#!/usr/bin/env bash
# Sets up and runs the main job on embedded defaults: a budget-capped Hyperband sweep of a real torch
# MLP on scikit-learn's digits, on local Ray, reporting to an embedded Prefect server (SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
.venv/bin/rungflow plan examples/digits.yaml
.venv/bin/rungflow sweep examples/digits.yaml --out runs/digits "$@"
