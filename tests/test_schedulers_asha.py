"""ASHA (asynchronous successive halving): promotion rule, failures, trial count, once per rung."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from rungflow.budgets.rungs import hyperband_plan
from rungflow.budgets.schedulers import AshaJob, ASHAScheduler, make_scheduler, rank_key


def _asha(num_trials: int = 20, eta: float = 3, mode: str = "max", lo: float = 1, hi: float = 9) -> ASHAScheduler:
    return ASHAScheduler(min_budget=lo, max_budget=hi, eta=eta, num_trials=num_trials, mode=mode)  # type: ignore[arg-type]


def _start(asha: ASHAScheduler, n: int) -> None:
    for _ in range(n):
        job = asha.next_job()
        assert job == AshaJob(None, 0, asha.budgets[0])


def test_rungs_and_first_jobs() -> None:
    asha = _asha()
    assert asha.budgets == [1.0, 3.0, 9.0]
    assert asha.kind == "asha" and asha.synchronous is False
    assert asha.next_job() == AshaJob(None, 0, 1.0)
    assert asha.started == 1


def test_promotes_once_in_top_fraction_of_rung_so_far() -> None:
    asha = _asha()
    _start(asha, 3)
    asha.on_result("a", 0, 0.5)
    asha.on_result("b", 0, 0.2)
    # Two results: top ⌊2/3⌋ = 0 trials, nobody can be promoted yet.
    assert asha.next_job() == AshaJob(None, 0, 1.0)
    asha.on_result("c", 0, 0.9)
    # Three results: the best one (c) is in the top third.
    assert asha.next_job() == AshaJob("c", 1, 3.0)
    # c is promoted already; a is second, not in the top ⌊3/3⌋ = 1.
    assert asha.next_job() == AshaJob(None, 0, 1.0)
    asha.on_result("d", 0, 0.1)
    assert asha.next_job() == AshaJob(None, 0, 1.0)
    asha.on_result("e", 0, 0.3)
    assert asha.next_job() == AshaJob(None, 0, 1.0)
    asha.on_result("f", 0, 0.4)
    # Six results: top 2 are c (promoted) and a.
    assert asha.next_job() == AshaJob("a", 1, 3.0)


def test_late_good_trial_is_promoted_at_once() -> None:
    asha = _asha()
    _start(asha, 4)
    for trial_id, score in [("a", 0.1), ("b", 0.2), ("c", 0.3)]:
        asha.on_result(trial_id, 0, score)
    assert asha.next_job() == AshaJob("c", 1, 3.0)
    asha.on_result("d", 0, 0.99)
    # d now ranks first of four: the top ⌊4/3⌋ = 1 holds d.
    assert asha.next_job() == AshaJob("d", 1, 3.0)


def test_higher_rungs_are_promoted_first() -> None:
    asha = _asha()
    _start(asha, 9)
    for i in range(9):
        asha.on_result(f"t{i}", 0, float(i))
    promoted = [asha.next_job() for _ in range(3)]
    assert promoted == [AshaJob("t8", 1, 3.0), AshaJob("t7", 1, 3.0), AshaJob("t6", 1, 3.0)]
    for job, score in zip(promoted, (5.0, 6.0, 7.0)):
        asha.on_result(job.trial_id, 1, score)  # type: ignore[arg-type]
    # Both rung 0 (9 results, nobody left in its top 3) and rung 1 (3 results): rung 1 goes first.
    assert asha.next_job() == AshaJob("t6", 2, 9.0)


def test_mode_min_promotes_the_smallest() -> None:
    asha = _asha(mode="min")
    _start(asha, 3)
    for trial_id, score in [("a", 0.5), ("b", 0.2), ("c", 0.9)]:
        asha.on_result(trial_id, 0, score)
    assert asha.next_job() == AshaJob("b", 1, 3.0)


def test_ties_broken_by_trial_id() -> None:
    asha = _asha()
    _start(asha, 6)
    for trial_id in ["f", "b", "d", "a", "e", "c"]:
        asha.on_result(trial_id, 0, 1.0)
    assert asha.next_job() == AshaJob("a", 1, 3.0)
    assert asha.next_job() == AshaJob("b", 1, 3.0)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
def test_never_promotes_failed_trials(bad: float | None) -> None:
    asha = _asha(num_trials=6)
    _start(asha, 6)
    for i in range(6):
        asha.on_result(f"t{i}", 0, bad)
    # Everything failed: nothing to promote, and all trials have started.
    assert asha.next_job() is None


def test_failed_trials_in_top_fraction_do_not_block_good_ones() -> None:
    asha = _asha(num_trials=6)
    _start(asha, 6)
    asha.on_result("a", 0, None)
    asha.on_result("b", 0, float("nan"))
    asha.on_result("c", 0, 0.1)
    assert asha.next_job() == AshaJob("c", 1, 3.0)
    for trial_id in ("d", "e", "f"):
        asha.on_result(trial_id, 0, float("nan"))
    # Six results, top 2: c (promoted) and then only failures; nothing more to do.
    assert asha.next_job() is None


def test_respects_num_trials() -> None:
    asha = _asha(num_trials=4)
    jobs = [asha.next_job() for _ in range(4)]
    assert all(j == AshaJob(None, 0, 1.0) for j in jobs)
    assert asha.next_job() is None
    assert asha.started == 4
    for i, score in enumerate([0.1, 0.2, 0.3, 0.4]):
        asha.on_result(f"t{i}", 0, score)
    assert asha.next_job() == AshaJob("t3", 1, 3.0)
    assert asha.next_job() is None


def test_mark_started_counts_trials_from_before_a_resume() -> None:
    asha = _asha(num_trials=5)
    asha.mark_started(3)
    assert [asha.next_job() for _ in range(2)] == [AshaJob(None, 0, 1.0)] * 2
    assert asha.next_job() is None
    asha.mark_started(1)  # never goes backwards
    assert asha.started == 5


def test_make_scheduler_default_num_trials_is_hyperbands() -> None:
    asha = make_scheduler("asha", min_budget=1, max_budget=27, eta=3, integer=True, iterations=2, num_trials=None,
                          mode="max")
    assert isinstance(asha, ASHAScheduler)
    assert asha.num_trials == sum(b.num_trials for b in hyperband_plan(1, 27, 3, iterations=2))
    explicit = make_scheduler("asha", min_budget=1, max_budget=27, eta=3, integer=True, iterations=1, num_trials=7,
                              mode="min")
    assert explicit.num_trials == 7 and explicit.mode == "min"


def _simulate(seed: int, num_trials: int, workers: int, fail_rate: float, eta: float = 3, hi: float = 27):
    """A random pool: each finished job is chosen at random among the running ones."""
    rng = np.random.default_rng(seed)
    asha = _asha(num_trials=num_trials, eta=eta, hi=hi)
    quality: dict[str, float] = {}
    running: list[tuple[str, int]] = []
    history: list[tuple[str, str, int]] = []  # (event, trial, rung)
    counter = 0
    while True:
        while len(running) < workers:
            # Snapshot of every rung before the scheduler decides, to check the promotion rule.
            snapshot = [dict(r) for r in asha._results]
            job = asha.next_job()
            if job is None:
                break
            if job.trial_id is None:
                trial_id = f"t{counter:03d}"
                counter += 1
                quality[trial_id] = float(rng.uniform())
            else:
                trial_id = job.trial_id
                below = snapshot[job.rung - 1]
                keep = math.floor(len(below) / asha.eta)
                ranked = sorted(below, key=lambda t: (rank_key(below[t], "max"), t))
                assert trial_id in ranked[:keep], (trial_id, job)
                assert math.isfinite(rank_key(below[trial_id], "max"))
            history.append(("start", trial_id, job.rung))
            running.append((trial_id, job.rung))
        if not running:
            return asha, history
        trial_id, rung = running.pop(int(rng.integers(len(running))))
        failed = rng.uniform() < fail_rate
        score = None if failed else quality[trial_id] + 0.1 * rung + float(rng.normal(0, 0.01))
        asha.on_result(trial_id, rung, score)
        history.append(("result", trial_id, rung))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fail_rate", [0.0, 0.3])
def test_random_pool_invariants(seed: int, fail_rate: float) -> None:
    asha, history = _simulate(seed, num_trials=40, workers=4, fail_rate=fail_rate)
    starts = [(t, r) for e, t, r in history if e == "start"]
    # Each trial runs each rung at most once; exactly num_trials trials start at rung 0.
    assert len(starts) == len(set(starts))
    assert sum(1 for _, r in starts if r == 0) == 40
    assert asha.started == 40
    # A trial is promoted to rung r only after its result at rung r-1 came in, and never after failing.
    finished: dict[tuple[str, int], bool] = {}
    for event, trial_id, rung in history:
        if event == "start" and rung > 0:
            assert (trial_id, rung - 1) in finished
        if event == "result":
            finished[(trial_id, rung)] = True
    for rung, results in enumerate(asha._results[:-1]):
        for trial_id in asha._promoted[rung]:
            assert results[trial_id] is not None
    # The run drains: at the end nothing is promotable and no trial is left to start.
    assert asha.next_job() is None
    # Promotion is judged on the rung *so far*, so an early promotion can later fall out of the top 1/η
    # (ASHA's known mispromotions); still, only a minority of each rung climbs.
    for rung, results in enumerate(asha._results[:-1]):
        if results:
            assert len(asha._promoted[rung]) < len(results) / 2


def test_budget_units_use_ashas_own_rungs() -> None:
    for lo, hi, eta in [(1, 9, 3), (1, 81, 3), (1, 5, 1.2)]:
        asha = ASHAScheduler(min_budget=lo, max_budget=hi, eta=eta, num_trials=20)
        expected, previous = 0.0, 0.0
        for k, budget in enumerate(asha.budgets):
            expected += max(1, math.floor(20 * eta ** (-k) + 1e-9)) * (budget - previous)
            previous = budget
        assert asha.budget_units() == pytest.approx(expected), (lo, hi, eta, asha.budgets)


def test_budget_units_without_merged_rungs() -> None:
    asha = ASHAScheduler(min_budget=1, max_budget=9, eta=3, num_trials=9)
    assert asha.budget_units() == 9 * 1 + 3 * 2 + 1 * 6


def test_full_drain_with_fifo_pool() -> None:
    """Three workers, first started finishes first: every trial starts, the best few reach the top rung."""
    asha = _asha(num_trials=27, hi=27)
    score = {f"t{i:02d}": (i * 7 % 27) / 27 for i in range(27)}
    running: deque[AshaJob] = deque()
    counter = 0
    top_rung: list[str] = []
    while True:
        while len(running) < 3 and (job := asha.next_job()) is not None:
            if job.trial_id is None:
                job = AshaJob(f"t{counter:02d}", 0, job.budget)
                counter += 1
            running.append(job)
        if not running:
            break
        job = running.popleft()
        assert job.trial_id is not None
        if job.rung == len(asha.budgets) - 1:
            top_rung.append(job.trial_id)
        asha.on_result(job.trial_id, job.rung, score[job.trial_id] + job.rung)
    assert counter == 27
    assert top_rung, "somebody reaches the full budget"
    assert len(top_rung) == len(set(top_rung))
    assert len(top_rung) < 27 // 3
