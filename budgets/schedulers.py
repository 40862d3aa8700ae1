"""Rung schedulers by name: how far each trial runs.

The contract is :mod:`budgets.scheduling`; each scheduler is a module of its own
(:mod:`budgets.hyperband`, :mod:`budgets.asha`) and one entry in :data:`SCHEDULERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from rungflow.budgets.asha import AshaJob, ASHAScheduler
from rungflow.budgets.hyperband import FIFOScheduler, HyperbandScheduler, SuccessiveHalvingScheduler, SyncScheduler
from rungflow.budgets.rungs import hyperband_plan
from rungflow.budgets.scheduling import (
    AsyncScheduler,
    ForecastScope,
    Job,
    Mode,
    RungDecision,
    Scheduler,
    SchedulerKind,
    Stage,
    TrialScore,
    gate_rung,
    rank_key,
)

__all__ = [
    "RungDecision", "TrialScore", "gate_rung", "rank_key", "SchedulerKind", "Scheduler", "AsyncScheduler", "Stage",
    "Job", "ForecastScope", "SyncScheduler", "FIFOScheduler", "SuccessiveHalvingScheduler", "HyperbandScheduler",
    "ASHAScheduler", "AshaJob", "SCHEDULERS", "make_scheduler",
]


def _fifo(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
          mode: Mode) -> Scheduler:
    return FIFOScheduler(num_trials=num_trials or 16, max_budget=max_budget, min_budget=min_budget, eta=eta)


def _sha(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
         mode: Mode) -> Scheduler:
    return SuccessiveHalvingScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer,
                                      num_trials=num_trials, iterations=iterations)


def _hyperband(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
               num_trials: int | None, mode: Mode) -> Scheduler:
    return HyperbandScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer,
                              iterations=iterations)


def _asha(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
          mode: Mode) -> Scheduler:
    if num_trials is None:
        # As many trials as the same number of Hyperband iterations would start.
        num_trials = sum(b.num_trials for b in hyperband_plan(min_budget, max_budget, eta, integer=integer,
                                                              iterations=iterations))
    return ASHAScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, num_trials=num_trials, mode=mode,
                         integer=integer)


SCHEDULERS: dict[str, Callable[..., Scheduler]] = {
    SchedulerKind.FIFO: _fifo,
    SchedulerKind.SHA: _sha,
    SchedulerKind.HYPERBAND: _hyperband,
    SchedulerKind.ASHA: _asha,
}


def make_scheduler(
    kind: str, *, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
    num_trials: int | None, mode: Mode,
) -> Scheduler:
    factory = SCHEDULERS.get(kind)
    if factory is None:
        raise ValueError(f"scheduler.kind: unknown scheduler {kind!r}; use one of {', '.join(SCHEDULERS)}")
    return factory(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer, iterations=iterations,
                   num_trials=num_trials, mode=mode)
