"""Searcher.warm_start: enqueued configurations come first; an earlier study's observations are priors."""

from __future__ import annotations

import numpy as np
import pytest

from rungflow.budgets.search_registry import SEARCHERS, make_searcher
from rungflow.budgets.searchers import Observation
from tests.test_searchers_contract import MAX_BUDGET, SPACE, synthetic_score

BEST = {"x": 0.3, "lr": 1e-2, "layers": 3, "units": 64, "act": "gelu"}
OUTSIDE = {"x": 5.0, "lr": 1e-2, "layers": 3, "units": 64, "act": "gelu"}


def _last_week(n: int = 40) -> list[Observation]:
    rng = np.random.default_rng(123)
    configs = [SPACE.sample(rng) for _ in range(n)]
    return [Observation(f"t{i:04d}", c, MAX_BUDGET, synthetic_score(c, MAX_BUDGET)) for i, c in enumerate(configs)]


def _searcher(name: str, seed: int = 0):
    options = {"seed": seed, "mode": "max", "max_budget": MAX_BUDGET}
    if name == "grid":
        options["grid_points"] = 3
    return make_searcher(name, SPACE, **options)


@pytest.mark.parametrize("name", SEARCHERS)
def test_enqueued_configs_come_first_then_the_searcher_resumes(name: str) -> None:
    searcher = _searcher(name)
    second = dict(BEST, x=0.1)
    searcher.warm_start(_last_week(), enqueue=[BEST, OUTSIDE, second])
    first = searcher.suggest(1)
    rest = searcher.suggest(3)
    assert first == [BEST] and rest[0] == second  # the out-of-space config is dropped
    assert all(SPACE.contains(c) for c in rest) and len(rest) == 3
    # Same seed, same warm start: same proposals.
    again = _searcher(name)
    again.warm_start(_last_week(), enqueue=[BEST, OUTSIDE, second])
    assert again.suggest(1) + again.suggest(3) == first + rest


@pytest.mark.parametrize("name", ["tpe", "bohb"])
def test_priors_steer_model_based_search_towards_last_weeks_optimum(name: str) -> None:
    def mean_score(warm: bool) -> float:
        scores = []
        for seed in range(3):
            searcher = _searcher(name, seed)
            if warm:
                searcher.warm_start(_last_week())
            scores += [synthetic_score(c, MAX_BUDGET) for c in searcher.suggest(12)]
        return float(np.mean(scores))

    assert mean_score(warm=True) > mean_score(warm=False) + 0.05


def test_prior_trial_ids_never_merge_with_this_studys() -> None:
    searcher = _searcher("tpe")
    searcher.warm_start(_last_week(3))
    assert [o.trial_id for o in searcher.priors] == ["prior-t0000", "prior-t0001", "prior-t0002"]
    searcher.observe(Observation("t0000", BEST, 1.0, 0.5))
    searcher.suggest(1)
    assert len(searcher._study.trials) == 3 + 1 + 1  # 3 priors, this study's t0000, the proposal just made
