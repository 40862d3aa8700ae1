"""Fits in a worker interpreter: AutoML libraries run as subprocesses, whichever environment holds them.

auto-sklearn 0.15 needs scikit-learn 0.24 and numpy 1.23, which cannot share the main environment, so it
runs in its own cached virtual environment built by ``scripts/autosklearn-env.sh``. AutoGluon shares the
main environment (``pip install 'rungflow[autogluon]'``), or any other one named by
``$RUNGFLOW_AUTOGLUON_ENV``; it still fits in a subprocess, so a crashed fit never takes the trial's worker
down with it. The trial talks to the worker through files:
``request.json`` and ``data.npz`` in, ``result.json`` (metrics, leaderboard) and ``scores.npy`` out,
the fitted model in ``model/``. The worker scripts under ``tasks/trainables/workers/`` (and
``worker_protocol.py`` beside them, their shared end of those files) import only the standard library,
numpy and the AutoML library, never rungflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rungflow.tasks.data import Dataset
from rungflow.tasks.models import FittedModel, _kwargs_of
from rungflow.tasks.trainables.base import TrainableError, TrainableOptions
from rungflow.tasks.trainables.tabular import FamilyFit, TabularOptions, TabularTrainable

__all__ = ["ExternalEnv", "AUTOGLUON", "AUTOSKLEARN", "run_worker", "worker_environment", "worker_request", "ExternalModel", "ExternalOptions", "ExternalTrainable"]

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

    @classmethod
    def cached(cls, key: str, name: str, build_hint: str, in_process_module: str | None = None) -> ExternalEnv:
        """The environment of library ``key`` as rungflow names every one: ``$RUNGFLOW_<KEY>_ENV`` overrides
        ``~/.cache/rungflow/<key>``, and ``workers/<key>_worker.py`` runs in it."""
        return cls(name, f"RUNGFLOW_{key.upper()}_ENV", f"~/.cache/rungflow/{key}", build_hint, f"{key}_worker.py",
                   in_process_module)


AUTOGLUON = ExternalEnv.cached(
    "autogluon", "AutoGluon",
    "pip install 'rungflow[autogluon]' (or set $RUNGFLOW_AUTOGLUON_ENV to a venv that has autogluon.tabular)",
    in_process_module="autogluon.tabular",
)
AUTOSKLEARN = ExternalEnv.cached(
    "autosklearn", "auto-sklearn",
    "bash scripts/autosklearn-env.sh (scripts/setup.sh does it; about 1 minute where CPython 3.9 is installed)",
)


def worker_environment() -> dict[str, str]:
    """The environment a library's worker process starts with.

    A worker in another environment must not see our site-packages or repo on its path: it has its own pins. Its own
    folder must stay on it (no PYTHONSAFEPATH): the scripts import worker_protocol from there.

    ``RAY_ADDRESS=local``: AutoGluon's ``best_quality`` calls a bare ``ray.init()`` (its dynamic-stacking sub-fit, its
    parallel bagging), and a bare ``ray.init()`` joins whichever Ray it finds on the machine: the sweep's own cluster
    (booking its trials' CPUs a second time) or, after a crash, a dead one whose address file remains, where it waits
    on the GCS until the worker's timeout. The worker runs inside its trial's CPU share, so its Ray is its own.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["RAY_ADDRESS"] = "local"
    return env


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
            env=worker_environment(),
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


def worker_request(dataset: Dataset | Mapping[str, Any]) -> dict[str, Any]:
    """What every worker is told of the data: its columns, their categories and the task (from a dataset or an encoding)."""
    enc = dataset.encoding() if isinstance(dataset, Dataset) else dict(dataset)
    return {
        "feature_names": enc["feature_names"],
        "categories": enc.get("categories", {}),
        "task": enc["task"],
        "n_classes": len(enc["classes"] or []) if enc.get("classes") else 0,
    }


class ExternalModel(FittedModel):
    """A model a worker fitted and keeps in ``directory``; it predicts in a worker too, in ``env_spec``'s interpreter.

    Saved as a copy of that directory under ``saved_as``. The library pickles internally, so load it only from
    directories rungflow wrote.
    """

    env_spec: ClassVar[ExternalEnv]
    saved_as: ClassVar[str]

    def __init_subclass__(cls, *, backend: str = "", env_spec: ExternalEnv | None = None, saved_as: str = "",
                          **kwargs: Any) -> None:
        # A library's model is its name in saved manifests, its worker's environment and the folder it saves under.
        if backend and env_spec is not None:
            cls.backend, cls.env_spec, cls.saved_as = backend, env_spec, saved_as or backend
        super().__init_subclass__(**kwargs)

    def __init__(self, directory: str | Path, *, leaderboard: list[dict[str, Any]] | None = None, env: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = Path(directory)
        self.leaderboard = list(leaderboard or [])
        self.env = env
        self._owned: weakref.finalize | None = None
        self._cached: tuple[np.ndarray, np.ndarray] | None = None

    def _scores(self, x: np.ndarray) -> np.ndarray:
        # The validation scores of the fit itself: saves a second interpreter start just to evaluate.
        if self._cached is not None and x is self._cached[0]:
            return self._cached[1]
        request = {**worker_request(self.encoding), "model_dir": str(self.directory.resolve())}
        _, scores, workdir = run_worker(self.env_spec, "predict", request, {"X_eval": x}, timeout=600, python_override=self.env)
        shutil.rmtree(workdir, ignore_errors=True)
        assert scores is not None
        return scores

    def _extra(self) -> dict[str, Any]:
        return {"leaderboard": self.leaderboard}

    def _save_files(self, directory: Path) -> None:
        shutil.copytree(self.directory, directory / self.saved_as)

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> ExternalModel:
        return cls(directory / cls.saved_as, leaderboard=manifest.get("extra", {}).get("leaderboard"), **_kwargs_of(manifest))


class ExternalOptions(TabularOptions):
    """``env``: the environment's folder, instead of ``$RUNGFLOW_<KEY>_ENV`` or the default one."""

    env: str | None = None


class ExternalTrainable(TabularTrainable):
    """A family whose fits run in :attr:`Model`'s worker, from scratch at each rung, with ``time_limit = budget`` seconds.

    A library says what its worker needs (:meth:`worker_options`) and which of its result's numbers become the
    trial's metrics (:meth:`result_metrics`); the fit, the leaderboard checkpoint and the budget accounting are shared.
    """

    Options: ClassVar[type[TrainableOptions]] = ExternalOptions
    options: ExternalOptions
    Model: ClassVar[type[ExternalModel]]
    min_time_limit: ClassVar[float] = 1.0

    def worker_options(self, config: Mapping[str, Any], *, device: str, seed: int) -> dict[str, Any]:
        """The library's own arguments for one fit, beside ``time_limit``."""
        return {"seed": seed}

    def result_metrics(self, result: Mapping[str, Any]) -> dict[str, float]:
        return {}

    def time_limit(self, budget: float) -> float:
        return max(float(budget), self.min_time_limit)

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        time_limit = self.time_limit(budget)
        model, result = self.fit_in_worker(config, dataset, time_limit, {
            "time_limit": time_limit, **self.worker_options(config, device=device, seed=seed)})
        board = {"time_limit": time_limit, **{k: result[k] for k in ("best_model",) if k in result},
                 "leaderboard": result["leaderboard"]}
        return FamilyFit(model, time_limit, time_limit, json.dumps(board).encode(), self.result_metrics(result))

    def check(self) -> None:
        # Before any spending: a missing environment is one line naming the command that builds it.
        self.Model.env_spec.require(self.options.env)
        super().check()

    def fit_in_worker(self, config: Mapping[str, Any], dataset: Dataset, time_limit: float,
                      request: Mapping[str, Any]) -> tuple[ExternalModel, dict[str, Any]]:
        """Fit in a fresh work directory; returns the model (which owns the directory) and the worker's result."""
        env = self.options.env
        workdir = Path(tempfile.mkdtemp(prefix=f"rungflow-{self.kind}-"))
        arrays = {"X_train": dataset.X_train, "y_train": dataset.y_train, "X_eval": dataset.X_valid}
        try:
            # Time limits are soft and the interpreter takes seconds to start: leave room.
            result, scores, _ = run_worker(self.Model.env_spec, "fit", {**worker_request(dataset), **request}, arrays,
                                           workdir=workdir, timeout=time_limit * 3 + 180, python_override=env)
        except TrainableError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        model = self.Model(workdir / "model", leaderboard=result["leaderboard"], env=env, family=self.kind,
                           encoding=dataset.encoding(), config=dict(config), budget=float(time_limit))
        assert scores is not None
        model._cached = (dataset.X_valid, scores)
        # The fit's temporary directory lives as long as the model object (save_model copies it out).
        model._owned = weakref.finalize(model, shutil.rmtree, str(workdir), True)
        return model, result

    def discard(self, model: FittedModel) -> None:
        # A trial keeps its leaderboard, not its fitted models: the winner is refitted by fit_model.
        if isinstance(model, ExternalModel) and model._owned is not None:
            model._owned()
