#!/usr/bin/env bash
# Builds the separate environment auto-sklearn 0.15 runs in (it needs scikit-learn 0.24 and numpy 1.23, which
# cannot share the main environment). With a CPython 3.9 interpreter (pyenv's, or python3.9 on PATH) everything
# installs from wheels in about 20 s. Without one, scikit-learn 0.24.2 is compiled from source for the main
# Python (about 25 minutes on 2 cores). Either way the result is cached OUTSIDE the clone and reused.
# Usage: scripts/autosklearn-env.sh [VENV_DIR]   (default: $RUNGFLOW_AUTOSKLEARN_ENV or ~/.cache/rungflow/autosklearn)
set -euo pipefail
venv=${1:-${RUNGFLOW_AUTOSKLEARN_ENV:-$HOME/.cache/rungflow/autosklearn}}
if [ -f "$venv/.complete" ]; then echo "auto-sklearn env already built at $venv"; exit 0; fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"

py39=""
if command -v pyenv >/dev/null 2>&1; then
  for d in "$(pyenv root)"/versions/3.9.*; do [ -x "$d/bin/python" ] && py39="$d/bin/python"; done
fi
[ -n "$py39" ] || py39=$(command -v python3.9 || true)

constraints() {
  cat <<C
numpy==1.23.5
scipy==1.10.1
pandas<2
dask<2023.4
distributed<2023.4
scikit-learn==0.24.2
C
}

if [ -n "$py39" ]; then
  echo "auto-sklearn: CPython 3.9 at $py39, installing from wheels"
  "$py39" -m venv "$venv"
  P="$venv/bin/pip"
  "$P" -q install -U pip wheel 'setuptools<60'
  constraints > "$venv/constraints.txt"
  "$P" -q install -c "$venv/constraints.txt" auto-sklearn==0.15.0
else
  echo "auto-sklearn: no CPython 3.9 found; compiling scikit-learn 0.24.2 from source (~25 min on 2 cores)"
  PYTHON=${PYTHON:-python3.11}
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
  command -v swig >/dev/null || { apt-get update -qq && apt-get install -y -qq swig; }
  "$PYTHON" -m venv "$venv"
  P="$venv/bin/pip"
  "$P" -q install -U pip 'setuptools<60' wheel
  { constraints; echo 'Cython<3'; echo 'setuptools<60'; } > "$venv/constraints.txt"
  "$P" install -c "$venv/constraints.txt" numpy==1.23.5 'Cython<3' scipy==1.10.1 'pandas<2' 'dask<2023.4' 'distributed<2023.4'
  "$P" install --no-build-isolation -c "$venv/constraints.txt" scikit-learn==0.24.2
  # ConfigSpace, pyrfr and smac must be compiled against numpy 1.23, not a cached numpy 2 build.
  "$P" install --no-cache-dir --no-build-isolation -c "$venv/constraints.txt" auto-sklearn==0.15.0
fi
"$venv/bin/python" -c "import autosklearn.classification, sklearn, numpy; print('auto-sklearn ok', sklearn.__version__, numpy.__version__)"
# Marks a finished build: a half-built env (interrupted compile) is rebuilt, never used.
touch "$venv/.complete"
