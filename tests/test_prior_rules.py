"""The history's pure rules: the plan's GPU-hour estimate and the run-time keep-or-drop verdict, without Prefect or Ray."""

from __future__ import annotations

import numpy as np
import pytest

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


# --- keep or drop the prior at run time ------------------------------------------------------------------

def test_the_verdict_compares_the_portfolios_best_with_the_best_cold_draw_at_the_same_budget() -> None:
    from rungflow.budgets.prior_guard import PriorVerdict, judge_prior

    assert judge_prior([0.2, 0.8], [0.5, 0.6, 0.7, 0.8], "max", 1.0).verdict is PriorVerdict.KEPT  # a tie keeps
    # Above the cold median, below the cold best: an upside-down history's survivors look like this.
    dropped = judge_prior([0.2, 0.75], [0.5, 0.6, 0.7, 0.8, None], "max", 1.0)
    assert dropped.verdict is PriorVerdict.DROPPED and dropped.cold_best == 0.8 and dropped.portfolio_best == 0.75
    assert "0.75 at budget 1, below the best of the cold trials beside it, 0.8 (4 trials)" in dropped.reason
    assert judge_prior([0.2, 0.3], [0.5, 0.6, 0.7, 0.8], "min", 1.0).verdict is PriorVerdict.KEPT  # a loss: lower is better
    assert judge_prior([0.6], [0.5, 0.6, 0.7, 0.8], "min", 1.0).verdict is PriorVerdict.DROPPED
    assert judge_prior([None, None], [0.5, 0.6, 0.7, 0.8], "max", 1.0).verdict is PriorVerdict.DROPPED
    assert judge_prior([0.9], [0.5, 0.6, 0.7], "max", 1.0).verdict is PriorVerdict.PENDING  # too few cold results yet


def _bracket(guard, portfolio_score: float, cold_scores=(0.4, 0.5, 0.6, 0.7, 0.8)) -> list[dict]:
    """A first rung of nine at budget 1: the guard's proposals, told their scores (portfolio ones all alike)."""
    configs = guard.suggest(9)
    keys = {tuple(sorted(c.items())) for c in guard.portfolio}
    cold = iter(cold_scores)
    for i, config in enumerate(configs):
        score = portfolio_score if tuple(sorted(config.items())) in keys else next(cold)
        guard.observe(Observation(f"t{i:04d}", config, 1.0, score))
    return configs


def test_the_portfolio_runs_beside_the_searchers_own_draws_and_a_dropped_one_leaves_its_stream_as_cold() -> None:
    from rungflow.budgets.prior_guard import PriorGuardSearcher
    from rungflow.budgets.searchers import RandomSearcher

    portfolio = [{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": 0.2}, {"x": 0.3, "y": 0.3}, {"x": 0.4, "y": 0.4}]
    cold = RandomSearcher(SPACE, seed=3)
    inner = RandomSearcher(SPACE, seed=3)
    guard = PriorGuardSearcher(inner, portfolio, [])
    guard.warm_start(enqueue=portfolio)
    cold_first = cold.suggest(9)
    first = _bracket(guard, 0.75)  # above the cold median (0.6), below the cold best (0.8)
    # The searcher's own first five draws, then the portfolio in the slots of its last four.
    assert first[:5] == cold_first[:5] and first[5:] == portfolio
    assert guard.prior_decision.verdict == "dropped" and guard.prior_decision.cold_trials == 5
    # The portfolio's results never reached the searcher; its stream goes on where a cold sweep's is.
    assert [o.trial_id for o in inner.observations] == ["t0000", "t0001", "t0002", "t0003", "t0004"]
    assert guard.suggest(5) == cold.suggest(5)
    guard.observe(Observation("t0005", portfolio[0], 3.0, 0.99))  # a dropped portfolio trial's later rung
    assert len(inner.observations) == 5 and len(guard.observations) == 10


@pytest.mark.parametrize(("portfolio_score", "verdict"), [(0.95, "kept"), (0.05, "dropped")])
def test_a_dropped_prior_leaves_the_model_a_kept_one_joins_it_and_the_caller_s_own_warm_start_stays(
        portfolio_score: float, verdict: str) -> None:
    from rungflow.budgets.prior_guard import PriorGuardSearcher
    from rungflow.budgets.tpe import BOHBSearcher

    portfolio = [{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": 0.2}, {"x": 0.3, "y": 0.3}]
    history = [Observation(f"old/t{i}", {"x": 0.1 + i / 100, "y": 0.1}, 1.0, 0.9) for i in range(8)]
    last_week = [Observation("w1", {"x": 0.5, "y": 0.5}, 1.0, 0.5)]
    last_week_best = {"x": 0.6, "y": 0.6}
    inner = BOHBSearcher(SPACE, seed=0, mode="max", max_budget=9.0, min_points_in_model=4)
    guard = PriorGuardSearcher(inner, portfolio, [o.trial_id for o in history])
    guard.warm_start([*last_week, *history], enqueue=[last_week_best, *portfolio])
    configs = _bracket(guard, portfolio_score, cold_scores=(0.4, 0.5, 0.6, 0.7, 0.8, 0.85))
    assert configs[0] == last_week_best and configs[6:] == portfolio  # the caller's own first, the portfolio last
    assert len(inner.observations) == 6  # held apart until the verdict
    guard.suggest(1)  # the verdict comes before the next proposal, on every result told
    assert guard.prior_decision.verdict == verdict and guard.prior_decision.cold_trials == 6
    held = {o.trial_id for o in inner.priors}
    if verdict == "dropped":
        assert held == {"prior-w1"}  # the history's results left the model; last week's warm start did not
        assert len(inner.observations) == 6 and len(inner._by_budget[1.0]) == 7  # w1 and this sweep's own six
    else:
        assert len(held) == 9 and len(inner.observations) == 9 and len(inner._by_budget[1.0]) == 18
    assert len(guard.observations) == 9


def test_forgetting_a_prior_takes_what_is_left_of_it_out_of_the_queue() -> None:
    from rungflow.budgets.searchers import RandomSearcher

    searcher = RandomSearcher(SPACE, seed=0)
    mine, theirs = {"x": 0.5, "y": 0.5}, {"x": 0.1, "y": 0.1}
    searcher.warm_start(enqueue=[mine, theirs])
    searcher.forget_prior([], [theirs])
    assert searcher.suggest(1) == [mine] and searcher.suggest(3)[0] != theirs


def test_asynchronous_order_the_portfolio_alternates_with_own_draws_and_one_verdict_is_taken() -> None:
    from rungflow.budgets.prior_guard import PriorGuardSearcher
    from rungflow.budgets.searchers import RandomSearcher

    portfolio = [{"x": 0.9, "y": 0.9}, {"x": 0.8, "y": 0.8}]
    guard = PriorGuardSearcher(RandomSearcher(SPACE, seed=1), portfolio, [])
    guard.warm_start(enqueue=portfolio)
    configs = [guard.suggest(1)[0] for _ in range(7)]  # ASHA: one trial at a time
    assert configs[1] == portfolio[0] and configs[3] == portfolio[1]
    assert not {tuple(sorted(c.items())) for c in configs[4:]} & {tuple(sorted(c.items())) for c in portfolio}
    for i, score in ((0, 0.5), (2, 0.6), (4, 0.7), (5, 0.8), (6, 0.9)):  # the cold trials report first
        guard.observe(Observation(f"t{i:04d}", configs[i], 1.0, score))
    guard.observe(Observation("t0001", configs[1], 1.0, 0.95))
    assert guard.prior_decision.verdict == "pending"  # one portfolio trial has not reported yet
    guard.observe(Observation("t0006", configs[6], 3.0, 0.99))  # a higher rung is not the budget judged
    guard.observe(Observation("t0003", configs[3], 1.0, 0.1))
    decision = guard.prior_decision
    assert decision.verdict == "kept" and decision.budget == 1.0 and decision.cold_trials == 5
    assert decision.portfolio_best == 0.95 and decision.cold_best == 0.9
    guard.observe(Observation("t0007", {"x": 0.2, "y": 0.2}, 1.0, 0.999))
    assert guard.prior_decision == decision  # taken once
