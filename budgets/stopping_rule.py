"""Asynchronous schedulers that run each trial rung by rung and stop it by a rule: what median stopping and ASHA's
stopping variant share. A subclass says only how a result is recorded and judged."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rungflow.budgets.rungs import BracketPlan, RungPlan
from rungflow.budgets.scheduling import ForecastScope, Job, Mode, Stage

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord

__all__ = ["StoppingRuleScheduler"]


class StoppingRuleScheduler(ABC):
    """Every trial climbs ``budgets`` one rung at a time until the rule stops it or it reaches the top.

    :meth:`next_job` continues a trial that passed its rung before it starts a new one, so started trials finish
    before new ones begin, until ``num_trials`` have started. Decisions depend only on the order results arrive in,
    so a replay of the ledger in billing order rebuilds them exactly.
    """

    synchronous = False
    brackets_per_iteration: int | None = None

    def __init__(self, *, budgets: Sequence[float], min_budget: float, max_budget: float, eta: float,
                 num_trials: int, mode: Mode) -> None:
        if num_trials < 1:
            raise ValueError(f"The value of num_trials is {num_trials}, but must be at least 1")
        self.min_budget, self.max_budget, self.eta, self.mode = min_budget, max_budget, eta, mode
        self.num_trials = num_trials
        self.budgets = list(budgets)
        self._continuing: deque[tuple[str, int]] = deque()
        self.stopped: dict[str, int] = {}  # trial -> the rung where the rule (or a failure) stopped it
        self.started = 0

    @abstractmethod
    def record_and_judge(self, trial_id: str, rung: int, score: float) -> bool:
        """Record a finite result; True when the rule stops the trial at ``rung``."""

    def first_report(self, trial_id: str, rung: int) -> bool:
        """Whether this (trial, rung) is judged now; a rule that judges on the first report only says False after."""
        return True

    @property
    def brackets(self) -> tuple[BracketPlan, ...]:
        """Every trial through every rung: the schedule if the rule stopped nobody, its upper bound. The plan,
        ``rungflow plan`` and the budget forecasts assume it."""
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
        """The rules read scores only."""

    def on_result(self, trial_id: str, rung: int, score: float | None) -> None:
        """Called once per finished (trial, rung): the trial goes on to the next rung unless the rule stops it."""
        if not self.first_report(trial_id, rung):
            return
        if score is None or not math.isfinite(score):
            self.stopped[trial_id] = rung  # a failed trial has nothing to continue from
            return
        stops = self.record_and_judge(trial_id, rung, float(score))
        if rung + 1 >= len(self.budgets):
            return
        if stops:
            self.stopped[trial_id] = rung
            return
        self._continuing.append((trial_id, rung + 1))

    def mark_started(self, count: int) -> None:
        """Count trials started before a resume, so the total stays ``num_trials``."""
        self.started = max(self.started, count)

    def stop_starting(self) -> None:
        """The searcher is exhausted: the new trial just handed out never started, and no other will."""
        self.num_trials = self.started - 1

    def budget_units(self) -> float:
        """Budget units if nobody is stopped: every trial to the full budget, resuming from checkpoints (an upper
        bound)."""
        return self.num_trials * self.budgets[-1]

    def forecast_scope(self, stage: Stage, records: Sequence[SpendRecord], mode: Mode) -> ForecastScope | None:
        """A fresh trial through every rung, the rule's worst case."""
        return ForecastScope(tuple((b, 1) for b in self.budgets))
