"""Contract tests for every searcher under every scheduler in the registry: the real sweep loop
(:class:`budgets.driver.SweepDriver`) on a simulated cluster (no Prefect, no Ray)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger, TrialStatus
from rungflow.budgets.schedulers import SCHEDULERS, TrialScore, gate_rung, make_scheduler
from rungflow.budgets.search_registry import SEARCHERS, make_searcher
from rungflow.budgets.searchers import Observation
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock
from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from rungflow.budgets.tpe import BOHBSearcher

MIN_BUDGET, MAX_BUDGET, ETA = 1.0, 9.0, 3.0

SPACE = SearchSpace(
    (
        FloatParam("x", -1.0, 1.0),
        FloatParam("lr", 1e-4, 1e-1, log=True),
        IntParam("layers", 1, 5),
        IntParam("units", 8, 256, log=True),
        CategoricalParam("act", ("relu", "tanh", "gelu")),
    )
)
_ACT_BONUS = {"relu": 0.0, "tanh": 0.05, "gelu": 0.1}


def synthetic_score(config: dict[str, Any], budget: float) -> float:
    """Smooth in every parameter, increasing in budget; the optimum is x=0.3, lr=1e-2, layers=3, units=64, gelu."""
    return (
        1.0
        - (config["x"] - 0.3) ** 2
        - 0.1 * (math.log10(config["lr"]) + 2.0) ** 2
        - 0.02 * (config["layers"] - 3) ** 2
        - 0.05 * (math.log2(config["units"]) - 6.0) ** 2
        + _ACT_BONUS[config["act"]]
        - 0.5 / (1.0 + budget)
    )


def _searcher(name: str, seed: int, space: SearchSpace = SPACE, **kwargs: Any):
    options: dict[str, Any] = {"seed": seed, "mode": "max", "max_budget": MAX_BUDGET}
    if name == "grid":
        options["grid_points"] = 4
    options.update(kwargs)
    return make_searcher(name, space, **options)


def _scheduler(kind: str, num_trials: int | None = None):
    return make_scheduler(
        kind, min_budget=MIN_BUDGET, max_budget=MAX_BUDGET, eta=ETA, integer=True, iterations=1,
        num_trials=num_trials if num_trials is not None else (10 if kind == "fifo" else None), mode="max",
    )


class RecordingExecutor(SimulatedExecutor):
    """The simulated cluster, keeping the gates' verdicts the driver acted on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gates: list[tuple[int, int, tuple[str, ...], tuple[str, ...]]] = []

    def gate(self, scores, keep, mode, bracket, rung):  # type: ignore[no-untyped-def]
        decision = super().gate(scores, keep, mode, bracket, rung)
        self.gates.append((bracket, rung, decision.promote, decision.stop))
        return decision


def _seconds(config: Any, start: float, stop: float) -> float:
    # Longer trials finish later, so an asynchronous scheduler sees results out of start order.
    return (stop - start) * (1.0 + config["layers"] / 10)


def simulate(searcher_name: str, kind: str, seed: int, slots: int = 3) -> tuple[Any, dict[str, Any]]:
    """The real sweep loop (:class:`SweepDriver`) with the real scheduler and searcher on a simulated cluster."""
    scheduler = _scheduler(kind)
    clock = VirtualClock()
    ledger = Ledger()
    controller = BudgetController(BudgetSettings(), mode="max", clock=clock, started_at=0.0, full_budget=MAX_BUDGET)
    driver = SweepDriver(_searcher(searcher_name, seed), scheduler, ledger, controller, "max", MIN_BUDGET, MAX_BUDGET,
                         seed=seed, clock=clock)
    executor = RecordingExecutor(slots, clock, _seconds, synthetic_score, ledger)
    driver.run(executor)
    assert driver.stop_reason == "schedule_complete", driver.stop_detail
    records = ledger.records
    return scheduler, {
        "proposals": list(driver.trials.values()),
        "trials": driver.trials,
        "lineage": driver.lineage,
        "events": [(r.trial_id, r.bracket, r.rung, r.budget, r.score) for r in records],
        "records": records,
        "gates": executor.gates,
        "per_rung": [[rung.get("num_trials") for rung in b["rungs"]] for b in driver.schedule],
    }


# --- the contract, searcher x scheduler ------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
@pytest.mark.parametrize("searcher_name", SEARCHERS)
def test_simulated_sweep_contract(searcher_name: str, kind: str) -> None:
    scheduler, run = simulate(searcher_name, kind, seed=0)
    proposals = run["proposals"]

    # Every proposal lies in the space, and every trial ran to an answer.
    assert proposals
    for config in proposals:
        assert SPACE.contains(config), config
    assert all(r.status == TrialStatus.COMPLETED for r in run["records"])
    # Each (trial, rung) runs once, at a budget the scheduler planned, its score the trial's own.
    seen = [(t, rung) for t, _, rung, _, _ in run["events"]]
    assert len(seen) == len(set(seen))
    planned = {r.budget for b in scheduler.brackets for r in b.rungs}
    assert all(budget in planned and MIN_BUDGET <= budget <= MAX_BUDGET for *_, budget, _ in run["events"])
    assert all(score == synthetic_score(run["trials"][t], budget) for t, _, _, budget, score in run["events"])

    # The number of trials is the scheduler's plan.
    if scheduler.synchronous:
        assert len(proposals) == sum(b.num_trials for b in scheduler.brackets)
        assert run["per_rung"] == [[r.num_trials for r in b.rungs] for b in scheduler.brackets]
        # The trials of each rung are the ones the gate below it promoted, and the gate kept the best.
        by_stage: dict[tuple[int, int], dict[str, float]] = {}
        for t, bracket, rung, _, score in run["events"]:
            by_stage.setdefault((bracket, rung), {})[t] = score
        for bracket, rung, promote, stop in run["gates"]:
            scores = by_stage[(bracket, rung)]
            assert set(promote) | set(stop) == set(scores)
            nxt = by_stage.get((bracket, rung + 1))
            assert set(promote) == (set(nxt) if nxt is not None else set())
            if promote and stop:
                assert min(scores[t] for t in promote) >= max(scores[t] for t in stop)
    else:
        # The searcher proposes as many trials as the bottom rung of its plan; a scheduler may add its own
        # (population-based training's clones). Promotions only of trials with a result below (a clone's
        # result below is its parent's).
        searched = [t for t, origin in run["lineage"].items() if origin["parent"] is None]
        assert len(searched) == scheduler.brackets[0].rungs[0].num_trials
        assert len(proposals) == scheduler.num_trials
        finished = {(r.trial_id, r.rung): r.finished_at for r in run["records"]}
        for r in run["records"]:
            below = r.trial_id if (r.trial_id, r.rung - 1) in finished else run["lineage"][r.trial_id]["parent"]
            assert r.rung == 0 or finished[(below, r.rung - 1)] <= r.started_at, r

    # Same seed: identical proposals and identical schedule.
    _, again = simulate(searcher_name, kind, seed=0)
    assert again["proposals"] == proposals
    assert again["events"] == run["events"]
    assert again["gates"] == run["gates"]

    # Another seed: other proposals (grid: the same grid in another order).
    _, other = simulate(searcher_name, kind, seed=1)
    assert other["proposals"] != proposals
    assert len(other["proposals"]) == len(proposals)


@pytest.mark.parametrize("searcher_name", SEARCHERS)
def test_same_seed_same_proposals_in_isolation(searcher_name: str) -> None:
    a, b = _searcher(searcher_name, 3), _searcher(searcher_name, 3)
    first, second = a.suggest(7), b.suggest(7)
    assert first == second
    assert all(SPACE.contains(c) for c in first)
    # The same observations keep them in step.
    for i, config in enumerate(first):
        for searcher in (a, b):
            searcher.observe(Observation(f"t{i}", config, MAX_BUDGET, synthetic_score(config, MAX_BUDGET)))
    assert a.suggest(5) == b.suggest(5)


def test_grid_other_seed_is_a_permutation_of_the_same_grid() -> None:
    a, b = _searcher("grid", 0), _searcher("grid", 1)
    assert a.size == b.size == 4 * 4 * 4 * 4 * 3
    ga, gb = a.suggest(a.size), b.suggest(b.size)
    assert ga != gb
    key = lambda c: tuple(sorted((k, repr(v)) for k, v in c.items()))  # noqa: E731
    assert sorted(map(key, ga)) == sorted(map(key, gb))
    assert len(set(map(key, ga))) == len(ga)
    assert a.suggest(3) == []  # exhausted: fewer than asked, never repeats


def test_grid_returns_fewer_when_exhausted() -> None:
    space = SearchSpace((IntParam("n", 1, 3), CategoricalParam("c", ("a", "b"))))
    grid = make_searcher("grid", space, seed=0, grid_points=10)
    first = grid.suggest(4)
    rest = grid.suggest(10)
    assert len(first) == 4 and len(rest) == 2
    assert grid.suggest(1) == []


def test_unknown_searcher_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"search\.algorithm.*'nope'"):
        make_searcher("nope", SPACE)


# --- the rung gate -------------------------------------------------------------------------------


def test_gate_failed_scores_lose_even_when_fewer_than_keep_succeed() -> None:
    results = [
        TrialScore("t0", float("nan")),
        TrialScore("t1", None),
        TrialScore("t2", 0.5),
        TrialScore("t3", float("inf")),
        TrialScore("t4", float("-inf")),
    ]
    decision = gate_rung(results, keep=4, mode="max")
    assert decision.promote == ("t2",)
    assert set(decision.stop) == {"t0", "t1", "t3", "t4"}
    decision = gate_rung(results, keep=4, mode="min")
    assert decision.promote == ("t2",)


def test_gate_all_failed_promotes_nobody() -> None:
    decision = gate_rung([TrialScore("a", None), TrialScore("b", float("nan"))], keep=1, mode="max")
    assert decision.promote == ()
    assert decision.stop == ("a", "b")


def test_gate_ties_broken_by_trial_id() -> None:
    results = [TrialScore("t3", 1.0), TrialScore("t1", 1.0), TrialScore("t2", 1.0), TrialScore("t0", 0.0)]
    for order in (results, list(reversed(results))):
        decision = gate_rung(order, keep=2, mode="max")
        assert decision.promote == ("t1", "t2")
        assert decision.stop == ("t3", "t0")
    decision = gate_rung(results, keep=2, mode="min")
    assert decision.promote == ("t0", "t1")


def test_gate_mode_and_keep_bounds() -> None:
    results = [TrialScore(f"t{i}", float(i)) for i in range(5)]
    assert gate_rung(results, 2, "max").promote == ("t4", "t3")
    assert gate_rung(results, 2, "min").promote == ("t0", "t1")
    assert gate_rung(results, 0, "max").promote == ()
    assert gate_rung(results, -1, "max").promote == ()
    everyone = gate_rung(results, 10, "max")
    assert len(everyone.promote) == 5 and everyone.stop == ()


# --- BOHB's model budget -------------------------------------------------------------------------


def test_bohb_model_budget_moves_to_highest_budget_with_enough_results() -> None:
    space = SearchSpace((FloatParam("x", 0.0, 1.0),))
    bohb = make_searcher("bohb", space, seed=0, max_budget=9.0)
    assert isinstance(bohb, BOHBSearcher)
    assert bohb.min_points_in_model == len(space) + 2 == 3
    assert bohb.model_budget() is None

    def obs(i: int, budget: float, score: float | None, x: float = 0.5) -> None:
        bohb.observe(Observation(f"t{i}", {"x": x}, budget, score))

    for i in range(2):
        obs(i, 1.0, 0.1 * i)
    assert bohb.model_budget() is None
    obs(2, 1.0, float("nan"))  # failed: does not count
    obs(3, 1.0, None)
    assert bohb.model_budget() is None
    obs(4, 1.0, 0.3)
    assert bohb.model_budget() == 1.0
    obs(5, 3.0, 0.4)
    obs(6, 3.0, 0.5)
    assert bohb.model_budget() == 1.0
    obs(7, 3.0, 0.6, x=2.0)  # outside the space: does not count
    assert bohb.model_budget() == 1.0
    obs(8, 3.0, 0.6)
    assert bohb.model_budget() == 3.0
    obs(9, 9.0, 0.7)
    assert bohb.model_budget() == 3.0
    # Once enough full-budget results exist, they override the lower rungs.
    for i in range(10, 12):
        obs(i, 9.0, 0.8)
    assert bohb.model_budget() == 9.0
    # Proposals from the model still lie in the space.
    assert all(space.contains(c) for c in bohb.suggest(5))


def test_bohb_rejects_bad_random_fraction() -> None:
    with pytest.raises(ValueError, match="random_fraction"):
        make_searcher("bohb", SPACE, random_fraction=1.5)


# --- model-based searchers concentrate near the optimum ---------------------------------------------

OPT_X = 0.3


def _tail_distance(name: str, seed: int, rounds: int = 60, tail: int = 20) -> float:
    space = SearchSpace((FloatParam("x", 0.0, 1.0),))
    searcher = make_searcher(name, space, seed=seed, mode="max", max_budget=1.0)
    xs = []
    for i in range(rounds):
        (config,) = searcher.suggest(1)
        xs.append(config["x"])
        searcher.observe(Observation(f"t{i:03d}", config, 1.0, -((config["x"] - OPT_X) ** 2)))
    return float(np.median(np.abs(np.array(xs[-tail:]) - OPT_X)))


@pytest.mark.parametrize("name", ["tpe", "bohb"])
def test_model_based_searchers_beat_random_on_a_quadratic(name: str) -> None:
    seeds = (0, 1, 2)
    model = [_tail_distance(name, s) for s in seeds]
    random = [_tail_distance("random", s) for s in seeds]
    # Random's median distance on [0, 1] around 0.3 is about 0.2; the model's should be far smaller.
    assert np.median(model) < 0.5 * np.median(random), (model, random)
    assert sum(m < r for m, r in zip(model, random)) >= 2, (model, random)


@pytest.mark.parametrize("name", ["tpe", "bohb"])
def test_model_based_searchers_minimise_too(name: str) -> None:
    space = SearchSpace((FloatParam("x", 0.0, 1.0),))
    searcher = make_searcher(name, space, seed=0, mode="min", max_budget=1.0)
    xs = []
    for i in range(60):
        (config,) = searcher.suggest(1)
        xs.append(config["x"])
        searcher.observe(Observation(f"t{i:03d}", config, 1.0, (config["x"] - OPT_X) ** 2))
    assert np.median(np.abs(np.array(xs[-20:]) - OPT_X)) < 0.15  # random: about 0.2-0.35


def test_tpe_learns_from_failed_and_partial_trials_without_crashing() -> None:
    searcher = _searcher("tpe", 0)
    configs = searcher.suggest(12)
    for i, config in enumerate(configs):
        trial_id = f"t{i:02d}"
        searcher.observe(Observation(trial_id, config, 1.0, synthetic_score(config, 1.0)))
        if i % 3 == 0:
            searcher.observe(Observation(trial_id, config, 3.0, float("nan")))
        elif i % 3 == 1:
            searcher.observe(Observation(trial_id, config, 9.0, synthetic_score(config, 9.0)))
    more = searcher.suggest(6)
    assert len(more) == 6 and all(SPACE.contains(c) for c in more)
