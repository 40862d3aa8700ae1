"""auto-sklearn 0.15 as a model family: budget = ``time_left_for_this_task`` seconds.

auto-sklearn needs scikit-learn 0.24 and numpy 1.23, which have no place in the main environment,
so fits run in its own cached environment (``scripts/autosklearn-env.sh``) as a worker subprocess.
Each rung refits from scratch with the larger time budget. Where the environment is absent, a trial
fails with the reason and the build command, and its tests are skipped saying so.
"""

from __future__ import annotations

import json
from typing import ClassVar

from rungflow.budgets.space import SearchSpace
from rungflow.tasks.trainables.base import TrainableOptions, register
from rungflow.tasks.trainables.external import AUTOSKLEARN, ExternalModel, ExternalOptions, ExternalTrainable
from rungflow.tasks.trainables.tabular import FamilyFit

__all__ = ["AutoSklearnOptions", "AutoSklearnTrainable", "AutoSklearnModel"]


class AutoSklearnOptions(ExternalOptions):
    memory_limit_mb: int = 3072


class AutoSklearnModel(ExternalModel):
    """A fitted auto-sklearn ensemble; loading and prediction happen in the auto-sklearn environment."""

    backend = "autosklearn"
    env_spec = AUTOSKLEARN
    saved_as = "autosklearn"


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

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        time_limit = max(int(round(budget)), 30)
        model, result = self.fit_in_worker(config, dataset, time_limit, {
            "time_limit": time_limit, "seed": seed, "memory_limit_mb": self.options.memory_limit_mb})
        metrics = {"askl_fit_seconds": float(result["fit_seconds"]), "askl_models": float(result["n_models"])}
        board = json.dumps({"time_limit": time_limit, "leaderboard": result["leaderboard"]}).encode()
        return FamilyFit(model, float(time_limit), float(time_limit), board, metrics)
