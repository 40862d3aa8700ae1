"""Population-based training: the gate, exploit and explore, and whole sweeps through the real driver loop."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger, TrialStatus
from rungflow.budgets.pbt import PBTScheduler, explore, interval_budgets
from rungflow.budgets.schedulers import Job, make_scheduler
from rungflow.budgets.search_registry import SEARCHERS, make_searcher
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock
from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace

SPACE = SearchSpace((
    FloatParam("x", 0.0, 1.0),
    FloatParam("lr", 1e-4, 1e-1, log=True),
    IntParam("units", 8, 256, log=True),
    CategoricalParam("act", ("relu", "tanh", "gelu")),
))
MUTATIONS = ("x", "lr")


def pbt(population: int = 4, interval: float = 2, max_budget: float = 8, **kwargs: Any) -> PBTScheduler:
    return PBTScheduler(population=population, perturbation_interval=interval, max_budget=max_budget, space=SPACE,
                        mutations=kwargs.pop("mutations", MUTATIONS), **kwargs)


def start_population(s: PBTScheduler, scores: dict[str, float | None]) -> list[Job]:
    """Hand out the initial population, name it, report ``scores`` at rung 0; returns the next generation's jobs."""
    jobs = [s.next_job() for _ in scores]
    assert all(j == Job(None, 0, s.budgets[0]) for j in jobs)
    assert s.next_job() is None  # the population is out: nothing until it reports
    for i, trial_id in enumerate(scores):
        s.on_trial(trial_id, {"x": 0.1 * (i + 1), "lr": 1e-2, "units": 32, "act": "tanh"})
    for trial_id, score in scores.items():
        assert s.next_job() is None  # the barrier holds until the last member reports
        s.on_result(trial_id, 0, score)
    out = []
    while (job := s.next_job()) is not None:
        out.append(job)
    return out


def test_generations_are_intervals_up_to_the_full_budget() -> None:
    assert interval_budgets(2, 8) == [2.0, 4.0, 6.0, 8.0]
    assert interval_budgets(3, 8) == [3.0, 6.0, 8.0]
    assert interval_budgets(8, 8) == [8.0]
    s = pbt(population=4)
    assert [r.budget for r in s.brackets[0].rungs] == [2.0, 4.0, 6.0, 8.0]
    assert all(r.num_trials == 4 for r in s.brackets[0].rungs)
    assert s.budget_units() == 4 * 8


@pytest.mark.parametrize("members, fraction, expected", [(4, 0.25, 1), (8, 0.25, 2), (2, 0.25, 1), (5, 0.5, 2),
                                                         (3, 0.1, 1)])
def test_quantile_is_the_ceiling_at_most_half(members: int, fraction: float, expected: int) -> None:
    assert pbt(population=max(members, 2), quantile_fraction=fraction).quantile_size(members) == expected


def test_the_gate_replaces_the_bottom_quantile_with_a_perturbed_clone_of_the_top() -> None:
    s = pbt(population=4, seed=3)
    jobs = start_population(s, {"a": 0.4, "b": 0.9, "c": 0.1, "d": 0.6})
    survivors = [j for j in jobs if j.trial_id is not None]
    clones = [j for j in jobs if j.trial_id is None]
    # b ranks first (the top quantile of 4 is one member); c, the worst, gives way to a clone of b.
    assert sorted(j.trial_id for j in survivors) == ["a", "b", "d"]  # type: ignore[type-var]
    assert all(j.rung == 1 and j.budget == 4.0 for j in jobs)
    (clone,) = clones
    assert clone.clone_from == "b"
    parent = {"x": 0.2, "lr": 1e-2, "units": 32, "act": "tanh"}
    assert clone.config is not None and SPACE.contains(clone.config)
    # Only the mutable parameters move; the structural ones are the parent's.
    assert clone.config["units"] == parent["units"] and clone.config["act"] == parent["act"]
    assert clone.config != parent
    (gen,) = s.history
    assert [t for t, _ in gen.ranked] == ["b", "d", "a", "c"]
    assert [(e.stopped, e.parent) for e in gen.exploits] == [("c", "b")]
    assert s.num_trials == s.started == 5  # the clone is a trial of its own
    assert s.next_job() is None


def test_failed_members_are_replaced_and_never_continue() -> None:
    s = pbt(population=4)
    jobs = start_population(s, {"a": 0.4, "b": None, "c": float("nan"), "d": 0.6})
    assert sorted(j.trial_id for j in jobs if j.trial_id) == ["a", "d"]
    assert sorted(j.clone_from for j in jobs if j.trial_id is None) == ["d", "d"]  # type: ignore[type-var]


def test_nobody_is_exploited_before_burn_in() -> None:
    s = pbt(population=4, burn_in=4)
    jobs = start_population(s, {"a": 0.4, "b": 0.9, "c": 0.1, "d": 0.6})
    assert sorted(j.trial_id for j in jobs) == ["a", "b", "c", "d"]  # type: ignore[type-var]
    for j in jobs:
        s.on_result(j.trial_id, 1, {"a": 0.5, "b": 0.95, "c": 0.2, "d": 0.7}[j.trial_id])  # type: ignore[index]
    second = [s.next_job() for _ in range(4)]
    assert sum(1 for j in second if j is not None and j.clone_from == "b") == 1  # 4 units trained: exploit


def test_the_last_generation_gates_nothing() -> None:
    s = pbt(population=2, interval=8, max_budget=8)
    assert start_population(s, {"a": 0.1, "b": 0.2}) == []
    assert s.history[-1].exploits == ()


def test_explore_perturbs_numbers_by_the_factors_and_categoricals_to_a_neighbour() -> None:
    rng = np.random.default_rng(0)
    config = {"x": 0.5, "lr": 1e-2, "units": 32, "act": "tanh"}
    seen_x, seen_act, seen_units = set(), set(), set()
    for _ in range(200):
        out = explore(config, SPACE, ("x", "act", "units"), 0.0, rng)
        seen_x.add(round(out["x"], 9))
        seen_act.add(out["act"])
        seen_units.add(out["units"])
        assert out["lr"] == config["lr"]
    assert seen_x == {0.4, 0.6}
    assert seen_act == {"relu", "gelu"}  # tanh's neighbours
    assert seen_units == {26, 38}  # round(32 × 0.8), round(32 × 1.2)
    # Clipped to the space; a small int still takes a step; an edge choice stays inside.
    edge = {"x": 0.95, "lr": 0.09, "units": 8, "act": "relu"}
    for _ in range(50):
        out = explore(edge, SPACE, ("x", "lr", "units", "act"), 0.0, rng)
        assert SPACE.contains(out) and out["x"] in (0.76, 1.0) or math.isclose(out["x"], 0.76)
        assert out["units"] in (8, 10) and out["act"] in ("relu", "tanh")


def test_resample_probability_one_draws_from_the_space() -> None:
    rng = np.random.default_rng(1)
    draws = [explore({"x": 0.5, "lr": 1e-2, "units": 32, "act": "tanh"}, SPACE, ("x",), 1.0, rng)["x"]
             for _ in range(100)]
    assert all(0 <= x <= 1 for x in draws) and len({round(x, 6) for x in draws}) > 90


@pytest.mark.parametrize("kwargs, field", [
    ({"population": 1}, "population"),
    ({"quantile_fraction": 0.6}, "quantile_fraction"),
    ({"quantile_fraction": 0.0}, "quantile_fraction"),
    ({"interval": 0}, "perturbation_interval"),
    ({"interval": 9}, "perturbation_interval"),
    ({"resample_probability": 1.5}, "resample_probability"),
    ({"burn_in": -1}, "burn_in"),
    ({"mutations": ("momentum",)}, "mutations"),
])
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        pbt(**kwargs)


# --- whole sweeps through the real driver -------------------------------------------------------


def score(config: Any, budget: float) -> float | None:
    return 1.0 - (config["x"] - 0.3) ** 2 - 0.1 * (math.log10(config["lr"]) + 2.0) ** 2 - 0.5 / (1.0 + budget)


def seconds(config: Any, start: float, stop: float) -> float:
    return (stop - start) * (1.0 + config["units"] / 256)  # members finish out of order


def drive(seed: int = 0, slots: int = 3, searcher: str = "random", ledger: Ledger | None = None, burn_in: float = 0.0,
          **settings: Any) -> tuple[SweepDriver, SimulatedExecutor]:
    clock = VirtualClock()
    ledger = ledger if ledger is not None else Ledger()
    scheduler = make_scheduler("pbt", min_budget=1, max_budget=8, eta=3, integer=True, iterations=1, num_trials=None,
                               mode="max", population=6, perturbation_interval=2, mutations=MUTATIONS, space=SPACE,
                               seed=seed, burn_in=burn_in)
    controller = BudgetController(BudgetSettings(**settings), mode="max", clock=clock, started_at=0.0, full_budget=8)
    driver = SweepDriver(make_searcher(searcher, SPACE, seed=seed, mode="max", max_budget=8), scheduler, ledger,
                         controller, "max", 1, 8, seed=seed, clock=clock)
    if ledger.pending:
        driver.load_replay()
    executor = SimulatedExecutor(slots, clock, seconds, score, ledger)
    driver.run(executor)
    return driver, executor


def history(driver: SweepDriver) -> dict[str, Any]:
    return {"trials": driver.trials, "lineage": driver.lineage,
            "results": sorted((r.trial_id, r.rung, r.budget, r.score) for r in driver.ledger.records),
            "gates": driver.scheduler.history}  # type: ignore[attr-defined]


@pytest.mark.parametrize("searcher", SEARCHERS)
def test_a_pbt_sweep_through_the_driver_keeps_the_population_and_bills_every_interval(searcher: str) -> None:
    driver, executor = drive(searcher=searcher)
    assert driver.stop_reason == "schedule_complete"
    records = driver.ledger.records
    assert all(r.status == TrialStatus.COMPLETED for r in records)
    # Every generation is trained by the whole population, one record per member.
    by_rung: dict[int, list[str]] = {}
    for r in records:
        by_rung.setdefault(r.rung, []).append(r.trial_id)
    assert sorted(by_rung) == [0, 1, 2, 3] and all(len(v) == len(set(v)) == 6 for v in by_rung.values())
    # Each member is billed for the interval it trained, never for its parent's: a clone resumes.
    assert sum(r.budget_trained for r in records) == pytest.approx(6 * 8)
    # Clones start at a gate from a top member's checkpoint, at the budget the parent had reached.
    clones = {t: origin for t, origin in driver.lineage.items() if origin["parent"] is not None}
    assert len(clones) == 3 * 2 and len(driver.trials) == driver.scheduler.num_trials == 12  # type: ignore[attr-defined]
    first_rung = {t: min(r.rung for r in records if r.trial_id == t) for t in driver.trials}
    for trial_id, origin in clones.items():
        rung = first_rung[trial_id]
        assert origin["cloned_at"] == 2.0 * rung
        assert (origin["parent"], rung - 1) in {(r.trial_id, r.rung) for r in records}
        assert SPACE.contains(driver.trials[trial_id])
    # Searchers only propose the initial population.
    assert sum(1 for o in driver.lineage.values() if o["parent"] is None) == 6
    assert [d["stage"] for d in driver.decisions][:1] == ["pbt after 0 results"]


# Population 6, a quarter replaced: 2 clones at each gate from burn-in on, none after the last generation.
@pytest.mark.parametrize("burn_in, expected", [(0, [6, 2, 2, 2]), (4, [6, 0, 2, 2]), (8, [6, 0, 0, 0])])
def test_the_planned_clones_are_the_trials_each_gate_starts(burn_in: float, expected: list[int]) -> None:
    driver, _ = drive(burn_in=burn_in)
    planned = driver.scheduler.planned_clones()  # type: ignore[attr-defined]
    assert planned == expected
    first_rung = {t: min(r.rung for r in driver.ledger.records if r.trial_id == t) for t in driver.trials}
    assert [sum(1 for r in first_rung.values() if r == k) for k in range(4)] == planned
    assert sum(planned) == len(driver.trials)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exploit_moves_the_population_towards_its_best(seed: int) -> None:
    driver, _ = drive(seed=seed)
    final = [r.score for r in driver.ledger.records if r.budget == 8]
    # The initial population as it would have scored, left alone, at the full budget.
    initial = [score(driver.trials[t], 8) for t, o in driver.lineage.items() if o["parent"] is None]
    assert np.mean(final) > np.mean(initial)  # type: ignore[arg-type]


def test_same_seed_same_population_history_whatever_order_members_finish_in() -> None:
    a, _ = drive(seed=5, slots=1)
    b, _ = drive(seed=5, slots=4)
    assert history(a) == history(b)
    c, _ = drive(seed=6, slots=4)
    assert history(c)["lineage"] != history(a)["lineage"] or history(c)["trials"] != history(a)["trials"]


def test_resume_by_replay_after_a_kill_reproduces_the_population_history(tmp_path: Path) -> None:
    whole, _ = drive(seed=2, ledger=Ledger(tmp_path / "whole.jsonl"))
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    billed = [i for i, line in enumerate(lines) if '"spend"' in line or '"trial_id"' in line]
    # The process died after about half of the trials had been billed, mid-generation.
    cut = billed[len(billed) // 2 + 1]
    (tmp_path / "killed.jsonl").write_text("".join(lines[:cut]))
    resumed, executor = drive(seed=2, ledger=Ledger(tmp_path / "killed.jsonl", replay=True))
    assert history(resumed) == history(whole)
    # What was billed before the kill is not run (nor billed) again.
    ran = {(b.trial_id, b.rung) for b in executor.busy}
    replayed = {(r.trial_id, r.rung) for r in resumed.ledger.records} - ran
    assert replayed and ran and not ran & replayed
    assert len(resumed.ledger.records) == len(whole.ledger.records)


def test_a_gpu_hour_cap_stops_the_population_mid_schedule() -> None:
    full, _ = drive(seed=0)
    spent = full.ledger.gpu_hours
    capped, _ = drive(seed=0, max_gpu_hours=spent / 3)
    assert capped.stop_reason == "max_gpu_hours"
    assert capped.ledger.gpu_hours < spent
    assert max(r.rung for r in capped.ledger.records) < 3


def test_a_searcher_that_runs_out_shrinks_the_population_to_what_it_proposed() -> None:
    space = SearchSpace((FloatParam("x", 0.0, 1.0), CategoricalParam("act", ("relu", "tanh", "gelu"))))
    clock, ledger = VirtualClock(), Ledger()
    scheduler = PBTScheduler(population=8, perturbation_interval=2, max_budget=6, space=space, mutations=("x",))
    controller = BudgetController(BudgetSettings(), mode="max", clock=clock, started_at=0.0, full_budget=6)
    searcher = make_searcher("grid", space, seed=0, mode="max", max_budget=6, grid_points=1)  # 3 configurations
    driver = SweepDriver(searcher, scheduler, ledger, controller, "max", 1, 6, clock=clock)
    driver.run(SimulatedExecutor(2, clock, lambda c, a, b: b - a, lambda c, b: c["x"] + b / 10, ledger))
    assert driver.stop_reason == "schedule_complete"
    assert scheduler.population == 3
    assert all(len([r for r in ledger.records if r.rung == k]) == 3 for k in range(3))
