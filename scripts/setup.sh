#!/usr/bin/env bash
# Creates .venv and installs rungflow with its test extras, from scratch. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned to the CPU build in pyproject.toml; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet -e ".[dev]"
# AutoGluon needs pyarrow>=23, the main env pins 19: it gets its own env, cached outside the clone
# (~70 s to build on 2 cores; skipped when cached). RUNGFLOW_SKIP_AUTOGLUON=1 leaves it out (its tests then skip).
if [ "${RUNGFLOW_SKIP_AUTOGLUON:-0}" != 1 ]; then
  bash scripts/autogluon-env.sh
fi
# auto-sklearn compiles scikit-learn 0.24 from source (~25 min on 2 cores): built only on request, then cached.
if [ "${RUNGFLOW_BUILD_AUTOSKLEARN:-0}" = 1 ]; then
  bash scripts/autosklearn-env.sh
fi
