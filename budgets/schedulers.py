"""Rung schedulers: how far each trial runs.

Synchronous schedulers (FIFO, successive halving, Hyperband) are a list of brackets planned up
front; each rung is a stage that ends at a barrier with :func:`gate_rung`. The asynchronous one
(ASHA) answers "what next?" whenever a worker is free, so no worker idles at a rung barrier.
Neither proposes configurations nor runs anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from rungflow.budgets.rungs import BracketPlan, RungPlan, bracket_plan, hyperband_plan, max_bracket_index, rung_budgets

__all__ = [
    "RungDecision",
    "TrialScore",
    "gate_rung",
    "rank_key",
    "SchedulerKind",
    "SyncScheduler",
    "FIFOScheduler",
    "SuccessiveHalvingScheduler",
    "HyperbandScheduler",
    "ASHAScheduler",
    "AshaJob",
    "make_scheduler",
]

Mode = Literal["max", "min"]


class SchedulerKind(StrEnum):
    FIFO = "fifo"
    SHA = "sha"
    HYPERBAND = "hyperband"
    ASHA = "asha"


@dataclass(frozen=True)
class TrialScore:
    trial_id: str
    score: float | None  # None: failed


@dataclass(frozen=True)
class RungDecision:
    """The gate's verdict on one rung: who goes on, who stops, in rank order."""

    promote: tuple[str, ...]
    stop: tuple[str, ...]


def rank_key(score: float | None, mode: Mode) -> float:
    """Sort key, smaller is better; failed, NaN and infinite scores rank last."""
    if score is None or not math.isfinite(score):
        return math.inf
    return -score if mode == "max" else score


def gate_rung(results: Sequence[TrialScore], keep: int, mode: Mode) -> RungDecision:
    """Keep the best ``keep`` trials of a rung (ties broken by trial id so the cut is reproducible).

    Failed trials never pass, even when fewer than ``keep`` trials succeeded.
    """
    ranked = sorted(results, key=lambda r: (rank_key(r.score, mode), r.trial_id))
    passing = [r.trial_id for r in ranked if math.isfinite(rank_key(r.score, mode))][: max(0, keep)]
    passing_set = set(passing)
    return RungDecision(promote=tuple(passing), stop=tuple(r.trial_id for r in ranked if r.trial_id not in passing_set))


@dataclass(frozen=True)
class SyncScheduler:
    """A scheduler whose brackets are fixed in advance; the flow runs them rung by rung."""

    kind: SchedulerKind
    brackets: tuple[BracketPlan, ...]
    min_budget: float
    max_budget: float
    eta: float
    synchronous: bool = field(default=True, init=False)

    def budget_units(self) -> float:
        return sum(b.budget_units() for b in self.brackets)

    def num_trials(self) -> int:
        return sum(b.num_trials for b in self.brackets)

    @property
    def brackets_per_iteration(self) -> int | None:
        """Brackets in one iteration (every bracket size once): Hyperband s_max + 1, successive halving 1,
        FIFO None (a single bracket is no repeated sample of the space)."""
        if self.kind == SchedulerKind.HYPERBAND:
            return len({b.s for b in self.brackets})
        if self.kind == SchedulerKind.SHA:
            return 1
        return None


def FIFOScheduler(*, num_trials: int, max_budget: float, min_budget: float | None = None, eta: float = 3) -> SyncScheduler:
    """Every trial to the full budget: one rung, no early stopping (the full-budget baseline)."""
    bracket = BracketPlan(index=0, s=0, rungs=(RungPlan(0, float(max_budget), num_trials),))
    return SyncScheduler(SchedulerKind.FIFO, (bracket,), float(min_budget or max_budget), float(max_budget), eta)


def SuccessiveHalvingScheduler(
    *, min_budget: float, max_budget: float, eta: float, integer: bool = True, num_trials: int | None = None,
    iterations: int = 1,
) -> SyncScheduler:
    """Successive halving (Jamieson & Talwalkar, 2016): Hyperband's most aggressive bracket, repeated."""
    s_max = max_bracket_index(min_budget, max_budget, eta)
    brackets = tuple(
        bracket_plan(s_max, s_max, min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer, index=i,
                     num_trials=num_trials)
        for i in range(iterations)
    )
    return SyncScheduler(SchedulerKind.SHA, brackets, min_budget, max_budget, eta)


def HyperbandScheduler(
    *, min_budget: float, max_budget: float, eta: float, integer: bool = True, iterations: int = 1
) -> SyncScheduler:
    """Hyperband (Li et al., 2018): brackets s = s_max … 0, each a successive-halving run; repeated."""
    brackets = tuple(hyperband_plan(min_budget, max_budget, eta, integer=integer, iterations=iterations))
    return SyncScheduler(SchedulerKind.HYPERBAND, brackets, min_budget, max_budget, eta)


@dataclass(frozen=True)
class AshaJob:
    """Run ``trial_id`` (None: a new trial) at rung ``rung`` up to ``budget``."""

    trial_id: str | None
    rung: int
    budget: float


class ASHAScheduler:
    """Asynchronous successive halving (Li et al., 2020), minimum early-stopping rate 0.

    Whenever a worker frees up, :meth:`next_job` promotes the highest-rung trial that ranks in the
    top 1/η of its rung *so far*, and otherwise starts a new trial at the bottom rung, until
    ``num_trials`` trials have started.
    """

    kind = SchedulerKind.ASHA
    synchronous = False

    def __init__(
        self, *, min_budget: float, max_budget: float, eta: float, num_trials: int, mode: Mode = "max",
        integer: bool = True,
    ) -> None:
        self.min_budget, self.max_budget, self.eta, self.mode = min_budget, max_budget, eta, mode
        self.num_trials = num_trials
        self.budgets = rung_budgets(min_budget, max_budget, eta, integer=integer)
        self._results: list[dict[str, float | None]] = [{} for _ in self.budgets]
        self._promoted: list[set[str]] = [set() for _ in self.budgets]
        self.started = 0

    def next_job(self) -> AshaJob | None:
        """Called when a worker is free; None means nothing to do until a running trial reports."""
        for rung in range(len(self.budgets) - 2, -1, -1):
            candidate = self._promotable(rung)
            if candidate is not None:
                self._promoted[rung].add(candidate)
                return AshaJob(candidate, rung + 1, self.budgets[rung + 1])
        if self.started < self.num_trials:
            self.started += 1
            return AshaJob(None, 0, self.budgets[0])
        return None

    def _promotable(self, rung: int) -> str | None:
        results = self._results[rung]
        keep = int(math.floor(len(results) / self.eta))
        if keep == 0:
            return None
        ranked = sorted(results.items(), key=lambda kv: (rank_key(kv[1], self.mode), kv[0]))
        for trial_id, score in ranked[:keep]:
            if trial_id not in self._promoted[rung] and math.isfinite(rank_key(score, self.mode)):
                return trial_id
        return None

    def on_result(self, trial_id: str, rung: int, score: float | None) -> None:
        """Called once per finished (trial, rung), failed trials with ``score=None``."""
        self._results[rung][trial_id] = score

    def mark_started(self, count: int) -> None:
        """Count trials started before a resume, so the total stays ``num_trials``."""
        self.started = max(self.started, count)

    def budget_units(self) -> float:
        """Budget units if the rungs fill as a successive-halving bracket of ``num_trials`` would."""
        total, previous = 0.0, 0.0
        for k, budget in enumerate(self.budgets):
            total += max(1, int(math.floor(self.num_trials * self.eta ** (-k) + 1e-9))) * (budget - previous)
            previous = budget
        return total


def make_scheduler(
    kind: str, *, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
    num_trials: int | None, mode: Mode,
) -> SyncScheduler | ASHAScheduler:
    if kind == SchedulerKind.FIFO:
        return FIFOScheduler(num_trials=num_trials or 16, max_budget=max_budget, min_budget=min_budget, eta=eta)
    if kind == SchedulerKind.SHA:
        return SuccessiveHalvingScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer,
                                          num_trials=num_trials, iterations=iterations)
    if kind == SchedulerKind.HYPERBAND:
        return HyperbandScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer,
                                  iterations=iterations)
    if kind == SchedulerKind.ASHA:
        if num_trials is None:
            # As many trials as the same number of Hyperband iterations would start.
            num_trials = sum(b.num_trials for b in hyperband_plan(min_budget, max_budget, eta, integer=integer,
                                                                  iterations=iterations))
        return ASHAScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, num_trials=num_trials, mode=mode,
                             integer=integer)
    raise ValueError(f"scheduler.kind: unknown scheduler {kind!r}; use one of {', '.join(k.value for k in SchedulerKind)}")
