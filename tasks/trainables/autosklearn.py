"""auto-sklearn 0.15 as a model family: budget = ``time_left_for_this_task`` seconds.

auto-sklearn needs scikit-learn 0.24 and numpy 1.23, which have no place in the main environment,
so fits run in its own cached environment (``scripts/autosklearn-env.sh``) as a worker subprocess.
Each rung refits from scratch with the larger time budget. Where the environment is absent, a trial
fails with the reason and the build command, and its tests are skipped saying so.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rungflow.budgets.space import SearchSpace
from rungflow.tasks.trainables.base import TrainableOptions, register
from rungflow.tasks.trainables.external import AUTOSKLEARN, ExternalModel, ExternalOptions, ExternalTrainable

__all__ = ["AutoSklearnOptions", "AutoSklearnTrainable", "AutoSklearnModel"]


class AutoSklearnOptions(ExternalOptions):
    memory_limit_mb: int = 3072


class AutoSklearnModel(ExternalModel, backend="autosklearn", env_spec=AUTOSKLEARN):
    """A fitted auto-sklearn ensemble; loading and prediction happen in the auto-sklearn environment."""


@register
class AutoSklearnTrainable(ExternalTrainable):
    """auto-sklearn with ``time_left_for_this_task = budget`` seconds (at least 30: its own minimum for a useful run)."""

    kind: ClassVar[str] = "autosklearn"
    budget_unit: ClassVar[str] = "seconds of time_left_for_this_task"
    default_budget: ClassVar[tuple[float, float]] = (30, 270)
    Options: ClassVar[type[TrainableOptions]] = AutoSklearnOptions
    options: AutoSklearnOptions
    Model = AutoSklearnModel

    def default_space(self) -> SearchSpace | None:
        return None  # auto-sklearn searches its own space; sweep only the budget (use scheduler.kind: fifo)

    def time_limit(self, budget: float) -> float:
        return float(max(int(round(budget)), 30))

    def worker_options(self, config, *, device, seed) -> dict[str, Any]:
        return {"seed": seed, "memory_limit_mb": self.options.memory_limit_mb}

    def result_metrics(self, result) -> dict[str, float]:
        return {"askl_fit_seconds": float(result["fit_seconds"]), "askl_models": float(result["n_models"])}
