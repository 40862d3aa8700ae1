"""Rung schedulers by name: how far each trial runs.

The contract is :mod:`budgets.scheduling`; each scheduler is a module of its own
(:mod:`budgets.hyperband`, :mod:`budgets.asha`, :mod:`budgets.median`, :mod:`budgets.pbt`) and one
entry in :data:`SCHEDULERS`. A factory takes the options every scheduler shares plus its own (e.g.
``population``); options meant for another scheduler are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rungflow.budgets.asha import AshaJob, ASHAScheduler, AshaType, StoppingASHAScheduler
from rungflow.budgets.hyperband import FIFOScheduler, HyperbandScheduler, SuccessiveHalvingScheduler, SyncScheduler
from rungflow.budgets.median import MedianStoppingScheduler
from rungflow.budgets.pbt import PBTScheduler
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
    "ASHAScheduler", "StoppingASHAScheduler", "AshaType", "AshaJob", "MedianStoppingScheduler", "PBTScheduler",
    "SCHEDULERS", "make_scheduler",
]


def _fifo(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
          mode: Mode, **_: Any) -> Scheduler:
    return FIFOScheduler(num_trials=num_trials or 16, max_budget=max_budget, min_budget=min_budget, eta=eta)


def _sha(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
         mode: Mode, max_open_brackets: int | None = None, **_: Any) -> Scheduler:
    return SuccessiveHalvingScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer,
                                      num_trials=num_trials, iterations=iterations, max_open_brackets=max_open_brackets)


def _hyperband(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
               num_trials: int | None, mode: Mode, max_open_brackets: int | None = None, **_: Any) -> Scheduler:
    return HyperbandScheduler(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer,
                              iterations=iterations, max_open_brackets=max_open_brackets)


def _asha(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
          mode: Mode, asha_type: str | None = None, **_: Any) -> Scheduler:
    if asha_type not in (None, *AshaType):
        raise ValueError(f"The value of asha_type is {asha_type!r}, but must be one of {', '.join(AshaType)}")
    variant = StoppingASHAScheduler if asha_type == AshaType.STOPPING else ASHAScheduler
    return variant(min_budget=min_budget, max_budget=max_budget, eta=eta, mode=mode, integer=integer,
                   num_trials=_hyperband_trials(min_budget, max_budget, eta, integer, iterations, num_trials))


def _hyperband_trials(min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
                      num_trials: int | None) -> int:
    """``num_trials``, or as many trials as the same number of Hyperband iterations would start."""
    if num_trials is not None:
        return num_trials
    return sum(b.num_trials for b in hyperband_plan(min_budget, max_budget, eta, integer=integer, iterations=iterations))


def _median(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
            num_trials: int | None, mode: Mode, grace_budget: float | None = None, min_samples: int | None = None,
            **_: Any) -> Scheduler:
    return MedianStoppingScheduler(
        min_budget=min_budget, max_budget=max_budget, eta=eta, mode=mode, integer=integer,
        num_trials=_hyperband_trials(min_budget, max_budget, eta, integer, iterations, num_trials),
        grace_budget=grace_budget if grace_budget is not None else 0.0,
        min_samples=min_samples if min_samples is not None else 3,
    )


def _pbt(*, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int, num_trials: int | None,
         mode: Mode, population: int | None = None, perturbation_interval: float | None = None,
         quantile_fraction: float | None = None, resample_probability: float | None = None,
         mutations: Any = None, burn_in: float | None = None, space: Any = None, seed: int = 0, **_: Any) -> Scheduler:
    # Without an explicit population, search.num_trials sizes it (8 if neither is set).
    return PBTScheduler(
        population=population if population is not None else (num_trials or 8),
        perturbation_interval=perturbation_interval if perturbation_interval is not None else min_budget,
        max_budget=max_budget, min_budget=min_budget, eta=eta, mode=mode, space=space, seed=seed,
        mutations=tuple(mutations) if mutations is not None else (),
        quantile_fraction=quantile_fraction if quantile_fraction is not None else 0.25,
        resample_probability=resample_probability if resample_probability is not None else 0.25,
        burn_in=burn_in if burn_in is not None else 0.0,
    )


SCHEDULERS: dict[str, Callable[..., Scheduler]] = {
    SchedulerKind.FIFO: _fifo,
    SchedulerKind.SHA: _sha,
    SchedulerKind.HYPERBAND: _hyperband,
    SchedulerKind.ASHA: _asha,
    SchedulerKind.MEDIAN: _median,
    SchedulerKind.PBT: _pbt,
}


def make_scheduler(
    kind: str, *, min_budget: float, max_budget: float, eta: float, integer: bool, iterations: int,
    num_trials: int | None, mode: Mode, **options: Any,
) -> Scheduler:
    """The scheduler called ``kind``; ``options`` are scheduler-specific (population, grace_budget, space, seed…)."""
    factory = SCHEDULERS.get(kind)
    if factory is None:
        raise ValueError(f"scheduler.kind: unknown scheduler {kind!r}; use one of {', '.join(SCHEDULERS)}")
    return factory(min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer, iterations=iterations,
                   num_trials=num_trials, mode=mode, **options)
