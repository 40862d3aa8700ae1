"""What a history is expected to save: GPU-hours to a near-best configuration with and without it.

Estimated from the history itself, leave one earlier sweep out, so the plan can say it before anything is spent:

- **cold**: each earlier sweep's own ledger says how many GPU-hours it spent before its incumbent at its highest
  budget came near its final best (:func:`near_best_gpu_hours`). That sweep ran without this history: it is
  what a sweep of this kind costs cold.
- **with the history**: a portfolio is built from the *other* earlier sweeps, as the new sweep would build it from
  all of them. Where it holds a configuration whose nearest evaluated neighbour in the left-out sweep was
  near-best there, the portfolio trial runs in the first bracket and the sweep is expected near-best by the end of
  that bracket (the left-out sweep's own first-bracket GPU-hours, or its cold figure when that was sooner). Where
  the portfolio holds none, the prior is dropped and the sweep costs what it cost cold.

Both are medians over the earlier sweeps whose ledgers give spend (Optuna studies record no GPU-hours), in those
sweeps' own GPU-hours: a history of another trainable or budget says little about this sweep's hours.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rungflow.budgets.prior import PastSweep, greedy_portfolio, utilities
from rungflow.budgets.space import SearchSpace

__all__ = ["PriorEstimate", "near_best_gpu_hours", "near_best_trials", "estimate_prior", "NEAR_FRACTION"]

# Near-best: within this fraction of the gap between the median and the best score at the sweep's highest budget.
# An absolute tolerance (0.5 accuracy points) would mean nothing for a loss, and the gap scales with the task.
NEAR_FRACTION = 0.1


@dataclass(frozen=True)
class PriorEstimate:
    """``cold_gpu_hours`` / ``prior_gpu_hours``: medians (None: no earlier sweep gives spend, or for the
    prior fewer than two); ``sweeps``: how many gave spend; ``hits``: for how many of them the portfolio
    of the others held a near-best configuration."""

    cold_gpu_hours: float | None
    prior_gpu_hours: float | None
    sweeps: int
    hits: int


def _top_results(sweep: PastSweep) -> tuple[float, list[tuple[int, float]]] | None:
    """The sweep's highest budget and, in ledger order, (index, signed score) of its results there."""
    usable = [(i, o) for i, o in enumerate(sweep.observations) if not o.failed]
    if not usable:
        return None
    top = max(o.budget for _, o in usable)
    sign = 1.0 if sweep.mode == "max" else -1.0
    return top, [(i, sign * float(o.score)) for i, o in usable if o.budget == top]  # type: ignore[arg-type]


def _threshold(scores: Sequence[float]) -> float:
    best = max(scores)
    return best - NEAR_FRACTION * (best - statistics.median(scores))


def near_best_gpu_hours(sweep: PastSweep) -> float | None:
    """GPU-hours the sweep had spent when a result at its highest budget first came near its final best."""
    top = _top_results(sweep)
    if top is None or len(sweep.spent_gpu_hours) != len(sweep.observations):
        return None
    _, results = top
    threshold = _threshold([s for _, s in results])
    first = min(i for i, s in results if s >= threshold)
    return sweep.spent_gpu_hours[first]


def near_best_trials(sweep: PastSweep) -> set[str]:
    """The trials whose result at the sweep's highest budget came near its best."""
    top = _top_results(sweep)
    if top is None:
        return set()
    _, results = top
    threshold = _threshold([s for _, s in results])
    return {sweep.observations[i].trial_id for i, s in results if s >= threshold}


def _portfolio_hits(space: SearchSpace, portfolio: Sequence[dict], sweep: PastSweep) -> bool:
    """Whether a portfolio configuration's nearest evaluated neighbour in ``sweep`` was near-best there."""
    from rungflow.budgets.prior import _nearest_trial

    near = near_best_trials(sweep)
    table = utilities(sweep.observations, sweep.mode)
    if not near or not table or not portfolio:
        return False
    return any(trial in near for trial in _nearest_trial(space, portfolio, table))


def estimate_prior(space: SearchSpace, sweeps: Sequence[PastSweep], portfolio_size: int) -> PriorEstimate:
    """Leave-one-sweep-out estimate over the earlier sweeps whose ledgers give spend (see the module doc)."""
    cold: list[float] = []
    prior: list[float] = []
    hits = 0
    for i, sweep in enumerate(sweeps):
        hours = near_best_gpu_hours(sweep)
        if hours is None:
            continue
        cold.append(hours)
        others = [s for j, s in enumerate(sweeps) if j != i]
        if not others:
            continue
        if _portfolio_hits(space, greedy_portfolio(space, others, portfolio_size), sweep):
            hits += 1
            bracket = sweep.first_bracket_gpu_hours
            prior.append(hours if bracket is None else min(hours, bracket))
        else:
            prior.append(hours)
    return PriorEstimate(cold_gpu_hours=statistics.median(cold) if cold else None,
                         prior_gpu_hours=statistics.median(prior) if prior else None, sweeps=len(cold), hits=hits)
