"""What a sweep held: worker spans in the ledger, idle workers given back, and the caps under ``budget.bill: held``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings, StopReason
from rungflow.budgets.holding import MIN_AUTO_RELEASE_SECONDS, Holds, HoldSpan, held_seconds, parse_release_after
from rungflow.budgets.ledger import Ledger
from rungflow.tasks.worker_pool import WorkerPool


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_holds_count_closed_spans_once_and_open_ones_up_to_now() -> None:
    holds = Holds()
    holds.acquire("a", 0.25, 1.0, at=0.0)
    holds.acquire("b", 0.5, 2.0, at=10.0)
    assert holds.release("a", at=100.0) == HoldSpan("a", 0.25, 1.0, 0.0, 100.0)
    assert holds.release("a", at=200.0) is None  # released twice: billed once
    assert holds.gpu_seconds(now=110.0) == pytest.approx(100 * 0.25 + 100 * 0.5)
    assert holds.cpu_seconds(now=110.0) == pytest.approx(100 * 1.0 + 100 * 2.0)
    with pytest.raises(ValueError, match="already held"):
        holds.acquire("b", 0.5, 2.0, at=20.0)


def test_the_ledger_keeps_holds_and_bills_a_dead_process_up_to_its_last_sign_of_life(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    ledger = Ledger(tmp_path / "ledger.jsonl", price_per_gpu_hour=3.0, clock=clock)
    ledger.acquire_hold("actor-0", 0.25, 1.0)
    ledger.acquire_hold("actor-1", 0.25, 1.0)
    clock.now = 1000.0 + 3600.0
    ledger.release_hold("actor-0")
    clock.now = 1000.0 + 7200.0
    assert ledger.gpu_hours_held == pytest.approx(0.25 + 0.5)  # actor-1 is still held: up to now
    assert ledger.cost_held == pytest.approx(0.75 * 3.0)
    assert ledger.gpu_hours == 0.0  # nothing trained: the two figures are apart
    lines = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == ["hold", "hold", "hold"]  # append-only: the release is a line of its own
    # The process dies with actor-1 held; its heartbeat was last touched half an hour after the release.
    again = Ledger(tmp_path / "ledger.jsonl", replay=True, clock=Clock(99999.0), last_alive=1000.0 + 5400.0)
    assert again.gpu_hours_held == pytest.approx(0.25 + 0.25 * 1.5)
    assert again.summary(max_budget=1.0)["workers_held"] == 2


def test_a_cap_under_bill_held_counts_idle_workers_and_under_trained_does_not() -> None:
    clock = Clock(0.0)
    ledger = Ledger(price_per_gpu_hour=2.0, clock=clock)
    ledger.acquire_hold("actor-0", 1.0, 1.0)
    clock.now = 2 * 3600.0
    held = BudgetController(BudgetSettings(max_gpu_hours=1.5, bill="held"), mode="max", clock=clock)
    trained = BudgetController(BudgetSettings(max_gpu_hours=1.5), mode="max", clock=clock)
    reason = held.hard_cap_reached(ledger)
    assert reason is not None and reason[0] == StopReason.MAX_GPU_HOURS and "GPU-h held" in reason[1]
    assert trained.hard_cap_reached(ledger) is None
    money = BudgetController(BudgetSettings(max_cost=3.0, bill="held"), mode="max", clock=clock)
    assert money.hard_cap_reached(ledger)[0] == StopReason.MAX_COST  # type: ignore[index]


@pytest.mark.parametrize("value", [-1, "soon", float("nan"), float("inf"), True, None])
def test_a_grace_period_that_is_not_a_number_of_seconds_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="seconds"):
        parse_release_after(value)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def acquire_hold(self, worker: str, gpus: float, cpus: float, at: float | None = None) -> None:
        with self.lock:
            self.events.append(("acquire", worker))

    def release_hold(self, worker: str, at: float | None = None) -> None:
        with self.lock:
            self.events.append(("release", worker))


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_an_idle_worker_is_given_back_after_the_grace_and_a_busy_pool_reuses_the_warmest() -> None:
    destroyed: list[int] = []
    made = iter(range(100))
    sink = Sink()
    pool = WorkerPool(2, create=lambda: next(made), destroy=destroyed.append, gpus=0.25, cpus=1.0,
                      release_after=0.2, holds=sink)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    pool.release(b)
    assert pool.acquire() == b  # the most recently idle: its dataset and CUDA context are the warmest
    assert _wait_for(lambda: destroyed == [a])  # a stayed idle past the grace: given back
    assert ("release", "worker-0") in sink.events and ("release", "worker-1") not in sink.events
    c = pool.acquire()  # a slot was freed: a new worker starts
    assert c not in (a, b) and pool.created == 3
    pool.release(b)
    pool.release(c)
    pool.close()
    assert sorted(destroyed) == sorted([a, b, c])
    acquired = sorted(w for kind, w in sink.events if kind == "acquire")
    assert acquired == sorted(w for kind, w in sink.events if kind == "release") == ["worker-0", "worker-1", "worker-2"]


def test_never_keeps_idle_workers_to_the_end_and_auto_waits_as_long_as_a_start_up() -> None:
    destroyed: list[object] = []
    never = WorkerPool(1, create=object, destroy=destroyed.append, gpus=1.0, cpus=1.0, release_after="never")
    worker = never.acquire()
    never.release(worker)
    time.sleep(0.3)
    assert destroyed == [] and never.idle_grace() is None
    never.close()
    assert destroyed == [worker]

    def slow_start() -> object:
        time.sleep(0.05)
        return object()

    auto = WorkerPool(1, create=slow_start, destroy=destroyed.append, gpus=1.0, cpus=1.0, release_after="auto")
    auto.release(auto.acquire())
    assert auto.idle_grace() == pytest.approx(MIN_AUTO_RELEASE_SECONDS)  # a 50 ms start-up is under the floor
    auto._startup_seconds = [7.0, 9.0, 8.0]
    assert auto.idle_grace() == 8.0  # the median start-up
    auto.close()


def test_a_worker_that_fails_to_start_frees_its_slot_and_ends_its_hold() -> None:
    sink = Sink()

    def broken() -> object:
        raise RuntimeError("no GPU left on the node")

    pool = WorkerPool(1, create=broken, destroy=lambda _w: None, gpus=1.0, cpus=1.0, holds=sink)
    for _ in range(2):  # the slot is free again: the second try does not block
        with pytest.raises(RuntimeError, match="no GPU left"):
            pool.acquire()
    assert sink.events == [("acquire", "worker-0"), ("release", "worker-0"), ("acquire", "worker-1"),
                           ("release", "worker-1")]


def test_a_simulated_slot_is_held_as_the_pool_would_hold_its_worker() -> None:
    jobs = [(10.0, 20.0), (21.0, 30.0), (100.0, 110.0)]
    # Kept through the 1 s gap, given back 5 s into the 70 s gap and asked for again 2 s before the third job,
    # then kept 5 s after the last job (the sweep ends at 200).
    assert held_seconds(jobs, grace=5.0, startup=2.0, end=200.0) == pytest.approx(2 + 10 + 1 + 9 + 5 + 2 + 10 + 5)
    assert held_seconds(jobs, grace=None, startup=2.0, end=200.0) == pytest.approx(2 + 190)  # kept to the end
    assert held_seconds([], grace=5.0, startup=2.0, end=200.0) == 0.0
