"""The history's pure rules: the plan's GPU-hour estimate and the run-time keep-or-drop verdict, without Prefect or Ray."""

from __future__ import annotations

import numpy as np

from rungflow.budgets.prior import PastSweep
from rungflow.budgets.prior_estimate import estimate_prior, near_best_gpu_hours, near_best_trials
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import SearchSpace

SPACE = SearchSpace.from_dict({"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0, "high": 1.0}})


def _ledgered(name: str, best: tuple[float, float], seed: int, n: int = 24, gpu_hours_each: float = 0.5) -> PastSweep:
    """A sweep of ``n`` full-budget trials in ledger order, each billed ``gpu_hours_each``; first bracket: 8 trials."""
    rng = np.random.default_rng(seed)
    obs = []
    for i in range(n):
        x, y = rng.uniform(size=2)
        obs.append(Observation(f"t{i}", {"x": float(x), "y": float(y)}, 9.0, -((x - best[0]) ** 2 + (y - best[1]) ** 2)))
    spent = tuple(gpu_hours_each * (i + 1) for i in range(n))
    return PastSweep(name, tuple(obs), "max", spent_gpu_hours=spent, first_bracket_gpu_hours=8 * gpu_hours_each)


def test_near_best_is_read_from_the_sweeps_own_ledger() -> None:
    obs = (Observation("a", {"x": 0.1}, 9, 0.5), Observation("b", {"x": 0.2}, 3, 0.99), Observation("c", {"x": 0.3}, 9, 0.9),
           Observation("d", {"x": 0.4}, 9, 0.91), Observation("e", {"x": 0.5}, 9, 0.6))
    sweep = PastSweep("s", obs, "max", spent_gpu_hours=(1.0, 2.0, 3.0, 4.0, 5.0))
    # at budget 9: median 0.6, best 0.91, near-best >= 0.879: c at 3 GPU-hours (b's 0.99 was at a lower budget)
    assert near_best_gpu_hours(sweep) == 3.0 and near_best_trials(sweep) == {"c", "d"}
    assert near_best_gpu_hours(PastSweep("s", obs, "max")) is None  # a study: no spend, no estimate
    flipped = PastSweep("s", tuple(Observation(o.trial_id, o.config, o.budget, -o.score) for o in obs), "min",
                        spent_gpu_hours=(1.0, 2.0, 3.0, 4.0, 5.0))
    assert near_best_gpu_hours(flipped) == 3.0


def test_a_history_that_agrees_is_expected_to_save_and_one_that_does_not_is_not() -> None:
    agreeing = [_ledgered(f"s{i}", (0.2, 0.8), seed=i) for i in range(4)]
    e = estimate_prior(SPACE, agreeing, portfolio_size=4)
    assert e.sweeps == 4 and e.hits >= 3 and e.prior_gpu_hours is not None and e.cold_gpu_hours is not None
    assert e.prior_gpu_hours < e.cold_gpu_hours and e.prior_gpu_hours <= 4.0  # near-best by the first bracket's end
    apart = [_ledgered("a", (0.05, 0.05), 0), _ledgered("b", (0.95, 0.95), 1), _ledgered("c", (0.05, 0.95), 2)]
    e = estimate_prior(SPACE, apart, portfolio_size=1)
    assert e.hits == 0 and e.prior_gpu_hours == e.cold_gpu_hours  # no help, and the fallback costs what cold costs
    one = estimate_prior(SPACE, agreeing[:1], portfolio_size=4)
    assert one.cold_gpu_hours is not None and one.prior_gpu_hours is None  # nothing to leave one out against
