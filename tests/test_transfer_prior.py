"""The history as a proposal density (budgets/transfer_prior.py): the model, the share, and the searcher it wraps."""

from __future__ import annotations

import numpy as np
import pytest

from rungflow.budgets.prior import PastSweep
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import SearchSpace
from rungflow.budgets.transfer_prior import (
    INITIAL_SHARE,
    MIN_PAIRS,
    SweepRelevance,
    TransferModel,
    TransferPriorSearcher,
    prior_share,
    transfer_data,
)

SPACE = SearchSpace.from_dict({"x": {"type": "float", "low": 0.0, "high": 1.0},
                               "y": {"type": "float", "low": 0.0, "high": 1.0},
                               "kind": {"type": "categorical", "choices": ["a", "b"]}})
TRUE_BEST = (0.8, 0.8)


def _score(config: dict, best: tuple[float, float] = TRUE_BEST) -> float:
    return 1.0 - (config["x"] - best[0]) ** 2 - (config["y"] - best[1]) ** 2 - 0.1 * (config["kind"] == "b")


def _past(name: str, best: tuple[float, float], seed: int, n: int = 60) -> PastSweep:
    rng = np.random.default_rng(seed)
    obs = []
    for i in range(n):
        config = SPACE.sample(rng)
        obs.append(Observation(f"t{i}", config, 9.0, _score(config, best)))
    return PastSweep(name, tuple(obs), "max")


def _model(best: tuple[float, float]) -> TransferModel:
    return TransferModel(SPACE, transfer_data([_past(f"s{i}", best, seed=i) for i in range(3)], SPACE))


def test_the_model_ranks_where_the_history_was_good_and_its_quantiles_are_per_sweep() -> None:
    data = transfer_data([_past("s", TRUE_BEST, 0), PastSweep("tiny", (Observation("a", {"x": 0.1, "y": 0.1, "kind": "a"}, 9.0, 5.0),), "max")], SPACE)
    assert [d["name"] for d in data] == ["s"]  # a sweep too small to rank says nothing
    z = data[0]["quantiles"]
    assert z == sorted(z) and abs(sum(z)) < 1e-9  # normal quantiles of the ranks: same scale whatever the scores
    mean, spread = _model(TRUE_BEST).predict([{"x": 0.8, "y": 0.8, "kind": "a"}, {"x": 0.05, "y": 0.1, "kind": "b"}])
    assert mean[0] > 1.0 > -1.0 > mean[1] and (spread >= 0).all()


def test_proposals_are_the_same_for_the_same_seed_and_calls() -> None:
    def run(seed: int) -> list[dict]:
        searcher = TransferPriorSearcher(make_searcher("bohb", SPACE, seed=seed, mode="max", max_budget=9.0),
                                         _model(TRUE_BEST))
        out = []
        for round_ in range(4):
            configs = searcher.suggest(6)
            out += configs
            for i, c in enumerate(configs):
                searcher.observe(Observation(f"r{round_}-{i}", c, 9.0, _score(c)))
        return out

    assert run(0) == run(0)
    assert run(0) != run(1)


def _share_after(model_best: tuple[float, float], rounds: int = 6) -> tuple[TransferPriorSearcher, list[float]]:
    searcher = TransferPriorSearcher(make_searcher("random", SPACE, seed=3, mode="max", max_budget=9.0), _model(model_best))
    shares = []
    for round_ in range(rounds):
        configs = searcher.suggest(9)
        shares.append(searcher.share)
        for i, c in enumerate(configs):
            searcher.observe(Observation(f"r{round_}-{i}", c, 1.0, _score(c)))
    return searcher, shares


def test_a_misleading_prior_loses_its_share_and_a_good_one_keeps_it() -> None:
    misled, shares = _share_after((0.05, 0.05))
    assert shares[0] == INITIAL_SHARE and misled.share < 0.15 and misled.state.prior_top <= 1
    assert misled.report()["trials_from_prior"] < misled.report()["trials_from_searcher"]
    good, _ = _share_after(TRUE_BEST)
    assert good.share > INITIAL_SHARE and good.state.prior_top > good.state.own_top
    assert "best third" in good.report()["reason"] and good.report()["trials_from_prior"] > 0


def test_the_share_is_read_at_the_highest_budget_with_enough_results_of_each_source() -> None:
    low = {"prior": [0.9, 0.8, 0.7], "own": [0.1, 0.2, 0.3]}
    high = {"prior": [0.1, 0.2, 0.3], "own": [0.7, 0.8, 0.9]}
    assert prior_share({1.0: low}, "max").share == pytest.approx(0.8)  # capped: the searcher keeps its say
    falls = prior_share({1.0: low, 3.0: high}, "max")
    assert falls.budget == 3.0 and falls.prior_top == 0 and falls.share == pytest.approx(0.125 / (0.125 + 0.625))
    # Too few of the prior's results at 9: the ranking at 3 still rules. A failed trial ranks last.
    assert prior_share({1.0: low, 3.0: high, 9.0: {"prior": [1.0], "own": [0.0] * 5}}, "max").budget == 3.0
    assert prior_share({1.0: {"prior": [None, None, None], "own": [0.1, 0.2, 0.3]}}, "max").prior_top == 0
    assert prior_share({1.0: low}, "min").prior_top == 0  # lower is better: the same scores now rank the prior last
    assert prior_share({}, "max").share == INITIAL_SHARE


def test_without_a_history_the_wrapped_searcher_proposes_exactly_as_it_would_cold() -> None:
    cold = make_searcher("bohb", SPACE, seed=5, mode="max", max_budget=9.0)
    wrapped = TransferPriorSearcher(make_searcher("bohb", SPACE, seed=5, mode="max", max_budget=9.0), TransferModel(SPACE, []))
    assert wrapped.share == 0.0
    for round_ in range(5):
        a, b = cold.suggest(5), wrapped.suggest(5)
        assert a == b
        for i, c in enumerate(a):
            o = Observation(f"r{round_}-{i}", c, 9.0, _score(c))
            cold.observe(o)
            wrapped.observe(o)


def test_each_sweep_is_scored_by_how_it_ranks_this_sweeps_results() -> None:
    relevance = SweepRelevance(3, "max")
    rng = np.random.default_rng(0)
    for i in range(12):
        score = float(i)
        # Sweep 0 ranks as the results do, sweep 1 the other way round, sweep 2 at random.
        relevance.add(score, 1.0, np.array([score, -score, rng.standard_normal()]))
    relevance.add(None, 1.0, np.array([-100.0, 100.0, 0.0]))  # a failure ranks last: sweep 0 predicted it so
    scores = relevance.scores()
    assert relevance.pairs == 13 * 12 // 2
    assert 0.6 < scores[0] < 1.0 and scores[1] == 0.0 and scores[2] < 0.3
    relevance.add(5.0, 3.0, np.array([0.0, 0.0, 0.0]))  # alone at its budget: no pair yet
    assert relevance.pairs == 13 * 12 // 2
    assert SweepRelevance(2, "min").scores().tolist() == [1.0, 1.0]  # nothing read yet: no sweep silenced


def test_a_history_that_ranks_this_task_upside_down_gets_no_share_and_one_true_sweep_keeps_it() -> None:
    upside_down = TransferModel(SPACE, transfer_data([_past(f"u{i}", (0.05, 0.05), seed=i) for i in range(3)], SPACE))
    searcher = TransferPriorSearcher(make_searcher("random", SPACE, seed=3, mode="max", max_budget=9.0), upside_down)
    configs = searcher.suggest(9)
    for i, c in enumerate(configs):
        searcher.observe(Observation(f"r{i}", c, 1.0, _score(c)))
    searcher.suggest(9)
    assert searcher.share == 0.0 and "better than chance" in searcher.report()["reason"]
    assert searcher.report()["relevance_pairs"] >= MIN_PAIRS

    mixed = TransferModel(SPACE, transfer_data([_past("true", TRUE_BEST, 0), _past("far", (0.05, 0.05), 1)], SPACE))
    searcher = TransferPriorSearcher(make_searcher("random", SPACE, seed=4, mode="max", max_budget=9.0), mixed)
    for round_ in range(3):
        for i, c in enumerate(searcher.suggest(9)):
            searcher.observe(Observation(f"r{round_}-{i}", c, 1.0, _score(c)))
    ranking = searcher.report()["sweep_ranking"]
    assert ranking["true"] > 0.25 and ranking["far"] == 0.0
    assert searcher.share > 0.0 and "best third" in searcher.report()["reason"]
