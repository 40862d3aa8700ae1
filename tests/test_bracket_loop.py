"""Brackets several at a time (budgets/bracket_loop.py): the slots fill, each bracket buys what it bought one at a time,
the schedule is one for a given completion order, and a resumed sweep replays the decisions it made before the crash."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger, SpendRecord, TrialStatus
from rungflow.budgets.schedulers import make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock, critical_path
from rungflow.budgets.space import FloatParam, SearchSpace

SPACE = SearchSpace((FloatParam("x", 0.0, 1.0), FloatParam("y", 0.0, 1.0)))


def score(config: Any, budget: float) -> float | None:
    return 1.0 - (config["x"] - 0.3) ** 2 - 0.5 / (1.0 + budget)


def seconds(config: Any, start: float, stop: float) -> float:
    # Uneven trials, as real ones are: a barrier waits for the slowest.
    return (stop - start) * (5.0 + 20.0 * config["y"])


def sweep(slots: int, *, max_open: int | None = None, algorithm: str = "bohb", ledger: Ledger | None = None,
          iterations: int = 3, **settings: Any) -> tuple[SweepDriver, SimulatedExecutor]:
    clock = VirtualClock()
    ledger = ledger if ledger is not None else Ledger()
    scheduler = make_scheduler("hyperband", min_budget=1, max_budget=9, eta=3, integer=True, iterations=iterations,
                               num_trials=None, mode="max", max_open_brackets=max_open)
    controller = BudgetController(BudgetSettings(**settings), mode="max", clock=clock, started_at=0.0, full_budget=9)
    searcher = make_searcher(algorithm, SPACE, seed=3, mode="max", max_budget=9, min_points_in_model=3)
    driver = SweepDriver(searcher, scheduler, ledger, controller, "max", 1, 9, seed=3, clock=clock)
    return driver, SimulatedExecutor(slots, clock, seconds, score, ledger, stage_seconds=0.5)


def run(slots: int, **kwargs: Any) -> tuple[SweepDriver, SimulatedExecutor]:
    driver, executor = sweep(slots, **kwargs)
    driver.run(executor)
    return driver, executor


def fingerprint(driver: SweepDriver) -> list[tuple[Any, ...]]:
    return [(r.trial_id, r.bracket, r.rung, r.score, r.started_at, r.finished_at) for r in driver.ledger.records]


def utilisation(executor: SimulatedExecutor) -> float:
    return sum(b.finished_at - b.started_at for b in executor.busy) / (executor.slots * executor.clock.now)


def test_free_slots_take_the_next_brackets_trials() -> None:
    one_at_a_time, slow = run(8, max_open=1)
    filled, fast = run(8)
    assert utilisation(slow) < 0.5 < 0.8 < utilisation(fast)
    assert fast.clock.now < 0.5 * slow.clock.now
    # Brackets overlap in time: some bracket starts before an earlier one has passed its last barrier.
    spans = {b["bracket"]: (b["rungs"][0]["started_at"], b["rungs"][-1]["finished_at"]) for b in filled.schedule}
    assert any(spans[b][0] < spans[b - 1][1] for b in spans if b > 0)
    assert all(spans[b][0] >= spans[b - 1][1] for b in spans if b > 0 and b in one_at_a_time.schedule)


def test_each_bracket_trains_its_plan_and_its_gate_keeps_its_own_best() -> None:
    driver, _ = run(8)
    per_rung = Counter((r.bracket, r.rung) for r in driver.ledger.records)
    for bracket in driver.scheduler.brackets:
        for rung in bracket.rungs:
            assert per_rung[(bracket.index, rung.index)] == rung.num_trials
    assert sum(r.budget_trained for r in driver.ledger.records) == pytest.approx(driver.scheduler.budget_units())
    # Whatever ran beside it, a bracket's survivors are its own rung's best.
    by = {(r.bracket, r.rung, r.trial_id): r.score for r in driver.ledger.records}
    for (bracket, rung, trial), _ in by.items():
        if rung == 0:
            continue
        below = sorted(((s, t) for (b, g, t), s in by.items() if b == bracket and g == rung - 1), reverse=True)
        assert trial in {t for _, t in below[:per_rung[(bracket, rung)]]}
        assert driver.trial_bracket[trial] == bracket


def test_one_slot_or_one_open_bracket_is_the_sequential_schedule() -> None:
    assert fingerprint(run(1)[0]) == fingerprint(run(1, max_open=1)[0])
    assert fingerprint(run(8)[0]) != fingerprint(run(8, max_open=1)[0])


@pytest.mark.parametrize("algorithm", ["bohb", "tpe", "random"])
def test_the_same_completion_order_gives_the_same_schedule(algorithm: str) -> None:
    a, _ = run(5, algorithm=algorithm)
    b, _ = run(5, algorithm=algorithm)
    assert fingerprint(a) == fingerprint(b) and a.trials == b.trials and a.decisions == b.decisions


def test_a_hard_cap_sees_the_spend_the_running_brackets_have_committed() -> None:
    cap = 0.5  # GPU-hours; the whole schedule buys more
    driver, _ = run(16, max_gpu_hours=cap)
    assert driver.stop_reason == "max_gpu_hours"
    # Everything that ran was approved or cancelled by the cap: the overshoot is at most what was already running.
    assert driver.ledger.gpu_hours < cap * 1.5


def test_a_soft_stop_lets_the_running_stages_finish_and_starts_none() -> None:
    driver, _ = run(8, min_gain_per_gpu_hour=1e9, window_gpu_hours=0.01, min_gpu_hours=0.05)
    assert driver.stop_reason == "min_gain_per_gpu_hour"
    stop_at = next(i for i, d in enumerate(driver.decisions) if d["action"] == "stop")
    assert stop_at == len(driver.decisions) - 1  # no stage was asked about after the stop
    assert all(r.status == TrialStatus.COMPLETED for r in driver.ledger.records)


class Crash(Exception):
    pass


class CrashAfter(SimulatedExecutor):
    """Dies, like a killed flow process, when the ``after``-th result is about to be billed."""

    after: int = 0
    seen: int = 0

    def collect(self, handle: Any, job: Any) -> list[SpendRecord]:
        self.seen += 1
        if self.seen > self.after:
            raise Crash
        return super().collect(handle, job)


@pytest.mark.parametrize("after", [7, 23, 41])
def test_resume_replays_the_decisions_made_before_the_crash(tmp_path: Path, after: int) -> None:
    path = tmp_path / "ledger.jsonl"
    driver, executor = sweep(6, ledger=Ledger(path))
    crashing = CrashAfter(executor.slots, executor.clock, seconds, score, driver.ledger, stage_seconds=0.5)
    crashing.after = after
    with pytest.raises(Crash):
        driver.run(crashing)
    billed = list(driver.ledger.records)
    assert len(billed) == after
    before = dict(driver.trials)

    resumed, executor = sweep(6, ledger=Ledger(path, replay=True))
    assert resumed.load_replay() == after
    resumed.run(executor)
    assert resumed.stop_reason == "schedule_complete"
    # The crash's records come back first, in the order they were billed, none billed twice; the trials created
    # before the crash have the configurations they had, so the searcher was told the same results in the same order.
    keys = [(r.trial_id, r.rung, r.attempt) for r in resumed.ledger.records]
    assert len(keys) == len(set(keys))
    assert [(r.trial_id, r.rung, r.score) for r in resumed.ledger.records[:after]] == \
           [(r.trial_id, r.rung, r.score) for r in billed]
    assert {t: resumed.trials[t] for t in before} == before
    untimed = [{k: v for k, v in d.items() if k not in ("elapsed_seconds", "checked_at")} for d in resumed.decisions]
    assert untimed[:len(driver.decisions)] == [{k: v for k, v in d.items() if k not in ("elapsed_seconds", "checked_at")}
                                               for d in driver.decisions]
    per_rung = Counter((r.bracket, r.rung) for r in resumed.ledger.records)
    assert all(per_rung[(b.index, r.index)] == r.num_trials for b in resumed.scheduler.brackets for r in b.rungs)


def test_the_critical_path_is_the_longest_bracket_chain_or_the_sum_of_them() -> None:
    # On 64 slots every rung's trials start together, so one bracket at a time the wall-clock is the set-up, each
    # rung's slowest trial and each barrier's 0.5 s charge: the critical path is all of it but the driver's charges.
    sequential, executor = run(64, max_open=1)
    stages = sum(len(b.rungs) for b in sequential.scheduler.brackets)
    path = critical_path(executor.busy, asynchronous=False, brackets_in_sequence=True)
    assert path == pytest.approx(executor.clock.now - 0.5 * (stages + 1))
    # Side by side, the longest bracket's chain is what no number of slots can beat.
    _, filled = run(64)
    side_by_side = critical_path(filled.busy, asynchronous=False, brackets_in_sequence=False)
    assert side_by_side < 0.5 * path
    assert side_by_side <= max(b.finished_at for b in filled.busy)


def test_the_simulator_numbers_the_slots_each_job_ran_on() -> None:
    _, executor = run(4)
    assert {b.slot for b in executor.busy} == {0, 1, 2, 3}
    for slot in range(4):
        spans = sorted((b.started_at, b.finished_at) for b in executor.busy if b.slot == slot)
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:]))  # one job at a time per slot
