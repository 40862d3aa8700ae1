"""Cost-aware search: the cost model on known cost functions, and TPE/BOHB ranking by improvement per cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rungflow.budgets.cost import CostModel, encode
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from rungflow.config import ConfigError, validate
from tests.conftest import sweep_config

SPACE = SearchSpace((
    FloatParam("x", 0.0, 1.0),
    IntParam("batch", 16, 512, log=True),
    CategoricalParam("act", ("relu", "gelu")),
))


def true_cost(config: dict) -> float:
    """GPU-seconds per epoch: halves with every doubling of the batch, gelu 1.5× dearer, x irrelevant."""
    return 100.0 * (16 / config["batch"]) * (1.5 if config["act"] == "gelu" else 1.0)


def test_encode_scales_to_the_unit_cube() -> None:
    assert encode(SPACE, {"x": 0.25, "batch": 16, "act": "gelu"}) == pytest.approx([0.25, 0.0, 0.0, 1.0])
    assert encode(SPACE, {"x": 1.0, "batch": 512, "act": "relu"}) == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert encode(SPACE, {"batch": 128, "act": "relu"})[0] == 0.5  # an absent parameter sits in the middle


def test_cost_model_recovers_a_log_linear_cost() -> None:
    rng = np.random.default_rng(0)
    train = [SPACE.sample(rng) for _ in range(30)]
    model = CostModel(SPACE).fit((c, true_cost(c)) for c in train)
    assert model.fitted and model.points == 30
    test = [SPACE.sample(rng) for _ in range(50)]
    predicted = model.predict(test)
    actual = np.array([true_cost(c) for c in test])
    assert np.max(np.abs(np.log(predicted / actual))) < 0.05


def test_cost_model_falls_back_to_the_geometric_mean_and_skips_bad_costs() -> None:
    model = CostModel(SPACE)
    assert model.min_points == len(SPACE) + 2
    configs = [{"x": 0.1, "batch": 16, "act": "relu"}, {"x": 0.2, "batch": 64, "act": "relu"}]
    model.fit([(configs[0], 100.0), (configs[1], 25.0), (configs[1], 0.0), (configs[0], math.nan)])
    assert not model.fitted and model.points == 2
    assert model.predict([configs[0], {"x": 0.9, "batch": 512, "act": "gelu"}]) == pytest.approx([50.0, 50.0])
    # One configuration seen at many rungs counts once (log-averaged).
    model.fit([(configs[0], 10.0), (configs[0], 1000.0), (configs[1], 100.0)])
    assert model.points == 2 and model.predict([configs[0]]) == pytest.approx([100.0])
    assert CostModel(SPACE).fit([]).predict([configs[0]]) == pytest.approx([1.0])


def _observe_random(searcher, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        config = SPACE.sample(rng)
        score = -((config["x"] - 0.7) ** 2)  # the score ignores batch and act: only cost separates them
        searcher.observe(Observation(f"t{i}", config, 9.0, score, cost=true_cost(config)))


@pytest.mark.parametrize("algorithm", ["tpe", "bohb"])
def test_cost_aware_search_proposes_cheaper_configs_of_the_same_quality(algorithm: str) -> None:
    options = {"random_fraction": 0.0} if algorithm == "bohb" else {}
    plain = make_searcher(algorithm, SPACE, seed=1, max_budget=9.0, **options)
    aware = make_searcher(algorithm, SPACE, seed=1, max_budget=9.0, cost_aware=True, **options)
    for s in (plain, aware):
        _observe_random(s, 40, seed=2)
    p, a = plain.suggest(40), aware.suggest(40)
    cost_p = float(np.median([true_cost(c) for c in p]))
    cost_a = float(np.median([true_cost(c) for c in a]))
    assert cost_a < 0.5 * cost_p, (cost_a, cost_p)
    # The quality of the proposals is kept: x stays near the optimum 0.7.
    assert abs(float(np.median([c["x"] for c in a])) - 0.7) < 0.15
    assert all(SPACE.contains(c) for c in a)
    # Same seed, same observations: same proposals.
    again = make_searcher(algorithm, SPACE, seed=1, max_budget=9.0, cost_aware=True, **options)
    _observe_random(again, 40, seed=2)
    assert again.suggest(40) == a


def test_cost_aware_without_costs_ranks_as_plain_tpe() -> None:
    plain = make_searcher("tpe", SPACE, seed=3, max_budget=9.0)
    aware = make_searcher("tpe", SPACE, seed=3, max_budget=9.0, cost_aware=True)
    rng = np.random.default_rng(4)
    for i in range(30):
        config = SPACE.sample(rng)
        for s in (plain, aware):
            s.observe(Observation(f"t{i}", config, 9.0, -((config["x"] - 0.7) ** 2)))  # no cost known
    # Without costs the cost term is a constant and log EI is monotone in log l/g: the same choices.
    assert aware.suggest(10) == plain.suggest(10)


def test_cost_aware_is_refused_for_searchers_that_cannot_use_it(tmp_path) -> None:
    with pytest.raises(ValueError, match="search.cost_aware"):
        make_searcher("random", SPACE, cost_aware=True)
    assert make_searcher("random", SPACE, cost_aware=False).name == "random"
    with pytest.raises(ConfigError, match="search.cost_aware"):
        validate(sweep_config(tmp_path, search={"algorithm": "grid", "cost_aware": True}))
    assert validate(sweep_config(tmp_path, search={"algorithm": "bohb", "cost_aware": True})).search.cost_aware


def test_the_sweep_tells_the_searcher_what_each_result_cost_per_budget_unit(tmp_path) -> None:
    from rungflow.budgets.ledger import SpendRecord, TrialStatus
    from rungflow.flows.sweep import Sweep

    cfg = validate(sweep_config(tmp_path, search={"algorithm": "tpe", "cost_aware": True}))
    sweep = Sweep.create(cfg, tmp_path / "run")
    assert sweep.searcher.cost_aware  # type: ignore[attr-defined]
    trial = sweep.new_trial({"x": 1}, 0)

    def result(gpu_seconds: float, budget_trained: float, status: TrialStatus = TrialStatus.COMPLETED) -> SpendRecord:
        return SpendRecord(trial_id=trial, bracket=0, rung=1, budget=3.0, score=0.5, status=status,
                           gpu_seconds=gpu_seconds, gpus=1.0, cost=0.0, started_at=0.0, finished_at=1.0, wall_seconds=1.0,
                           trainable_seconds=1.0, budget_trained=budget_trained)

    # A promoted trial resumed from budget 1 to 3: 2 units trained for 30 GPU-seconds.
    assert sweep.observation(result(30.0, 2.0)).cost == pytest.approx(15.0)
    assert sweep.observation(result(0.0, 2.0)).cost is None  # nothing billed: no evidence of cost
    assert sweep.observation(result(5.0, 0.0)).cost is None  # nothing trained (already at its budget)
