"""auto-sklearn 0.15 as a model family: budget = ``time_left_for_this_task`` seconds.

auto-sklearn needs scikit-learn 0.24 and numpy 1.23, which have no place in the main environment,
so fits run in its own cached environment (``scripts/autosklearn-env.sh``) as a worker subprocess.
Each rung refits from scratch with the larger time budget. Where the environment is absent, a trial
fails with the reason and the build command, and its tests are skipped saying so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from rungflow.budgets.space import SearchSpace
from rungflow.tasks.models import FittedModel
from rungflow.tasks.trainables.autogluon import _request
from rungflow.tasks.trainables.base import TrainableError, TrainableOptions, register
from rungflow.tasks.trainables.external import AUTOSKLEARN, run_worker
from rungflow.tasks.trainables.tabular import FamilyFit, TabularOptions, TabularTrainable

__all__ = ["AutoSklearnOptions", "AutoSklearnTrainable", "AutoSklearnModel"]


class AutoSklearnOptions(TabularOptions):
    memory_limit_mb: int = 3072
    env: str | None = None


class AutoSklearnModel(FittedModel):
    """A fitted auto-sklearn ensemble; loading and prediction happen in the auto-sklearn environment."""

    backend = "autosklearn"

    def __init__(self, model_dir: str | Path, *, leaderboard: list[dict[str, Any]] | None = None, env: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir = Path(model_dir)
        self.leaderboard = list(leaderboard or [])
        self.env = env
        self._owned: weakref.finalize | None = None
        self._cached = None

    def _scores(self, x):
        if self._cached is not None and x is self._cached[0]:
            return self._cached[1]
        request = {**_request(self.encoding), "model_dir": str(self.model_dir.resolve())}
        _, scores, workdir = run_worker(AUTOSKLEARN, "predict", request, {"X_eval": x}, timeout=600, python_override=self.env)
        shutil.rmtree(workdir, ignore_errors=True)
        return scores

    def _extra(self) -> dict[str, Any]:
        return {"leaderboard": self.leaderboard}

    def _save_files(self, directory: Path) -> None:
        shutil.copytree(self.model_dir, directory / "autosklearn")

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> AutoSklearnModel:
        from rungflow.tasks.models import _kwargs_of

        return cls(directory / "autosklearn", leaderboard=manifest.get("extra", {}).get("leaderboard"), **_kwargs_of(manifest))


@register
class AutoSklearnTrainable(TabularTrainable):
    """auto-sklearn with ``time_left_for_this_task = budget`` seconds (at least 30: its own minimum for a useful run)."""

    kind: ClassVar[str] = "autosklearn"
    budget_unit: ClassVar[str] = "seconds of time_left_for_this_task"
    integer_budget: ClassVar[bool] = True
    default_budget: ClassVar[tuple[float, float]] = (30, 270)
    Options: ClassVar[type[TrainableOptions]] = AutoSklearnOptions
    options: AutoSklearnOptions

    def default_space(self) -> SearchSpace | None:
        return None  # auto-sklearn searches its own space; sweep only the budget (use scheduler.kind: fifo)

    def check(self) -> None:
        AUTOSKLEARN.require(self.options.env)  # before any spending: one line naming the build command
        super().check()

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        opts = self.options
        time_limit = max(int(round(budget)), 30)
        request = {**_request(dataset), "time_limit": time_limit, "seed": seed, "memory_limit_mb": opts.memory_limit_mb}
        workdir = Path(tempfile.mkdtemp(prefix="rungflow-autosklearn-"))
        arrays = {"X_train": dataset.X_train, "y_train": dataset.y_train, "X_eval": dataset.X_valid}
        try:
            result, scores, _ = run_worker(AUTOSKLEARN, "fit", request, arrays, workdir=workdir,
                                           timeout=time_limit * 3 + 180, python_override=opts.env)
        except TrainableError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        model = AutoSklearnModel(workdir / "model", leaderboard=result["leaderboard"], env=opts.env, family=self.kind,
                                 encoding=dataset.encoding(), config=dict(config), budget=float(time_limit))
        model._cached = (dataset.X_valid, scores)
        # The fit's temporary directory lives as long as the model object (save_model copies it out).
        model._owned = weakref.finalize(model, shutil.rmtree, str(workdir), True)
        metrics = {"askl_fit_seconds": float(result["fit_seconds"]), "askl_models": float(result["n_models"])}
        board = json.dumps({"time_limit": time_limit, "leaderboard": result["leaderboard"]}).encode()
        return FamilyFit(model, float(time_limit), float(time_limit), board, metrics)

    def discard(self, model: FittedModel) -> None:
        if isinstance(model, AutoSklearnModel):
            if model._owned is not None:
                model._owned()
