"""TPE and BOHB keep their Optuna studies alive and add only the results they have not seen: what they propose must
be exactly what a study rebuilt from every observation before each suggestion proposes, warm starts and dropped
priors included."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from typing import Any

import pytest

from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace

MAX_BUDGET = 9.0
SPACE = SearchSpace(
    (
        FloatParam("x", -1.0, 1.0),
        FloatParam("lr", 1e-4, 1e-1, log=True),
        IntParam("units", 8, 256, log=True),
        CategoricalParam("act", ("relu", "tanh", "gelu")),
    )
)
CONDITIONAL = SearchSpace.from_dict({
    "family": {"type": "categorical", "choices": ["a", "b"]},
    "a.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "when": {"family": "a"}},
    "b.depth": {"type": "int", "low": 1, "high": 8, "when": {"family": "b"}},
    "shared": {"type": "float", "low": 0.0, "high": 1.0},
})


def _score(config: dict[str, Any], budget: float, trial: int) -> float | None:
    if trial % 13 == 5:
        return None  # a failed trial: it must stay failed in both studies
    value = sum(zlib.crc32(str(v).encode()) % 1000 for v in config.values()) / 1000.0
    value -= sum((v - 0.3) ** 2 for v in config.values() if isinstance(v, float) and not isinstance(v, bool))
    return value + math.log(budget)


def _cost(config: dict[str, Any]) -> float:
    """GPU-seconds per budget unit, for the cost-aware ranking: dearer for more units and for family b."""
    return 1.0 + config.get("units", 0) / 64 + 3.0 * (config.get("family") == "b")


def _sweep(searcher, *, rebuild_each_time: bool) -> list[dict[str, Any]]:
    """A Hyperband-like sweep: batches of new trials at budget 1, the best third promoted to 3 and 9 a batch later,
    so some suggestions follow only new trials (appends) and others follow promotions (changed trials)."""
    proposals: list[dict[str, Any]] = []
    trials: dict[str, tuple[dict[str, Any], float]] = {}
    searcher.warm_start(
        [Observation(f"old{i}", c, 9.0, _score(c, 9.0, i)) for i, c in enumerate(make_searcher(
            "random", searcher.space, seed=99).suggest(6))],
        enqueue=[],
    )
    for round_ in range(16):
        if round_ == 8:
            searcher.forget_prior(["old0", "old3"], [])
        for half in range(2):
            if rebuild_each_time:
                searcher.forget_prior((), ())  # drops nothing, but rebuilds every study from the observations
            batch = searcher.suggest(4)
            proposals.extend(batch)
            for i, config in enumerate(batch):
                tid = f"t{round_:02d}-{half}-{i}"
                score = _score(config, 1.0, len(trials))
                trials[tid] = (config, -math.inf if score is None else score)
                searcher.observe(Observation(tid, config, 1.0, score, _cost(config)))
        # Promote the best third of the trials still at their first rung, then of those at budget 3.
        for low, high in ((1.0, 3.0), (3.0, 9.0)):
            at_low = [t for t in trials if trials[t][1] > -math.inf and _rung(searcher, t) == low]
            for tid in sorted(at_low, key=lambda t: -trials[t][1])[: len(at_low) // 3]:
                config = trials[tid][0]
                searcher.observe(Observation(tid, config, high, _score(config, high, int(tid[1:3])), _cost(config)))
    return proposals


def _rung(searcher, trial_id: str) -> float:
    return max(o.budget for o in searcher.observations if o.trial_id == trial_id)


@pytest.mark.parametrize("cost_aware", [False, True])
@pytest.mark.parametrize("space", [SPACE, CONDITIONAL], ids=["flat", "conditional"])
@pytest.mark.parametrize("name", ["tpe", "bohb"])
def test_the_kept_study_proposes_what_a_rebuilt_one_does(name: str, space: SearchSpace, cost_aware: bool) -> None:
    def searcher():
        return make_searcher(name, space, seed=3, mode="max", max_budget=MAX_BUDGET, cost_aware=cost_aware,
                             **({"min_points_in_model": 4} if name == "bohb" else {"n_startup_trials": 6}))

    kept, rebuilt = searcher(), searcher()
    kept_proposals = _sweep(kept, rebuild_each_time=False)
    rebuilt_proposals = _sweep(rebuilt, rebuild_each_time=True)
    assert len(kept_proposals) == 128
    assert kept_proposals == rebuilt_proposals
    # Past the random start-up: most proposals came from the model (BOHB: fitted at the full budget by the end).
    assert len(kept.observations) > 128
    assert name == "tpe" or kept.model_budget() == MAX_BUDGET


# The same sweep's proposals from the code before the studies were kept (each TPE study rebuilt from every observation
# at each suggestion, Optuna's own TPESampler refitting at each ask), digested. A change that moves any proposal
# breaks this: the point of keeping the studies was speed, not new proposals.
PROPOSALS_BEFORE = {
    ("tpe", "flat", False): "2d934155a9f928c6", ("tpe", "flat", True): "1d7a605e062415f9",
    ("tpe", "conditional", False): "5db1f3da011f37b1", ("tpe", "conditional", True): "ffbf37ac10f01e52",
    ("bohb", "flat", False): "df8ffaa8fe65cd50", ("bohb", "flat", True): "5605de3f30f13609",
    ("bohb", "conditional", False): "ed75e470f2a6f1cb", ("bohb", "conditional", True): "efdc4451a3efee48",
}


def _digest(proposals: list[dict[str, Any]]) -> str:
    rounded = [{k: round(v, 9) if isinstance(v, float) else v for k, v in c.items()} for c in proposals]
    return hashlib.sha256(json.dumps(rounded, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("key", sorted(PROPOSALS_BEFORE, key=str), ids=lambda k: "-".join(map(str, k)))
def test_the_proposals_are_the_ones_made_before(key: tuple[str, str, bool]) -> None:
    name, space, cost_aware = key
    searcher = make_searcher(name, SPACE if space == "flat" else CONDITIONAL, seed=3, mode="max",
                             max_budget=MAX_BUDGET, cost_aware=cost_aware,
                             **({"min_points_in_model": 4} if name == "bohb" else {"n_startup_trials": 6}))
    assert _digest(_sweep(searcher, rebuild_each_time=False)) == PROPOSALS_BEFORE[key]


def test_bohb_counts_the_results_a_model_can_use_as_they_arrive() -> None:
    searcher = make_searcher("bohb", SPACE, seed=0, max_budget=MAX_BUDGET, min_points_in_model=3)
    configs = searcher.suggest(5)
    for i, config in enumerate(configs[:3]):
        searcher.observe(Observation(f"t{i}", config, 1.0, 0.5))
    assert searcher.model_budget() == 1.0
    searcher.observe(Observation("t0", configs[0], 3.0, 0.6))
    searcher.observe(Observation("t1", configs[1], 3.0, None))
    searcher.observe(Observation("t2", configs[2], 3.0, 0.7))
    assert searcher.model_budget() == 1.0  # a failed result is not one the model can fit on
    searcher.observe(Observation("t3", configs[3], 3.0, 0.4))
    assert searcher.model_budget() == 3.0
    searcher.warm_start([Observation("p", configs[4], 9.0, 0.9)] * 3, [])
    assert searcher.model_budget() == 9.0
    searcher.forget_prior(["p"], [])
    assert searcher.model_budget() == 3.0
