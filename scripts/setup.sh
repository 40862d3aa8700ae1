#!/usr/bin/env bash
# Creates .venv and installs rungflow with its test extras, from scratch, at the versions in constraints.txt.
# Also builds the auto-sklearn environment (its own interpreter) and installs Debian's chromium for the UI tests.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip's and the build backend's chatter goes to a log, shown only if the install fails: the terminal stays readable.
log=.venv/setup-pip.log
quiet() { "$@" >>"$log" 2>&1 || { tail -n 60 "$log" >&2; echo "set-up failed; the whole log is $log" >&2; exit 1; }; }
: >"$log"
echo "installing rungflow and its test extras into .venv (log: $log)"
quiet .venv/bin/python -m pip install --upgrade pip
# The constraints hold this machine's CPU torch and the prefect 3.8.8 server pins; users get pyproject's ranges.
quiet .venv/bin/python -m pip install -c constraints.txt -e ".[dev,autogluon]"
# tests/test_ui_browser.py drives Debian's chromium through Playwright (never a browser Playwright downloads);
# tests/test_terminal.py reads a sweep's screen back from tmux; tests/test_postgres.py runs Prefect on PostgreSQL;
# bench/redis_messaging.py runs Prefect's messaging on redis-server.
if ! command -v chromium >/dev/null 2>&1 || ! command -v tmux >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium tmux postgresql redis-server >/dev/null; } \
      || echo "note: apt-get could not install chromium, tmux, postgresql and redis-server; the browser, terminal and PostgreSQL tests will fail" >&2
  else
    echo "note: chromium, tmux, postgresql or redis-server is missing and installing them needs root and apt-get (apt-get install -y chromium tmux postgresql redis-server)" >&2
  fi
fi
# auto-sklearn 0.15 needs scikit-learn 0.24 and numpy 1.23: an environment of its own, cached outside the clone
# (about 1 minute with CPython 3.9 on the machine, 25 minutes without).
bash scripts/autosklearn-env.sh
