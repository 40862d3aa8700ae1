"""The median stopping rule: who stops where, and whole sweeps through the real driver loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger, TrialStatus
from rungflow.budgets.median import MedianStoppingScheduler
from rungflow.budgets.schedulers import Job, make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock
from rungflow.budgets.space import FloatParam, SearchSpace


def median(num_trials: int = 10, mode: str = "max", **kwargs: Any) -> MedianStoppingScheduler:
    return MedianStoppingScheduler(min_budget=1, max_budget=9, eta=3, num_trials=num_trials, mode=mode,  # type: ignore[arg-type]
                                   **kwargs)


def report(s: MedianStoppingScheduler, rung: int, scores: dict[str, float | None]) -> None:
    for trial_id, score in scores.items():
        s.on_result(trial_id, rung, score)


def test_rungs_are_ashas_and_new_trials_start_until_num_trials() -> None:
    s = median(num_trials=2)
    assert s.budgets == [1.0, 3.0, 9.0] and s.kind == "median" and not s.synchronous
    assert [s.next_job(), s.next_job(), s.next_job()] == [Job(None, 0, 1.0), Job(None, 0, 1.0), None]
    assert s.budget_units() == 2 * 9


def test_a_trial_worse_than_the_median_of_the_others_stops_once_there_are_min_samples() -> None:
    s = median()
    report(s, 0, {"a": 0.5, "b": 0.7, "c": 0.6})
    # Fewer than three others when each arrived: all three go on.
    assert [s.next_job() for _ in range(3)] == [Job("a", 1, 3.0), Job("b", 1, 3.0), Job("c", 1, 3.0)]
    report(s, 0, {"d": 0.55})  # median of 0.5, 0.7, 0.6 is 0.6: d stops
    report(s, 0, {"e": 0.6})  # equal to the median of the four others (0.575) or better: e goes on
    assert s.stopped == {"d": 0}
    assert s.next_job() == Job("e", 1, 3.0)


def test_no_stopping_before_the_grace_budget() -> None:
    s = median(grace_budget=3)
    report(s, 0, {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1})
    assert s.stopped == {}
    report(s, 1, {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1})
    assert s.stopped == {"d": 1}


def test_min_samples_and_mode_min() -> None:
    s = median(mode="min", min_samples=1)
    report(s, 0, {"a": 0.5, "b": 0.7, "c": 0.4})
    assert s.stopped == {"b": 0}  # larger is worse; one other result is enough


def test_failed_trials_stop_and_do_not_count_in_the_median() -> None:
    s = median()
    report(s, 0, {"a": 0.5, "b": None, "c": float("nan"), "d": 0.1, "e": 0.2})
    assert set(s.stopped) == {"b", "c"}  # d and e each saw fewer than three finite others
    report(s, 0, {"f": 0.15})  # median of 0.5, 0.1, 0.2 is 0.2
    assert s.stopped["f"] == 0


def test_the_top_rung_is_the_end_not_a_stop() -> None:
    s = median(min_samples=1)
    report(s, 2, {"a": 0.9, "b": 0.1})
    assert s.stopped == {} and s.next_job() == Job(None, 0, 1.0)


@pytest.mark.parametrize("kwargs, field", [({"min_samples": 0}, "min_samples"), ({"grace_budget": 10}, "grace_budget"),
                                           ({"num_trials": 0}, "num_trials")])
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        median(**kwargs)


# --- through the real driver -----------------------------------------------------------------------

SPACE = SearchSpace((FloatParam("x", 0.0, 1.0),))


def score(config: Any, budget: float) -> float | None:
    return 1.0 - (config["x"] - 0.3) ** 2 - 0.5 / (1.0 + budget)


def seconds(config: Any, start: float, stop: float) -> float:
    return (stop - start) * (1.0 + config["x"])


def drive(slots: int = 3, seed: int = 0, ledger: Ledger | None = None, **settings: Any) -> tuple[SweepDriver, SimulatedExecutor]:
    clock = VirtualClock()
    ledger = ledger if ledger is not None else Ledger()
    scheduler = make_scheduler("median", min_budget=1, max_budget=9, eta=3, integer=True, iterations=1, num_trials=20,
                               mode="max", grace_budget=1, min_samples=3)
    controller = BudgetController(BudgetSettings(**settings), mode="max", clock=clock, started_at=0.0, full_budget=9)
    driver = SweepDriver(make_searcher("random", SPACE, seed=seed, mode="max", max_budget=9), scheduler, ledger,
                         controller, "max", 1, 9, seed=seed, clock=clock)
    if ledger.pending:
        driver.load_replay()
    executor = SimulatedExecutor(slots, clock, seconds, score, ledger)
    driver.run(executor)
    return driver, executor


def test_a_median_sweep_through_the_driver_stops_the_weak_and_runs_the_rest_to_the_end() -> None:
    driver, _ = drive()
    assert driver.stop_reason == "schedule_complete"
    records = driver.ledger.records
    assert all(r.status == TrialStatus.COMPLETED for r in records) and len(driver.trials) == 20
    stopped = driver.scheduler.stopped  # type: ignore[attr-defined]
    assert stopped and any(r.budget == 9 for r in records)
    reached = {t: max(r.rung for r in records if r.trial_id == t) for t in driver.trials}
    for trial_id, rung in reached.items():
        rungs = sorted(r.rung for r in records if r.trial_id == trial_id)
        assert rungs == list(range(rung + 1))  # rung by rung, each once
        assert rung == 2 or stopped.get(trial_id) == rung
    # It bought less than running everyone to the full budget, resuming from checkpoints.
    assert sum(r.budget_trained for r in records) < driver.scheduler.budget_units()
    assert driver.decisions[0]["stage"] == "median after 0 results"


def test_resume_by_replay_gives_the_same_stops(tmp_path: Path) -> None:
    whole, _ = drive(slots=1, ledger=Ledger(tmp_path / "whole.jsonl"))
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "killed.jsonl").write_text("".join(lines[: len(lines) // 2]))
    resumed, executor = drive(slots=1, ledger=Ledger(tmp_path / "killed.jsonl", replay=True))
    assert resumed.scheduler.stopped == whole.scheduler.stopped  # type: ignore[attr-defined]
    assert [(r.trial_id, r.rung, r.score) for r in resumed.ledger.records] == \
           [(r.trial_id, r.rung, r.score) for r in whole.ledger.records]
    assert 0 < len(executor.busy) < len(whole.ledger.records)


def test_a_cap_stops_it() -> None:
    full, _ = drive()
    capped, _ = drive(max_gpu_hours=full.ledger.gpu_hours / 4)
    assert capped.stop_reason == "max_gpu_hours" and capped.ledger.gpu_hours < full.ledger.gpu_hours
