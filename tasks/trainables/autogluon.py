"""AutoGluon (``autogluon.tabular``) as a model family: budget = ``time_limit`` seconds, its own ensembling kept.

Each fit runs as a worker subprocess (:mod:`rungflow.tasks.trainables.external`), in this interpreter when
``rungflow[autogluon]`` is installed here or in the venv ``$RUNGFLOW_AUTOGLUON_ENV`` names, so a crashed fit
never takes the trial's worker down.
A rung refits from scratch with the larger time limit: AutoGluon has no "continue for N more
seconds". The leaderboard of every fit is the trial's checkpoint (JSON, kept by the checkpoint
store per rung) and its headline numbers are in the trial's metrics.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from rungflow.budgets.space import CategoricalParam, SearchSpace
from rungflow.tasks.trainables.base import TrainableOptions, register
from rungflow.tasks.trainables.external import AUTOGLUON, ExternalModel, ExternalOptions, ExternalTrainable

__all__ = ["AutoGluonOptions", "AutoGluonTrainable", "AutoGluonModel"]


class AutoGluonOptions(ExternalOptions):
    """``presets`` and ``hyperparameters`` go to ``TabularPredictor.fit``; ``env`` overrides the environment path."""

    presets: str = "medium_quality"
    hyperparameters: dict[str, Any] | str | None = None
    num_cpus: int | None = 1
    # The cached environment has CPU builds of LightGBM & co.; GPUs go to AutoGluon only when asked
    # for (and the trial holds one), after installing GPU-enabled model libraries into that env.
    num_gpus: int = Field(0, ge=0)


class AutoGluonModel(ExternalModel, backend="autogluon", env_spec=AUTOGLUON,
                     saved_as="predictor"):
    """A fitted ``TabularPredictor``; predictions run in the AutoGluon environment."""


@register
class AutoGluonTrainable(ExternalTrainable):
    """AutoGluon with ``time_limit = budget`` seconds; the score is its ensemble's validation accuracy (R²)."""

    kind: ClassVar[str] = "autogluon"
    budget_unit: ClassVar[str] = "seconds of time_limit"
    default_budget: ClassVar[tuple[float, float]] = (10, 270)
    Options: ClassVar[type[TrainableOptions]] = AutoGluonOptions
    options: AutoGluonOptions
    Model = AutoGluonModel

    def default_space(self) -> SearchSpace:
        return SearchSpace((CategoricalParam("presets", ("medium_quality", "good_quality")),))

    def worker_options(self, config, *, device, seed) -> dict[str, Any]:
        opts = self.options
        return {
            "presets": config.get("presets", opts.presets),
            "hyperparameters": opts.hyperparameters,
            "num_cpus": opts.num_cpus,
            "num_gpus": opts.num_gpus if device.startswith("cuda") else 0,
            "seed": seed,
        }

    def result_metrics(self, result) -> dict[str, float]:
        metrics = {"ag_fit_seconds": float(result["fit_seconds"]), "ag_models": float(result["n_models"]),
                   "ag_worker_seconds": float(result["worker_seconds"])}
        for row in result["leaderboard"][:10]:
            if row.get("score_val") is not None:
                metrics[f"ag_score_val/{row['model']}"] = float(row["score_val"])
        return metrics
