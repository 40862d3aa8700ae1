"""Asynchronous successive halving (Li et al., 2020) without rung barriers, in its two variants.

- ``promotion`` (:class:`ASHAScheduler`, the paper's algorithm and rungflow's default): a trial climbs a rung only
  when it ranks in the top ⌊n/η⌋ of the n results its rung has so far; until then it waits, holding no worker.
- ``stopping`` (:class:`StoppingASHAScheduler`, what Ray Tune's ``ASHAScheduler`` and Syne Tune's
  ``ASHA(type="stopping")`` run): a trial runs on from each rung unless it scores below the (1 − 1/η) quantile of the
  results recorded there before it, so the first trials at a rung always run on.

Which one is the default, and why: docs/migrate.md ("From Ray Tune").
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from rungflow.budgets.rungs import BracketPlan, RungPlan, milestone_budgets, rung_budgets
from rungflow.budgets.scheduling import ForecastScope, Job, Mode, SchedulerKind, Stage, rank_key
from rungflow.budgets.stopping_rule import StoppingRuleScheduler

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord

__all__ = ["AshaType", "ASHAScheduler", "StoppingASHAScheduler", "AshaJob"]


class AshaType(StrEnum):
    PROMOTION = "promotion"
    STOPPING = "stopping"


# The job type every scheduler hands out; kept under its first name for callers that used it.
AshaJob = Job


class ASHAScheduler:
    """Asynchronous successive halving, minimum early-stopping rate 0.

    Whenever a worker frees up, :meth:`next_job` promotes the highest-rung trial that ranks in the
    top 1/η of its rung *so far*, and otherwise starts a new trial at the bottom rung, until
    ``num_trials`` trials have started.
    """

    kind = SchedulerKind.ASHA
    asha_type = AshaType.PROMOTION
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


class StoppingASHAScheduler(StoppingRuleScheduler):
    """Asynchronous successive halving, stopping variant: Ray Tune's ``ASHAScheduler``, its rule on its milestones.

    The rungs are r_min · η^k up to R, then R (:func:`budgets.rungs.milestone_budgets`), Ray Tune's milestones
    with ``grace_period`` = r_min and ``max_t`` = R. When a trial reports at rung k below the top, its score is
    compared with the cutoff of the results recorded at rung k *before* it: their (1 − 1/η) quantile, linearly
    interpolated as ``numpy.percentile`` does, on scores signed so larger is better (Ray Tune's
    ``_Bracket.cutoff``). With nothing recorded there is no cutoff, so the first trial at each rung runs on. A
    score strictly below the cutoff stops the trial; otherwise it continues to rung k + 1. Either way the score is
    then recorded. A failed result (None, NaN or infinite) stops the trial and is not recorded: Ray Tune's
    ``nanpercentile`` ignores a NaN too, but runs its trial on.

    A trial that passed its rung continues before a new one starts, as under Ray Tune, where the trial never gives
    up its worker (:class:`rungflow.budgets.stopping_rule.StoppingRuleScheduler`). The plan assumes every trial
    reaches the top: the rule stops a trial only against the results recorded before it, so the first trials at a
    rung all run on, and with few trials (or results that improve in arrival order) every trial can.
    """

    kind = SchedulerKind.ASHA
    asha_type = AshaType.STOPPING

    def __init__(
        self, *, min_budget: float, max_budget: float, eta: float, num_trials: int, mode: Mode = "max",
        integer: bool = True,
    ) -> None:
        super().__init__(budgets=milestone_budgets(min_budget, max_budget, eta, integer=integer), min_budget=min_budget,
                         max_budget=max_budget, eta=eta, num_trials=num_trials, mode=mode)
        # Per rung, the scores recorded so far (signed: larger is better), in arrival order, by trial.
        self._recorded: list[dict[str, float]] = [{} for _ in self.budgets]
        self._decided: set[tuple[str, int]] = set()

    def first_report(self, trial_id: str, rung: int) -> bool:
        """A trial reported again at a rung was judged on its first report, as in Ray Tune."""
        if (trial_id, rung) in self._decided:
            return False
        self._decided.add((trial_id, rung))
        return True

    def record_and_judge(self, trial_id: str, rung: int, score: float) -> bool:
        recorded = self._recorded[rung]
        signed = score if self.mode == "max" else -score
        cutoff = self.cutoff(recorded.values())
        recorded[trial_id] = signed
        return cutoff is not None and signed < cutoff

    def cutoff(self, recorded: Iterable[float]) -> float | None:
        """The (1 − 1/η) quantile of ``recorded`` signed scores, below which a trial stops; None with none recorded."""
        values = list(recorded)
        if not values:
            return None
        return float(np.percentile(values, (1 - 1 / self.eta) * 100))
