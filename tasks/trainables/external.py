"""Fits in a worker interpreter: AutoML libraries run as subprocesses, whichever environment holds them.

auto-sklearn 0.15 needs scikit-learn 0.24 and numpy 1.23, which cannot share the main environment, so it
runs in its own cached virtual environment built by ``scripts/autosklearn-env.sh``. AutoGluon shares the
main environment (``pip install 'rungflow[autogluon]'``), or any other one named by
``$RUNGFLOW_AUTOGLUON_ENV``; it still fits in a subprocess, so a crashed fit never takes the trial's worker
down with it. The trial talks to the worker through files:
``request.json`` and ``data.npz`` in, ``result.json`` (metrics, leaderboard) and ``scores.npy`` out,
the fitted model in ``model/``. The worker scripts under ``tasks/trainables/workers/`` import only
the standard library, numpy and the AutoML library, never rungflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from rungflow.tasks.trainables.base import TrainableError

__all__ = ["ExternalEnv", "AUTOGLUON", "AUTOSKLEARN", "run_worker"]

WORKERS = Path(__file__).resolve().parent / "workers"


@dataclass(frozen=True)
class ExternalEnv:
    """The interpreter a library's worker runs in: where it is cached, how to build it, which worker runs in it.

    With ``in_process_module`` set, the running interpreter serves when it can import that module and no
    environment is named explicitly.
    """

    name: str
    env_var: str
    default_dir: str
    build_hint: str
    worker: str
    in_process_module: str | None = None

    def _uses_this_interpreter(self, override: str | None) -> bool:
        if override or os.environ.get(self.env_var) or self.in_process_module is None:
            return False
        try:
            return find_spec(self.in_process_module) is not None
        except ModuleNotFoundError:  # a missing parent package
            return False

    def directory(self, override: str | None = None) -> Path:
        if self._uses_this_interpreter(override):
            return Path(sys.prefix)
        raw = override or os.environ.get(self.env_var) or self.default_dir
        return Path(raw).expanduser()

    def python(self, override: str | None = None) -> Path:
        if self._uses_this_interpreter(override):
            return Path(sys.executable)
        return self.directory(override) / "bin" / "python"

    def available(self, override: str | None = None) -> bool:
        if self._uses_this_interpreter(override):
            return True
        # .complete is written last by the build script: a half-built env counts as absent.
        directory = self.directory(override)
        return (directory / ".complete").is_file() and (directory / "bin" / "python").exists()

    def missing_reason(self, override: str | None = None) -> str:
        return f"{self.name} environment not built at {self.directory(override)}; run {self.build_hint}"

    def require(self, override: str | None = None) -> Path:
        if not self.available(override):
            raise TrainableError(self.missing_reason(override))
        return self.python(override)


AUTOGLUON = ExternalEnv(
    name="AutoGluon",
    env_var="RUNGFLOW_AUTOGLUON_ENV",
    default_dir="~/.cache/rungflow/autogluon",
    build_hint="pip install 'rungflow[autogluon]' (or set $RUNGFLOW_AUTOGLUON_ENV to a venv that has autogluon.tabular)",
    worker="autogluon_worker.py",
    in_process_module="autogluon.tabular",
)
AUTOSKLEARN = ExternalEnv(
    name="auto-sklearn",
    env_var="RUNGFLOW_AUTOSKLEARN_ENV",
    default_dir="~/.cache/rungflow/autosklearn",
    build_hint="bash scripts/autosklearn-env.sh (scripts/setup.sh does it; about 1 minute where CPython 3.9 is installed)",
    worker="autosklearn_worker.py",
)


def run_worker(env: ExternalEnv, command: str, request: Mapping[str, Any], arrays: Mapping[str, np.ndarray], *,
               workdir: Path | None = None, timeout: float, python_override: str | None = None) -> tuple[dict[str, Any], np.ndarray | None, Path]:
    """Run ``command`` (fit or predict) in ``env``'s interpreter; returns (result.json, scores.npy, workdir).

    A worker that fails, times out or writes no result raises :class:`TrainableError` with the end of its stderr.
    """
    python = env.require(python_override)
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"rungflow-{env.name.lower()}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "request.json").write_text(json.dumps({"command": command, **request}))
    np.savez(workdir / "data.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), str(WORKERS / env.worker), str(workdir)],
            capture_output=True, text=True, timeout=timeout,
            # A worker in another environment must not see our site-packages or repo on its path: it has its own pins.
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")},
        )
    except subprocess.TimeoutExpired:
        raise TrainableError(f"{env.name} worker ran past {timeout:.0f} s ({command}); lower the budget or raise the timeout") from None
    tail = "\n".join((proc.stderr or "").strip().splitlines()[-6:])
    result_path = workdir / "result.json"
    if proc.returncode != 0 or not result_path.is_file():
        raise TrainableError(f"{env.name} worker failed ({command}, exit {proc.returncode}): {tail or 'no output'}")
    result = json.loads(result_path.read_text())
    if result.get("error"):
        raise TrainableError(f"{env.name}: {result['error']}")
    result["worker_seconds"] = time.perf_counter() - started
    scores_path = workdir / "scores.npy"
    scores = np.load(scores_path, allow_pickle=False) if scores_path.is_file() else None
    return result, scores, workdir
