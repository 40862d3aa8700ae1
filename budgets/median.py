"""The median stopping rule (Golovin et al., 2017, Google Vizier): stop a trial that is worse than the median.

Asynchronous like ASHA: no rung barriers. A trial runs rung by rung through the budgets successive
halving would use; at each rung it stops if its score is worse than the median of the scores the
*other* trials reached at that budget so far, once at least ``min_samples`` of them have and the
budget is at least ``grace_budget``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from rungflow.budgets.rungs import rung_budgets
from rungflow.budgets.scheduling import Mode, SchedulerKind, rank_key
from rungflow.budgets.stopping_rule import StoppingRuleScheduler

__all__ = ["MedianStoppingScheduler"]


class MedianStoppingScheduler(StoppingRuleScheduler):
    """Median stopping over the rungs ``rung_budgets(min_budget, max_budget, eta)``."""

    kind = SchedulerKind.MEDIAN

    def __init__(
        self, *, min_budget: float, max_budget: float, eta: float, num_trials: int, mode: Mode = "max",
        integer: bool = True, grace_budget: float = 0.0, min_samples: int = 3,
    ) -> None:
        if min_samples < 1:
            raise ValueError(f"The value of min_samples is {min_samples}, but must be at least 1")
        if not 0 <= grace_budget <= max_budget:
            raise ValueError(f"The value of grace_budget is {grace_budget}, but must be within [0, max_budget={max_budget}]")
        super().__init__(budgets=rung_budgets(min_budget, max_budget, eta, integer=integer), min_budget=min_budget,
                         max_budget=max_budget, eta=eta, num_trials=num_trials, mode=mode)
        self.grace_budget, self.min_samples = grace_budget, min_samples
        # Finite scores per rung, by trial: the sample each later arrival is judged against.
        self._scores: list[dict[str, float]] = [{} for _ in self.budgets]

    def record_and_judge(self, trial_id: str, rung: int, score: float) -> bool:
        scores = self._scores[rung]
        others = [s for t, s in scores.items() if t != trial_id]
        scores[trial_id] = score
        return self.should_stop(score, others, self.budgets[rung])

    def should_stop(self, score: float, others: Sequence[float], budget: float) -> bool:
        """Whether ``score`` at ``budget`` is strictly worse than the median of ``others`` (enough of them, past grace)."""
        if budget < self.grace_budget or len(others) < self.min_samples:
            return False
        return rank_key(score, self.mode) > rank_key(statistics.median(others), self.mode)
