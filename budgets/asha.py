"""Asynchronous successive halving (Li et al., 2020): promotion without rung barriers."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rungflow.budgets.rungs import BracketPlan, RungPlan, rung_budgets
from rungflow.budgets.scheduling import ForecastScope, Job, Mode, SchedulerKind, Stage, rank_key

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord

__all__ = ["ASHAScheduler", "AshaJob"]

# The job type every scheduler hands out; kept under its first name for callers that used it.
AshaJob = Job


class ASHAScheduler:
    """Asynchronous successive halving, minimum early-stopping rate 0.

    Whenever a worker frees up, :meth:`next_job` promotes the highest-rung trial that ranks in the
    top 1/η of its rung *so far*, and otherwise starts a new trial at the bottom rung, until
    ``num_trials`` trials have started.
    """

    kind = SchedulerKind.ASHA
    synchronous = False
    brackets_per_iteration: int | None = None

    def __init__(
        self, *, min_budget: float, max_budget: float, eta: float, num_trials: int, mode: Mode = "max",
        integer: bool = True,
    ) -> None:
        self.min_budget, self.max_budget, self.eta, self.mode = min_budget, max_budget, eta, mode
        self.num_trials = num_trials
        self.budgets = rung_budgets(min_budget, max_budget, eta, integer=integer)
        self._results: list[dict[str, float | None]] = [{} for _ in self.budgets]
        self._promoted: list[set[str]] = [set() for _ in self.budgets]
        # Per rung, (rank key, trial id) kept sorted: every result, and the finite ones not yet promoted.
        # A worker asks for a job per result, so a sort per ask would make a 10,000-trial sweep quadratic.
        self._ranked: list[list[tuple[float, str]]] = [[] for _ in self.budgets]
        self._candidates: list[list[tuple[float, str]]] = [[] for _ in self.budgets]
        self.started = 0

    @property
    def brackets(self) -> tuple[BracketPlan, ...]:
        """The rungs as one successive-halving bracket of ``num_trials`` would fill them, without barriers."""
        n, eta = self.num_trials, self.eta
        rungs = tuple(RungPlan(k, b, max(1, int(math.floor(n * eta ** (-k) + 1e-9)))) for k, b in enumerate(self.budgets))
        return (BracketPlan(index=0, s=len(rungs) - 1, rungs=rungs),)

    def next_job(self) -> Job | None:
        """Called when a worker is free; None means nothing to do until a running trial reports."""
        for rung in range(len(self.budgets) - 2, -1, -1):
            candidate = self._promotable(rung)
            if candidate is not None:
                self._promote(rung, candidate)
                return Job(candidate, rung + 1, self.budgets[rung + 1])
        if self.started < self.num_trials:
            self.started += 1
            return Job(None, 0, self.budgets[0])
        return None

    def _promotable(self, rung: int) -> str | None:
        """The best finite, unpromoted trial of ``rung`` if it ranks in the top ⌊n/η⌋ of the n results so far."""
        keep = int(math.floor(len(self._results[rung]) / self.eta))
        candidates = self._candidates[rung]
        if keep == 0 or not candidates:
            return None
        best = candidates[0]
        return best[1] if bisect.bisect_left(self._ranked[rung], best) < keep else None

    def _promote(self, rung: int, trial_id: str) -> None:
        self._promoted[rung].add(trial_id)
        entry = (rank_key(self._results[rung][trial_id], self.mode), trial_id)
        candidates = self._candidates[rung]
        i = bisect.bisect_left(candidates, entry)
        if i < len(candidates) and candidates[i] == entry:
            del candidates[i]

    def on_trial(self, trial_id: str, config: object) -> None:
        """ASHA ranks scores only."""

    def on_result(self, trial_id: str, rung: int, score: float | None) -> None:
        """Called once per finished (trial, rung), failed trials with ``score=None``."""
        results = self._results[rung]
        if trial_id in results:  # reported again: its earlier entry goes
            old = (rank_key(results[trial_id], self.mode), trial_id)
            for ranked in (self._ranked[rung], self._candidates[rung]):
                i = bisect.bisect_left(ranked, old)
                if i < len(ranked) and ranked[i] == old:
                    del ranked[i]
        results[trial_id] = score
        entry = (rank_key(score, self.mode), trial_id)
        bisect.insort(self._ranked[rung], entry)
        if math.isfinite(entry[0]) and trial_id not in self._promoted[rung]:
            bisect.insort(self._candidates[rung], entry)

    def mark_started(self, count: int) -> None:
        """Count trials started before a resume, so the total stays ``num_trials``."""
        self.started = max(self.started, count)

    def stop_starting(self) -> None:
        """The searcher is exhausted: the new trial just handed out never started, and no other will."""
        self.num_trials = self.started - 1

    def budget_units(self) -> float:
        """Budget units if the rungs fill as a successive-halving bracket of ``num_trials`` would."""
        total, previous = 0.0, 0.0
        for k, budget in enumerate(self.budgets):
            total += max(1, int(math.floor(self.num_trials * self.eta ** (-k) + 1e-9))) * (budget - previous)
            previous = budget
        return total

    def forecast_scope(self, stage: Stage, records: Sequence[SpendRecord], mode: Mode) -> ForecastScope | None:
        """One successive-halving bracket's worth of fresh trials through the rungs (η^(K−1−i) at rung i),
        ASHA's steady-state unit of work."""
        budgets, eta = self.budgets, self.eta
        return ForecastScope(tuple((b, max(1, int(round(eta ** (len(budgets) - 1 - i))))) for i, b in enumerate(budgets)))
