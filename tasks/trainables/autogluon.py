"""AutoGluon (``autogluon.tabular``) as a model family: budget = ``time_limit`` seconds, its own ensembling kept.

Each fit runs as a worker subprocess (:mod:`rungflow.tasks.trainables.external`), in this interpreter when
``rungflow[autogluon]`` is installed here or in the venv ``$RUNGFLOW_AUTOGLUON_ENV`` names, so a crashed fit
never takes the trial's worker down.
A rung refits from scratch with the larger time limit: AutoGluon has no "continue for N more
seconds". The leaderboard of every fit is the trial's checkpoint (JSON, kept by the checkpoint
store per rung) and its headline numbers are in the trial's metrics.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from rungflow.budgets.space import CategoricalParam, SearchSpace
from rungflow.tasks.data import Dataset
from rungflow.tasks.models import FittedModel
from rungflow.tasks.trainables.base import TrainableError, TrainableOptions, register
from rungflow.tasks.trainables.external import AUTOGLUON, run_worker
from rungflow.tasks.trainables.tabular import FamilyFit, TabularOptions, TabularTrainable

__all__ = ["AutoGluonOptions", "AutoGluonTrainable", "AutoGluonModel"]


class AutoGluonOptions(TabularOptions):
    """``presets`` and ``hyperparameters`` go to ``TabularPredictor.fit``; ``env`` overrides the environment path."""

    presets: str = "medium_quality"
    hyperparameters: dict[str, Any] | str | None = None
    num_cpus: int | None = 1
    # The cached environment has CPU builds of LightGBM & co.; GPUs go to AutoGluon only when asked
    # for (and the trial holds one), after installing GPU-enabled model libraries into that env.
    num_gpus: int = Field(0, ge=0)
    env: str | None = None


def _request(dataset: Dataset | Mapping[str, Any]) -> dict[str, Any]:
    enc = dataset.encoding() if isinstance(dataset, Dataset) else dict(dataset)
    return {
        "feature_names": enc["feature_names"],
        "categories": enc.get("categories", {}),
        "task": enc["task"],
        "n_classes": len(enc["classes"] or []) if enc.get("classes") else 0,
    }


class AutoGluonModel(FittedModel):
    """A fitted ``TabularPredictor``; predictions run in the AutoGluon environment."""

    backend = "autogluon"

    def __init__(self, predictor_dir: str | Path, *, leaderboard: list[dict[str, Any]] | None = None, env: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.predictor_dir = Path(predictor_dir)
        self.leaderboard = list(leaderboard or [])
        self.env = env
        self._owned: weakref.finalize | None = None
        self._cached: tuple[np.ndarray, np.ndarray] | None = None

    def _scores(self, x: np.ndarray) -> np.ndarray:
        # The validation scores of the fit itself: saves a second AutoGluon start just to evaluate.
        if self._cached is not None and x is self._cached[0]:
            return self._cached[1]
        request = {**_request(self.encoding), "model_dir": str(self.predictor_dir.resolve())}
        _, scores, workdir = run_worker(AUTOGLUON, "predict", request, {"X_eval": x}, timeout=600, python_override=self.env)
        shutil.rmtree(workdir, ignore_errors=True)
        assert scores is not None
        return scores

    def _extra(self) -> dict[str, Any]:
        return {"leaderboard": self.leaderboard}

    def _save_files(self, directory: Path) -> None:
        shutil.copytree(self.predictor_dir, directory / "predictor")

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> AutoGluonModel:
        from rungflow.tasks.models import _kwargs_of

        return cls(directory / "predictor", leaderboard=manifest.get("extra", {}).get("leaderboard"), **_kwargs_of(manifest))


@register
class AutoGluonTrainable(TabularTrainable):
    """AutoGluon with ``time_limit = budget`` seconds; the score is its ensemble's validation accuracy (R²)."""

    kind: ClassVar[str] = "autogluon"
    budget_unit: ClassVar[str] = "seconds of time_limit"
    integer_budget: ClassVar[bool] = True
    default_budget: ClassVar[tuple[float, float]] = (10, 270)
    Options: ClassVar[type[TrainableOptions]] = AutoGluonOptions
    options: AutoGluonOptions

    def default_space(self) -> SearchSpace:
        return SearchSpace((CategoricalParam("presets", ("medium_quality", "good_quality")),))

    def check(self) -> None:
        AUTOGLUON.require(self.options.env)  # before any spending: one line naming the extra to install
        super().check()

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        opts = self.options
        time_limit = max(float(budget), 1.0)
        request = {
            **_request(dataset),
            "time_limit": time_limit,
            "presets": config.get("presets", opts.presets),
            "hyperparameters": opts.hyperparameters,
            "num_cpus": opts.num_cpus,
            "num_gpus": opts.num_gpus if device.startswith("cuda") else 0,
            "seed": seed,
        }
        workdir = Path(tempfile.mkdtemp(prefix="rungflow-autogluon-"))
        arrays = {"X_train": dataset.X_train, "y_train": dataset.y_train, "X_eval": dataset.X_valid}
        try:
            # AutoGluon's time limit is soft and the interpreter takes seconds to start: leave room.
            result, scores, _ = run_worker(AUTOGLUON, "fit", request, arrays, workdir=workdir,
                                           timeout=time_limit * 3 + 180, python_override=opts.env)
        except TrainableError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        model = AutoGluonModel(workdir / "model", leaderboard=result["leaderboard"], env=opts.env, family=self.kind,
                               encoding=dataset.encoding(), config=dict(config), budget=time_limit)
        assert scores is not None
        model._cached = (dataset.X_valid, scores)
        # The fit's temporary directory lives as long as the model object (save_model copies it out).
        model._owned = weakref.finalize(model, shutil.rmtree, str(workdir), True)
        metrics = {"ag_fit_seconds": float(result["fit_seconds"]), "ag_models": float(result["n_models"]),
                   "ag_worker_seconds": float(result["worker_seconds"])}
        for row in result["leaderboard"][:10]:
            if row.get("score_val") is not None:
                metrics[f"ag_score_val/{row['model']}"] = float(row["score_val"])
        board = json.dumps({"time_limit": time_limit, "best_model": result["best_model"], "leaderboard": result["leaderboard"]}).encode()
        return FamilyFit(model, time_limit, time_limit, board, metrics)

    def discard(self, model: FittedModel) -> None:
        # A trial keeps its leaderboard, not its predictors: the winner is refitted by fit_model.
        if isinstance(model, AutoGluonModel):
            if model._owned is not None:
                model._owned()
