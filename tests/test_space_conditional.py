"""Conditional search spaces: a family categorical whose choice activates that family's own parameters."""

from __future__ import annotations

import numpy as np
import pytest

from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import SearchSpace, SpaceError

SPACE = {
    "family": {"type": "categorical", "choices": ["good", "bad", "linear"]},
    "good.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "when": {"family": "good"}},
    "good.depth": {"type": "int", "low": 1, "high": 8, "when": {"family": "good"}},
    "bad.trees": {"type": "int", "low": 1, "high": 100, "when": {"family": ["bad"]}},
    "bad.bootstrap": {"type": "categorical", "choices": [True, False], "when": {"family": "bad"}},
    "bad.depth": {"type": "int", "low": 2, "high": 4, "when": {"family": "bad", "bad.bootstrap": True}},
    "shared": {"type": "float", "low": 0.0, "high": 1.0},
}


def score(config: dict) -> float:
    if config["family"] == "good":
        return 1.0 - abs(np.log10(config["good.lr"]) + 1.0) / 2  # best at lr = 0.1
    return 0.3 if config["family"] == "bad" else 0.5


def test_sample_sets_exactly_the_active_parameters() -> None:
    space = SearchSpace.from_dict(SPACE)
    assert space.conditional and not SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}}).conditional
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        config = space.sample(rng)
        assert space.contains(config)
        seen.add(config["family"])
        prefix = config["family"] + "."
        assert all(k in ("family", "shared") or k.startswith(prefix) for k in config)
        if config["family"] == "bad":
            assert ("bad.depth" in config) == config["bad.bootstrap"]
    assert seen == {"good", "bad", "linear"}
    assert not space.contains({"family": "linear", "shared": 0.5, "good.lr": 0.1})  # an inactive parameter set
    assert not space.contains({"family": "good", "shared": 0.5})  # an active one missing


def test_grid_branches_per_family_and_round_trips() -> None:
    space = SearchSpace.from_dict(SPACE)
    grid = space.grid(2)
    # good: 2 lr x 2 depth; bad: 2 trees x (bootstrap True: 2 depths + False: 1); linear: 1; each x 2 shared.
    assert len(grid) == (4 + 2 * 3 + 1) * 2
    assert all(space.contains(c) for c in grid) and len({tuple(sorted(c.items())) for c in grid}) == len(grid)
    assert SearchSpace.from_dict(space.to_dict()) == space
    text = space.describe()
    assert "  good.lr: float" in text and "(when family=bad and bad.bootstrap=True)" in text


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"x": {"type": "float", "low": 0, "high": 1, "when": {"family": "a"}}}, r"space.x.when: unknown parent 'family'"),
        ({"family": {"type": "categorical", "choices": ["a"]}, "x": {"type": "float", "low": 0, "high": 1, "when": {"family": "b"}}},
         r"space.x.when.family: \['b'\] not among family's choices \['a'\]"),
        ({"x": {"type": "float", "low": 0, "high": 1, "when": {"family": "a"}}, "family": {"type": "categorical", "choices": ["a"]}},
         r"parent 'family' must be declared before 'x'"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1}, "x": {"type": "float", "low": 0, "high": 1, "when": {"lr": 0.5}}},
         r"parent 'lr' must be categorical"),
        ({"family": {"type": "categorical", "choices": ["a"]}, "x": {"type": "float", "low": 0, "high": 1, "when": "a"}},
         r"space.x.when: expected a mapping"),
        ({"f": {"type": "categorical", "choices": ["a", "b"]}, "g": {"type": "categorical", "choices": ["c"], "when": {"f": "a"}},
          "x": {"type": "float", "low": 0, "high": 1, "when": {"f": "b", "g": "c"}}}, r"space.x.when: can never be active"),
    ],
)
def test_bad_conditions_name_the_parameter_and_the_fix(spec, match) -> None:
    with pytest.raises(SpaceError, match=match):
        SearchSpace.from_dict(spec)


@pytest.mark.parametrize("algorithm", ["random", "grid", "tpe", "bohb"])
def test_every_searcher_proposes_valid_mixed_configs_and_learns_from_them(algorithm) -> None:
    space = SearchSpace.from_dict(SPACE)
    searcher = make_searcher(algorithm, space, seed=1, max_budget=9, grid_points=2)
    proposals = []
    for round_ in range(8):
        batch = searcher.suggest(5)
        for i, config in enumerate(batch):
            assert space.contains(config), config
            proposals.append(config)
            for budget in (1, 3, 9):
                searcher.observe(Observation(f"t{round_}-{i}", config, budget, score(config) * budget / 9))
    assert {c["family"] for c in proposals} == {"good", "bad", "linear"}
    if algorithm in ("tpe", "bohb"):
        # After the random start-up the model should concentrate on the family that scores best.
        late = [c["family"] for c in searcher.suggest(20)]
        assert late.count("good") > late.count("bad"), late


def test_flat_spaces_sample_as_before() -> None:
    flat = SearchSpace.from_dict({"a": {"type": "float", "low": 0, "high": 1}, "b": {"type": "int", "low": 1, "high": 9}})
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    assert flat.sample(rng) == {"a": float(ref.uniform(0, 1)), "b": int(ref.integers(1, 10))}
