"""Synchronous rung schedulers: FIFO, successive halving and Hyperband, planned up front.

Each is a list of brackets (see :mod:`budgets.rungs` for the arithmetic); the driver runs every rung
as a stage that ends at a barrier, where :func:`budgets.scheduling.gate_rung` keeps the top 1/η.
Brackets run several at a time when slots are free (:mod:`budgets.bracket_loop`), up to
``max_open_brackets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rungflow.budgets.ledger import TrialStatus
from rungflow.budgets.rungs import BracketPlan, RungPlan, bracket_plan, hyperband_plan, max_bracket_index
from rungflow.budgets.scheduling import ForecastScope, Mode, SchedulerKind, Stage, TrialScore, gate_rung

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord

__all__ = ["SyncScheduler", "FIFOScheduler", "SuccessiveHalvingScheduler", "HyperbandScheduler"]


@dataclass(frozen=True)
class SyncScheduler:
    """A scheduler whose brackets are fixed in advance; the driver runs them rung by rung."""

    kind: SchedulerKind
    brackets: tuple[BracketPlan, ...]
    min_budget: float
    max_budget: float
    eta: float
    # Brackets open at once (None: as many as free slots take; 1: one after another). See budgets.bracket_loop.
    max_open_brackets: int | None = None
    synchronous: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.max_open_brackets is not None and self.max_open_brackets < 1:
            raise ValueError(f"The value of max_open_brackets is {self.max_open_brackets}, but must be at least 1 "
                             "(1 runs the brackets one after another)")

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

    def forecast_scope(self, stage: Stage, records: Sequence[SpendRecord], mode: Mode) -> ForecastScope | None:
        """Rung 0: the whole bracket of fresh trials. Later: the trials the (deterministic) gate promoted
        from the previous rung, recomputed from the ledger, through the rest of the bracket."""
        if stage.bracket is None or stage.rung is None:
            return None
        bracket = self.brackets[stage.bracket]
        index = stage.rung
        if index == 0:
            return ForecastScope(tuple((r.budget, r.num_trials) for r in bracket.rungs))
        previous = bracket.rungs[index - 1]
        latest: dict[str, float | None] = {}
        for r in records:
            if r.bracket == bracket.index and r.rung == previous.index and r.status != TrialStatus.CANCELLED:
                latest[r.trial_id] = r.score if r.ok else None
        promoted = gate_rung([TrialScore(t, s) for t, s in latest.items()], bracket.rungs[index].num_trials, mode).promote
        return ForecastScope(tuple((r.budget, r.num_trials) for r in bracket.rungs[index:]),
                             candidates=tuple(float(latest[t]) for t in promoted),  # type: ignore[arg-type]
                             start_budget=previous.budget)


def FIFOScheduler(*, num_trials: int, max_budget: float, min_budget: float | None = None, eta: float = 3) -> SyncScheduler:
    """Every trial to the full budget: one rung, no early stopping (the full-budget baseline)."""
    bracket = BracketPlan(index=0, s=0, rungs=(RungPlan(0, float(max_budget), num_trials),))
    return SyncScheduler(SchedulerKind.FIFO, (bracket,), float(min_budget or max_budget), float(max_budget), eta)


def SuccessiveHalvingScheduler(
    *, min_budget: float, max_budget: float, eta: float, integer: bool = True, num_trials: int | None = None,
    iterations: int = 1, max_open_brackets: int | None = None,
) -> SyncScheduler:
    """Successive halving (Jamieson & Talwalkar, 2016): Hyperband's most aggressive bracket, repeated."""
    s_max = max_bracket_index(min_budget, max_budget, eta)
    brackets = tuple(
        bracket_plan(s_max, s_max, min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer, index=i,
                     num_trials=num_trials)
        for i in range(iterations)
    )
    return SyncScheduler(SchedulerKind.SHA, brackets, min_budget, max_budget, eta, max_open_brackets)


def HyperbandScheduler(
    *, min_budget: float, max_budget: float, eta: float, integer: bool = True, iterations: int = 1,
    max_open_brackets: int | None = None,
) -> SyncScheduler:
    """Hyperband (Li et al., 2018): brackets s = s_max … 0, each a successive-halving run; repeated.

    ``max_open_brackets``: how many brackets may run at once when slots are free (None: as many as the slots
    take; 1: one after another, each rung's barrier idling the slots its slowest trial leaves).
    """
    brackets = tuple(hyperband_plan(min_budget, max_budget, eta, integer=integer, iterations=iterations))
    return SyncScheduler(SchedulerKind.HYPERBAND, brackets, min_budget, max_budget, eta, max_open_brackets)
