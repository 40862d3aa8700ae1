"""The sweep's monitoring lost mid-stage (budgets/monitor.py): the driver stops, bills every job it handed out, then
lets the exception go on. Pure core: a simulated cluster whose publish raises."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger, TrialStatus
from rungflow.budgets.monitor import MonitorLost
from rungflow.budgets.schedulers import make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock
from rungflow.budgets.space import FloatParam, SearchSpace

SPACE = SearchSpace((FloatParam("x", 0.0, 1.0),))


def score(config: Any, budget: float) -> float | None:
    return 1.0 - (config["x"] - 0.3) ** 2 - 0.5 / (1.0 + budget)


def seconds(config: Any, start: float, stop: float) -> float:
    return (stop - start) * 10.0


class Lost(MonitorLost):
    pass


class LosesItsMonitor(SimulatedExecutor):
    """Its publish raises once jobs of at least two brackets are out (started or queued), as a dead Prefect API does."""

    out: Counter[int]
    in_flight_when_lost: dict[tuple[str, int], int] | None = None

    def start(self, job: Any, notify: Any) -> Any:
        self.out[job.bracket] += 1
        self.dispatched[(job.trial_id, job.rung)] = job.bracket
        return super().start(job, notify)

    def collect(self, handle: Any, job: Any) -> list:
        self.out[job.bracket] -= 1
        return super().collect(handle, job)

    def publish(self) -> None:
        if self.in_flight_when_lost is None and sum(1 for n in self.out.values() if n > 0) >= 2:
            self.in_flight_when_lost = {k: b for k, b in self.dispatched.items()
                                        if k not in {(r.trial_id, r.rung) for r in self.ledger.records}}
            raise Lost("the monitor stopped answering")


def sweep(kind: str, slots: int) -> tuple[SweepDriver, LosesItsMonitor]:
    clock = VirtualClock()
    ledger = Ledger()
    scheduler = make_scheduler(kind, min_budget=1, max_budget=9, eta=3, integer=True, iterations=2, num_trials=None,
                               mode="max")
    controller = BudgetController(BudgetSettings(), mode="max", clock=clock, started_at=0.0, full_budget=9)
    driver = SweepDriver(make_searcher("random", SPACE, seed=0, mode="max", max_budget=9), scheduler, ledger,
                         controller, "max", 1, 9, clock=clock)
    executor = LosesItsMonitor(slots, clock, seconds, score, ledger)
    executor.out, executor.dispatched = Counter(), {}
    return driver, executor


def assert_every_start_billed_once(ledger: Ledger) -> None:
    assert not ledger.unbilled_starts()
    keys = [r.key for r in ledger.records]
    assert len(keys) == len(set(keys))
    assert set(ledger.starts) <= set(keys)


def test_a_lost_monitor_mid_rung_bills_every_job_in_flight_in_every_bracket_then_raises() -> None:
    driver, executor = sweep("hyperband", slots=4)
    with pytest.raises(Lost):
        driver.run(executor)
    lost_with = executor.in_flight_when_lost
    assert lost_with is not None and len(set(lost_with.values())) >= 2, "the monitor was lost with two brackets out"
    assert_every_start_billed_once(driver.ledger)
    billed = {(r.trial_id, r.rung): r for r in driver.ledger.records}
    assert set(lost_with) <= set(billed)
    # What was running finished and is billed for what it used; what had not started came back cancelled, and
    # nothing else was handed out after the loss.
    statuses = Counter(billed[k].status for k in lost_with)
    assert statuses[TrialStatus.COMPLETED] == executor.slots and statuses[TrialStatus.CANCELLED] >= 1
    assert all(billed[k].gpu_seconds == 0 for k in lost_with if billed[k].status == TrialStatus.CANCELLED)
    # Each cancelled record says why: the sweep's own stop, not a budget cap it never hit.
    assert all(billed[k].error == f"cancelled: {driver.stop_detail}" for k in lost_with
               if billed[k].status == TrialStatus.CANCELLED)
    assert set(executor.dispatched) == set(billed)
    assert driver.stop_reason == "cancelled" and "the monitor stopped answering" in driver.stop_detail


def test_a_lost_monitor_under_asha_bills_every_job_in_flight_then_raises() -> None:
    driver, executor = sweep("asha", slots=3)
    # ASHA has one bracket: lose the monitor at the first publish with trials out.
    executor.out[-1] = 1
    with pytest.raises(Lost):
        driver.run(executor)
    assert executor.in_flight_when_lost
    assert_every_start_billed_once(driver.ledger)
    assert set(executor.dispatched) == {(r.trial_id, r.rung) for r in driver.ledger.records}
    assert driver.stop_reason == "cancelled"
