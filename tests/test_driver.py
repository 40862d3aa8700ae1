"""The real sweep loop on a simulated cluster: every scheduler through one driver, time owned by the test."""

from __future__ import annotations

from typing import Any

import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger, TrialStatus
from rungflow.budgets.schedulers import SCHEDULERS, make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock
from rungflow.budgets.space import FloatParam, SearchSpace

SPACE = SearchSpace((FloatParam("x", 0.0, 1.0),))
SECONDS_PER_UNIT = 10.0


def score(config: Any, budget: float) -> float | None:
    return 1.0 - (config["x"] - 0.3) ** 2 - 0.5 / (1.0 + budget)


def seconds(config: Any, start: float, stop: float) -> float:
    return (stop - start) * SECONDS_PER_UNIT


def drive(kind: str, slots: int = 1, seed: int = 0, iterations: int = 1, max_open_brackets: int | None = None,
          **settings: Any) -> tuple[SweepDriver, SimulatedExecutor]:
    clock = VirtualClock()
    ledger = Ledger()
    scheduler = make_scheduler(kind, min_budget=1, max_budget=9, eta=3, integer=True, iterations=iterations,
                               num_trials=None, mode="max", max_open_brackets=max_open_brackets)
    controller = BudgetController(BudgetSettings(**settings), mode="max", clock=clock, started_at=0.0, full_budget=9)
    driver = SweepDriver(make_searcher("random", SPACE, seed=seed, mode="max", max_budget=9), scheduler, ledger,
                         controller, "max", 1, 9, seed=seed, clock=clock)
    executor = SimulatedExecutor(slots, clock, seconds, score, ledger)
    driver.run(executor)
    return driver, executor


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_every_scheduler_runs_its_plan_through_the_one_loop(kind: str) -> None:
    driver, executor = drive(kind, slots=3)
    assert driver.stop_reason == "schedule_complete"
    records = driver.ledger.records
    assert records and all(r.status == TrialStatus.COMPLETED for r in records)
    if driver.scheduler.synchronous:
        # Every unit the plan buys is trained, each trial resuming from its previous rung.
        assert sum(r.budget_trained for r in records) == pytest.approx(driver.scheduler.budget_units())
    else:  # ASHA promotes on the results so far, so it may buy more than a bracket's worth; it starts as many
        assert len({r.trial_id for r in records}) == driver.scheduler.num_trials  # type: ignore[attr-defined]
    assert max(b.finished_at for b in executor.busy) == pytest.approx(executor.clock.now)


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_same_seed_same_sweep(kind: str) -> None:
    a, _ = drive(kind, slots=2, seed=7)
    b, _ = drive(kind, slots=2, seed=7)
    assert [(r.trial_id, r.rung, r.score, r.finished_at) for r in a.ledger.records] == \
           [(r.trial_id, r.rung, r.score, r.finished_at) for r in b.ledger.records]


def _utilisation(executor: SimulatedExecutor) -> float:
    return sum(b.finished_at - b.started_at for b in executor.busy) / (executor.slots * executor.clock.now)


def test_one_slot_runs_back_to_back_and_barriers_idle_wider_clusters_only_one_bracket_at_a_time() -> None:
    driver, executor = drive("hyperband", slots=1)
    assert executor.clock.now == pytest.approx(driver.scheduler.budget_units() * SECONDS_PER_UNIT)
    _, sequential = drive("hyperband", slots=8, iterations=3, max_open_brackets=1)
    _, filled = drive("hyperband", slots=8, iterations=3)
    _, asha = drive("asha", slots=8, iterations=3)
    # One bracket at a time, eight slots idle at every rung barrier where fewer than eight trials are left; ASHA keeps
    # them busier, and so does Hyperband when a free slot takes the next bracket's trials.
    assert _utilisation(sequential) < 0.6
    assert _utilisation(asha) > _utilisation(sequential)
    assert _utilisation(filled) > 0.85 and filled.clock.now < 0.6 * sequential.clock.now


def test_the_deadline_runs_on_the_injected_clock() -> None:
    driver, executor = drive("hyperband", slots=1, deadline_seconds=100.0)
    assert driver.stop_reason == "deadline"
    assert executor.clock.now < drive("hyperband", slots=1)[1].clock.now


def test_a_runtime_that_loses_every_worker_stops_as_runtime_failed() -> None:
    clock = VirtualClock()
    ledger = Ledger()
    scheduler = make_scheduler("sha", min_budget=1, max_budget=9, eta=3, integer=True, iterations=1, num_trials=None,
                               mode="max")
    controller = BudgetController(BudgetSettings(), mode="max", clock=clock, started_at=0.0, full_budget=9)
    driver = SweepDriver(make_searcher("random", SPACE, seed=0, mode="max", max_budget=9), scheduler, ledger,
                         controller, "max", 1, 9, clock=clock, max_runtime_failures=3)

    class Dead(SimulatedExecutor):
        def collect(self, handle: Any, job: Any) -> list:
            import dataclasses

            return [dataclasses.replace(handle.record, status=TrialStatus.LOST, score=None, error="worker lost")]

    driver.run(Dead(1, clock, seconds, score, ledger))
    assert driver.stop_reason == "runtime_failed"
    assert "3 trials in a row lost their worker" in driver.stop_detail
    assert {r.rung for r in ledger.records} == {0}
