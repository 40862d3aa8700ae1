"""The honest reference, rank correlation and the in-process Hyperband replay the search bench runs on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.search_sim import expected_max_of_k, spearman
from rungflow.budgets.search_registry import make_searcher


def test_expected_max_of_k_is_exact_on_a_small_pool():
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    for k in (1, 2, 3, 6):
        brute = np.mean([max(c) for c in itertools.combinations(values, k)])
        assert expected_max_of_k(values, k) == pytest.approx(brute)
    with pytest.raises(ValueError):
        expected_max_of_k(values, 7)


def test_spearman_ranks_not_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None


def test_simulated_hyperband_bills_and_gates_like_the_flow():
    from bench import search_sim as S

    c = S.curves("3945")
    runs = [S.simulate("3945", make_searcher("random", c.space, seed=1), seed=1, method="random", iterations=1)
            for _ in range(2)]
    assert runs[0].events == runs[1].events
    events = runs[0].events
    assert sum(e["gpu_seconds"] for e in events) / 3600.0 == pytest.approx(runs[0].gpu_hours)
    # Bracket s=3 of 1..52, η=3: 27 trials at 2 epochs, 9 at 6, 3 at 17, 1 at 52; the promoted are the best.
    first = [e for e in events if e["bracket"] == 0]
    assert [sum(e["budget"] == b for e in first) for b in (2.0, 6.0, 17.0, 52.0)] == [27, 9, 3, 1]
    at2 = sorted((e for e in first if e["budget"] == 2.0), key=lambda e: -e["score"])
    assert {e["trial_id"] for e in at2[:9]} == {e["trial_id"] for e in first if e["budget"] == 6.0}
    # A promoted trial resumes: billed the surrogate's time since its last rung, never the whole run again.
    tid = next(e["trial_id"] for e in first if e["budget"] == 52.0)
    acc, sec = c.curve(runs[0].configs[tid])
    assert sum(e["gpu_seconds"] for e in first if e["trial_id"] == tid) == pytest.approx(sec[-1])
    assert c.trainable._query(runs[0].configs[tid], 17)["val_accuracy"] == pytest.approx(acc[16], abs=1e-4)


def test_the_rung_trust_policy_skips_a_bracket_whose_entry_rung_ranks_backwards():
    from bench import search_sim as S

    run = S.SimRun("x", 0, "m")
    policy = S.rung_trust_policy(52)(run)
    first = [next(policy) for _ in range(4)]
    assert [b.s for b in first] == [3, 2, 1, 0]  # the first iteration runs every bracket: no evidence yet
    # Ten trials whose 6-epoch order reverses their 2-epoch order; the rungs above rank perfectly.
    for i in range(10):
        for budget, score in ((2.0, i), (6.0, -i), (17.0, -i), (52.0, -i)):
            run.events.append({"trial_id": f"t{i}", "budget": budget, "score": float(score)})
    later = [next(policy).s for _ in range(3)]
    assert 3 not in later and later == [2, 1, 0]
    assert S.expected_max_normal(1) == pytest.approx(0.0, abs=1e-6)
    assert S.expected_max_normal(2) == pytest.approx(1 / np.sqrt(np.pi), rel=1e-4)


def test_bracket_studies_give_each_bracket_a_searcher_that_sees_only_its_own_trials():
    from bench.search_sim import BracketStudies
    from rungflow.budgets.searchers import Observation

    made: dict[int, list] = {}

    class Recorder:
        def __init__(self, seed: int) -> None:
            self.seed, self.seen = seed, []
            made[seed] = self.seen

        def suggest(self, n: int) -> list[dict]:
            return [{"x": self.seed * 100 + i} for i in range(n)]

        def observe(self, observation: Observation) -> None:
            self.seen.append(observation.config["x"])

    studies = BracketStudies(Recorder, seed=2)
    studies.start_bracket(3)
    for config in studies.suggest(2):
        studies.observe(Observation("t", config, 1.0, 0.5))
    studies.start_bracket(0)
    for config in studies.suggest(1):
        studies.observe(Observation("t", config, 1.0, 0.5))
    studies.start_bracket(3)  # the next iteration's s = 3 bracket: the same study, not a fresh one
    assert studies.suggest(1) == [{"x": (2 * 16 + 3) * 100}]
    studies.observe(Observation("t", {"x": 9}, 1.0, 0.5))
    assert made == {2 * 16 + 3: [3500, 3501, 9], 2 * 16 + 0: [3200]}
