"""Fits in another interpreter: AutoML libraries whose pins cannot share the main environment.

AutoGluon 1.6 needs pyarrow>=23 (the main environment pins 19) and auto-sklearn 0.15 needs
scikit-learn 0.24 and numpy 1.23, so each runs in its own cached virtual environment, built by
``scripts/autogluon-env.sh`` / ``scripts/autosklearn-env.sh``. The trial talks to it through files:
``request.json`` and ``data.npz`` in, ``result.json`` (metrics, leaderboard) and ``scores.npy`` out,
the fitted model in ``model/``. The worker scripts under ``tasks/trainables/workers/`` import only
the standard library, numpy and the AutoML library, never rungflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tasks.trainables.base import TrainableError

__all__ = ["ExternalEnv", "AUTOGLUON", "AUTOSKLEARN", "run_worker"]

WORKERS = Path(__file__).resolve().parent / "workers"


@dataclass(frozen=True)
class ExternalEnv:
    """A separately built interpreter: where it is cached, how to build it, which worker runs in it."""

    name: str
    env_var: str
    default_dir: str
    build_hint: str
    worker: str

    def directory(self, override: str | None = None) -> Path:
        raw = override or os.environ.get(self.env_var) or self.default_dir
        return Path(raw).expanduser()

    def python(self, override: str | None = None) -> Path:
        return self.directory(override) / "bin" / "python"

    def available(self, override: str | None = None) -> bool:
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
    default_dir="~/.cache/rungflow/autogluon-py311",
    build_hint="bash scripts/autogluon-env.sh (scripts/setup.sh does it)",
    worker="autogluon_worker.py",
)
AUTOSKLEARN = ExternalEnv(
    name="auto-sklearn",
    env_var="RUNGFLOW_AUTOSKLEARN_ENV",
    default_dir="~/.cache/rungflow/autosklearn-py311",
    build_hint="RUNGFLOW_BUILD_AUTOSKLEARN=1 bash scripts/setup.sh (or bash scripts/autosklearn-env.sh; ~25 min on 2 cores)",
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
            # The worker must not see our site-packages or repo on its path: it has its own pins.
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
