"""The median stopping rule (Golovin et al., 2017, Google Vizier): stop a trial that is worse than the median.

Asynchronous like ASHA: no rung barriers. A trial runs rung by rung through the budgets successive
halving would use; at each rung it stops if its score is worse than the median of the scores the
*other* trials reached at that budget so far, once at least ``min_samples`` of them have and the
budget is at least ``grace_budget``.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rungflow.budgets.rungs import BracketPlan, RungPlan, rung_budgets
from rungflow.budgets.scheduling import ForecastScope, Job, Mode, SchedulerKind, Stage, rank_key

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord

__all__ = ["MedianStoppingScheduler"]


class MedianStoppingScheduler:
    """Median stopping over the rungs ``rung_budgets(min_budget, max_budget, eta)``.

    :meth:`next_job` continues a trial that passed its rung first (so started trials finish before
    new ones begin), and otherwise starts a new trial, until ``num_trials`` have started.
    """

    kind = SchedulerKind.MEDIAN
    synchronous = False
    brackets_per_iteration: int | None = None

    def __init__(
        self, *, min_budget: float, max_budget: float, eta: float, num_trials: int, mode: Mode = "max",
        integer: bool = True, grace_budget: float = 0.0, min_samples: int = 3,
    ) -> None:
        if num_trials < 1:
            raise ValueError(f"The value of num_trials is {num_trials}, but must be at least 1")
        if min_samples < 1:
            raise ValueError(f"The value of min_samples is {min_samples}, but must be at least 1")
        if not 0 <= grace_budget <= max_budget:
            raise ValueError(f"The value of grace_budget is {grace_budget}, but must be within [0, max_budget={max_budget}]")
        self.min_budget, self.max_budget, self.eta, self.mode = min_budget, max_budget, eta, mode
        self.num_trials, self.grace_budget, self.min_samples = num_trials, grace_budget, min_samples
        self.budgets = rung_budgets(min_budget, max_budget, eta, integer=integer)
        # Finite scores per rung, by trial: the sample each later arrival is judged against.
        self._scores: list[dict[str, float]] = [{} for _ in self.budgets]
        self._continuing: deque[tuple[str, int]] = deque()
        self.stopped: dict[str, int] = {}  # trial -> the rung where the rule stopped it
        self.started = 0

    @property
    def brackets(self) -> tuple[BracketPlan, ...]:
        """Every trial through every rung: the schedule if the rule stopped nobody (its upper bound)."""
        rungs = tuple(RungPlan(k, b, self.num_trials) for k, b in enumerate(self.budgets))
        return (BracketPlan(index=0, s=len(rungs) - 1, rungs=rungs),)

    def next_job(self) -> Job | None:
        """Called when a worker is free; None means nothing to do until a running trial reports."""
        if self._continuing:
            trial_id, rung = self._continuing.popleft()
            return Job(trial_id, rung, self.budgets[rung])
        if self.started < self.num_trials:
            self.started += 1
            return Job(None, 0, self.budgets[0])
        return None

    def on_trial(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """The rule reads scores only."""

    def on_result(self, trial_id: str, rung: int, score: float | None) -> None:
        """Called once per finished (trial, rung): the trial goes on to the next rung unless the rule stops it."""
        if score is None or not math.isfinite(score):
            self.stopped[trial_id] = rung  # a failed trial has nothing to continue from
            return
        scores = self._scores[rung]
        others = [s for t, s in scores.items() if t != trial_id]
        scores[trial_id] = float(score)
        if rung + 1 >= len(self.budgets):
            return
        if self.should_stop(score, others, self.budgets[rung]):
            self.stopped[trial_id] = rung
            return
        self._continuing.append((trial_id, rung + 1))

    def should_stop(self, score: float, others: Sequence[float], budget: float) -> bool:
        """Whether ``score`` at ``budget`` is strictly worse than the median of ``others`` (enough of them, past grace)."""
        if budget < self.grace_budget or len(others) < self.min_samples:
            return False
        return rank_key(score, self.mode) > rank_key(statistics.median(others), self.mode)

    def mark_started(self, count: int) -> None:
        """Count trials started before a resume, so the total stays ``num_trials``."""
        self.started = max(self.started, count)

    def stop_starting(self) -> None:
        """The searcher is exhausted: the new trial just handed out never started, and no other will."""
        self.num_trials = self.started - 1

    def budget_units(self) -> float:
        """Budget units if nobody is stopped: every trial to the full budget (an upper bound)."""
        return self.num_trials * self.budgets[-1]

    def forecast_scope(self, stage: Stage, records: Sequence[SpendRecord], mode: Mode) -> ForecastScope | None:
        """A worker-pool's worth of fresh trials through every rung, the rule's worst case."""
        return ForecastScope(tuple((b, 1) for b in self.budgets))
