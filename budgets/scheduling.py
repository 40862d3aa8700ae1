"""The rung scheduler contract: how far each trial runs, as data.

A scheduler never proposes configurations and never runs anything. The driver asks it for work
and tells it what finished; everything it answers is a frozen value (:class:`Job`, :class:`Stage`,
:class:`RungDecision`). Two disciplines share the contract:

- ``synchronous`` schedulers (FIFO, successive halving, Hyperband) plan their brackets up front;
  each rung is a :class:`Stage` that ends at a barrier, where :func:`gate_rung` keeps the top 1/η.
- asynchronous ones (ASHA, median stopping, population-based training) answer
  :meth:`AsyncScheduler.next_job` whenever a worker is free; their stages are the points where the
  controller is asked again. A job may start a trial the scheduler made itself (population-based
  training's clones): it carries the configuration and the trial whose checkpoint it starts from.

A new scheduler is one module implementing :class:`Scheduler` and one line in
:data:`budgets.schedulers.SCHEDULERS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from rungflow.budgets.ledger import Mode

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord
    from rungflow.budgets.rungs import BracketPlan

__all__ = [
    "Mode", "SchedulerKind", "TrialScore", "RungDecision", "rank_key", "gate_rung", "Stage", "Job",
    "ForecastScope", "Scheduler", "AsyncScheduler",
]


class SchedulerKind(StrEnum):
    FIFO = "fifo"
    SHA = "sha"
    HYPERBAND = "hyperband"
    ASHA = "asha"
    MEDIAN = "median"
    PBT = "pbt"


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
class Stage:
    """A point where the budget controller is asked before more is spent.

    Synchronous: rung ``rung`` of bracket ``bracket``, about to start. Asynchronous: the sweep after
    ``results`` finished trials (``bracket`` and ``rung`` None) under scheduler ``scheduler``.
    ``str(stage)`` is the label the ledger's decisions and the progress line carry ("bracket 2 rung 1",
    "asha after 12 results", "pbt after 16 results").
    """

    bracket: int | None = None
    rung: int | None = None
    results: int = 0
    scheduler: str = "asha"

    def __str__(self) -> str:
        if self.bracket is None:
            return f"{self.scheduler} after {self.results} results"
        return f"bracket {self.bracket} rung {self.rung}"


@dataclass(frozen=True)
class Job:
    """Run ``trial_id`` (None: a new trial) at rung ``rung`` of bracket ``bracket`` up to ``budget``.

    A new trial's configuration comes from the searcher, unless ``config`` gives it: then the
    scheduler made the trial itself, and ``clone_from`` names the trial whose checkpoint at rung
    ``rung - 1`` it starts from (population-based training's exploit step).
    """

    trial_id: str | None
    rung: int
    budget: float
    bracket: int = 0
    config: Mapping[str, Any] | None = None
    clone_from: str | None = None


@dataclass(frozen=True)
class ForecastScope:
    """What a stage would buy, for the forecast stop rule: ``rungs`` as (budget, trials) from
    ``start_budget``, entered by fresh trials (``candidates`` None) or by the scores of the trials
    the gate would promote."""

    rungs: tuple[tuple[float, int], ...]
    candidates: tuple[float, ...] | None = None
    start_budget: float = 0.0


class Scheduler(Protocol):
    """The contract every rung scheduler keeps; the driver knows nothing else about it.

    A ``synchronous`` scheduler is driven through :attr:`brackets`, rung by rung with a barrier
    after each; an asynchronous one is an :class:`AsyncScheduler`.
    """

    kind: SchedulerKind
    min_budget: float
    max_budget: float
    eta: float
    synchronous: bool

    @property
    def brackets(self) -> tuple[BracketPlan, ...]:
        """The rungs as planned: a synchronous scheduler's brackets; an asynchronous one's rungs as one
        successive-halving bracket of its trials would fill them."""
        ...

    @property
    def brackets_per_iteration(self) -> int | None:
        """Brackets in one pass over every bracket size (None: no repeated sample of the space)."""
        ...

    def budget_units(self) -> float:
        """Budget units the whole schedule buys if every promoted trial resumes from its checkpoint."""
        ...

    def forecast_scope(self, stage: Stage, records: Sequence[SpendRecord], mode: Mode) -> ForecastScope | None:
        """What the work from ``stage`` on would buy, from the ledger so far (None: no evidence yet)."""
        ...


class AsyncScheduler(Scheduler, Protocol):
    """A scheduler without barriers: asked for a job whenever a worker is free."""

    def next_job(self) -> Job | None:
        """Called when a worker is free; None means nothing to do until a running trial reports."""
        ...

    def on_trial(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """Called once per new trial, when the driver has named it, with its configuration."""
        ...

    def on_result(self, trial_id: str, rung: int, score: float | None) -> None:
        """Called once per finished (trial, rung), failed trials with ``score=None``."""
        ...

    def mark_started(self, count: int) -> None:
        """Count trials started before a resume, so the total stays as planned."""
        ...

    def stop_starting(self) -> None:
        """Called when the searcher has nothing left to propose: start no more new trials."""
        ...
