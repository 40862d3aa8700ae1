#!/usr/bin/env bash
# Builds the separate environment AutoGluon runs in. autogluon.tabular 1.6 needs pyarrow>=23, while
# the main environment pins pyarrow 19 (with numpy 1.x, pyarrow>=20 breaks `import ray.tune`), so
# AutoGluon fits run in this interpreter as a worker subprocess (tasks/trainables/external.py).
# Wheels only (about 1-2 minutes); cached OUTSIDE the clone and reused.
# Usage: scripts/autogluon-env.sh [VENV_DIR]   (default: $RUNGFLOW_AUTOGLUON_ENV or ~/.cache/rungflow/autogluon-py311)
set -euo pipefail
venv=${1:-${RUNGFLOW_AUTOGLUON_ENV:-$HOME/.cache/rungflow/autogluon-py311}}
if [ -f "$venv/.complete" ]; then echo "AutoGluon env already built at $venv"; exit 0; fi
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# lightgbm: AutoGluon's strongest fast model on small tables; without it the ensemble is forests, KNN and linear only.
"$venv/bin/python" -m pip install --quiet "autogluon.tabular[lightgbm]==1.6.3"
"$venv/bin/python" -c "import autogluon.tabular, numpy, pyarrow; print('autogluon ok', autogluon.tabular.__version__, numpy.__version__)"
# Marks a finished build: a half-built env is rebuilt, never used.
touch "$venv/.complete"
