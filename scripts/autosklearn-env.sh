#!/usr/bin/env bash
# Builds the separate Python 3.11 environment auto-sklearn 0.15 runs in (it needs scikit-learn 0.24,
# numpy 1.23, which cannot share the main environment). scikit-learn 0.24.2 has no wheel for 3.11 and
# is compiled from source (~25 minutes on 2 cores), so the result is cached OUTSIDE the clone and reused.
# Usage: scripts/autosklearn-env.sh [VENV_DIR]   (default: $RUNGFLOW_AUTOSKLEARN_ENV or ~/.cache/rungflow/autosklearn-py311)
set -euo pipefail
venv=${1:-${RUNGFLOW_AUTOSKLEARN_ENV:-$HOME/.cache/rungflow/autosklearn-py311}}
if [ -f "$venv/.complete" ]; then echo "auto-sklearn env already built at $venv"; exit 0; fi
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
command -v swig >/dev/null || { apt-get update -qq && apt-get install -y -qq swig; }
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$PYTHON" -m venv "$venv"
P="$venv/bin/pip"
"$P" -q install -U pip 'setuptools<60' wheel
cat > "$venv/constraints.txt" <<C
numpy==1.23.5
scipy==1.10.1
pandas<2
dask<2023.4
distributed<2023.4
scikit-learn==0.24.2
Cython<3
setuptools<60
C
"$P" install -c "$venv/constraints.txt" numpy==1.23.5 'Cython<3' scipy==1.10.1 'pandas<2' 'dask<2023.4' 'distributed<2023.4'
"$P" install --no-build-isolation -c "$venv/constraints.txt" scikit-learn==0.24.2
# ConfigSpace, pyrfr and smac must be compiled against numpy 1.23, not a cached numpy 2 build.
"$P" install --no-cache-dir --no-build-isolation -c "$venv/constraints.txt" auto-sklearn==0.15.0
"$venv/bin/python" -c "import autosklearn.classification, sklearn, numpy; print('auto-sklearn ok', sklearn.__version__, numpy.__version__)"
# Marks a finished build: a half-built env (interrupted compile) is rebuilt, never used.
touch "$venv/.complete"
