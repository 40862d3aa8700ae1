"""ASHA's stopping variant (``scheduler.asha_type: stopping``): Ray Tune's ASHAScheduler rule, decision for decision,
through the driver and its replay, in the config, and a Ray Tune example sweeping under it end to end."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.schedulers import ASHAScheduler as RayASHAScheduler
from ray.tune.schedulers.trial_scheduler import TrialScheduler

from rungflow.budgets.asha import ASHAScheduler, StoppingASHAScheduler
from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.ledger import Ledger
from rungflow.budgets.schedulers import Job, make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock
from rungflow.budgets.space import FloatParam, SearchSpace
from rungflow.config import ConfigError, validate


def stopping(lo: float = 1, hi: float = 9, eta: float = 3, num_trials: int = 20, mode: str = "max") -> StoppingASHAScheduler:
    return StoppingASHAScheduler(min_budget=lo, max_budget=hi, eta=eta, num_trials=num_trials, mode=mode)  # type: ignore[arg-type]


def ray_asha(lo: float = 1, hi: float = 9, eta: float = 3, mode: str = "max") -> RayASHAScheduler:
    return RayASHAScheduler(time_attr="training_iteration", metric="score", mode=mode, max_t=hi, grace_period=lo,
                            reduction_factor=eta)


def ray_stops(ray: RayASHAScheduler, trial_id: str, budget: float, score: float) -> bool:
    """Ray Tune's own verdict on a report, its scheduler driven directly with a stand-in trial."""
    trial = SimpleNamespace(trial_id=trial_id)
    if trial_id not in ray._trial_info:
        ray.on_trial_add(None, trial)  # type: ignore[arg-type]
    return ray.on_trial_result(None, trial, {"training_iteration": budget, "score": score}) == TrialScheduler.STOP  # type: ignore[arg-type]


# A hand-worked rung 0 at η = 3: the cutoff is the 66.7th percentile (numpy's linear interpolation) of the signed
# scores recorded there before, larger is better, so in min mode the losses are negated first.
#        max: recorded before   cutoff  verdict         min: recorded before (negated)  cutoff  verdict
#   a 0.5   -                   -       runs on             -                           -       runs on
#   b 0.2   0.5                 0.5     stops               -0.5                        -0.5    runs on
#   c 0.9   0.2 0.5             0.4     runs on             -0.5 -0.2                   -0.3    stops
#   d 0.45  0.2 0.5 0.9         0.633   stops               -0.9 -0.5 -0.2              -0.4    stops
#   e 0.5   0.2 0.45 0.5 0.9    0.5     runs on (equal)     -0.9 -0.5 -0.45 -0.2        -0.45   stops
HAND_WORKED = {"a": 0.5, "b": 0.2, "c": 0.9, "d": 0.45, "e": 0.5}
STOPS = {"max": ["b", "d"], "min": ["c", "d", "e"]}


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_hand_worked_rung_gives_ray_tunes_verdicts(mode: str) -> None:
    ours, ray = stopping(mode=mode), ray_asha(mode=mode)
    ray_stopped = []
    for trial_id, loss_or_score in HAND_WORKED.items():
        ours.on_result(trial_id, 0, loss_or_score)
        if ray_stops(ray, trial_id, 1, loss_or_score):
            ray_stopped.append(trial_id)
    assert sorted(ours.stopped) == STOPS[mode] == ray_stopped
    assert set(ours.stopped.values()) == {0}
    # The trials that ran on continue before any new trial starts, in the order they reported.
    running_on = [t for t in HAND_WORKED if t not in STOPS[mode]]
    assert [ours.next_job() for _ in running_on] == [Job(t, 1, 3.0) for t in running_on]
    assert ours.next_job() == Job(None, 0, 1.0)
    assert ours.cutoff([0.2, 0.5, 0.9]) == pytest.approx(0.5 + 0.4 / 3)


@pytest.mark.parametrize("seed", range(12))
def test_random_completion_orders_get_ray_tunes_verdicts_on_ray_tunes_milestones(seed: int) -> None:
    rng = random.Random(seed)
    mode = rng.choice(["min", "max"])
    lo, hi, eta = [(1, 9, 3), (5, 100, 3), (1, 10, 3), (1, 16, 2), (2, 81, 4)][seed % 5]
    ours, ray = stopping(lo, hi, eta, num_trials=24, mode=mode), ray_asha(lo, hi, eta, mode)
    milestones = sorted(m for m, _ in ray._brackets[0]._rungs)
    assert ours.budgets == sorted({*milestones, float(hi)})
    running: list[tuple[str, int]] = []
    new = verdicts = 0
    while True:  # four workers; any running job may finish next
        while len(running) < 4 and (job := ours.next_job()) is not None:
            running.append((job.trial_id or f"t{new}", job.rung))
            new += job.trial_id is None
        if not running:
            break
        trial_id, rung = running.pop(rng.randrange(len(running)))
        score = rng.choice([rng.random(), round(rng.random(), 1)])  # ties too
        ray_stopped = ray_stops(ray, trial_id, ours.budgets[rung], score)
        ours.on_result(trial_id, rung, score)
        if rung + 1 < len(ours.budgets):  # at max_t Ray Tune stops every trial: the end, not the rule
            assert ray_stopped is (ours.stopped.get(trial_id) == rung), (trial_id, rung)
            verdicts += 1
    assert new == 24 and verdicts > 24 and ours.stopped


def test_four_trials_the_first_runs_to_the_top_where_promotion_takes_none_there() -> None:
    """The migration bench's case: 4 trials, η = 3, rungs 1, 3, 9, one worker, scores that fall in arrival order."""
    variants = {"stopping": stopping(num_trials=4), "promotion": ASHAScheduler(min_budget=1, max_budget=9, eta=3, num_trials=4)}
    reached: dict[str, dict[str, int]] = {}
    for name, scheduler in variants.items():
        top: dict[str, int] = {}
        new = 0
        while (job := scheduler.next_job()) is not None:  # type: ignore[attr-defined]
            trial_id = job.trial_id or f"t{new}"
            new += job.trial_id is None
            top[trial_id] = job.rung
            scheduler.on_result(trial_id, job.rung, 1.0 - int(trial_id[1:]) / 10 + job.rung)  # type: ignore[attr-defined]
        reached[name] = top
    assert reached["stopping"] == {"t0": 2, "t1": 0, "t2": 0, "t3": 0}
    assert reached["promotion"] == {"t0": 1, "t1": 0, "t2": 0, "t3": 0}


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_a_failed_result_stops_and_is_not_recorded(bad: float | None) -> None:
    s = stopping()
    s.on_result("a", 0, bad)
    s.on_result("b", 0, 0.1)  # nothing recorded before it: no cutoff
    assert s.stopped == {"a": 0} and s.next_job() == Job("b", 1, 3.0)


def test_a_report_repeated_is_judged_once_and_the_top_rung_is_the_end() -> None:
    s = stopping()
    s.on_result("a", 0, 0.9)
    s.on_result("a", 0, 0.9)
    s.on_result("z", 2, 0.0)
    assert s.next_job() == Job("a", 1, 3.0) and s.next_job() == Job(None, 0, 1.0) and s.stopped == {}


def test_the_plan_assumes_every_trial_to_the_top() -> None:
    s = stopping(lo=1, hi=10, num_trials=7)
    assert s.budgets == [1.0, 3.0, 9.0, 10.0]
    assert [(r.budget, r.num_trials) for r in s.brackets[0].rungs] == [(1, 7), (3, 7), (9, 7), (10, 7)]
    assert s.budget_units() == 7 * 10 == s.brackets[0].budget_units()
    assert s.forecast_scope(None, [], "max").rungs == ((1, 1), (3, 1), (9, 1), (10, 1))  # type: ignore[arg-type]


# --- through the real driver and its replay ----------------------------------------------------------

SPACE = SearchSpace((FloatParam("x", 0.0, 1.0),))


def seconds(config: Any, start: float, stop: float) -> float:
    return (stop - start) * (1.0 + config["x"])


def score(config: Any, budget: float) -> float | None:
    return 1.0 - (config["x"] - 0.3) ** 2 - 0.5 / (1.0 + budget)


def drive(slots: int, ledger: Ledger) -> tuple[SweepDriver, SimulatedExecutor]:
    clock = VirtualClock()
    scheduler = make_scheduler("asha", min_budget=1, max_budget=9, eta=3, integer=True, iterations=1, num_trials=20,
                               mode="max", asha_type="stopping")
    controller = BudgetController(BudgetSettings(), mode="max", clock=clock, started_at=0.0, full_budget=9)
    driver = SweepDriver(make_searcher("random", SPACE, seed=0, mode="max", max_budget=9), scheduler, ledger,
                         controller, "max", 1, 9, seed=0, clock=clock)
    if ledger.pending:
        driver.load_replay()
    executor = SimulatedExecutor(slots, clock, seconds, score, ledger)
    driver.run(executor)
    return driver, executor


@pytest.mark.parametrize("slots", [1, 3])
def test_a_sweep_resumed_from_its_ledger_makes_the_same_stops(tmp_path: Path, slots: int) -> None:
    """With several slots results come back out of dispatch order; the replay hands them back in the ledger's."""
    whole, _ = drive(slots, Ledger(tmp_path / "whole.jsonl"))
    records = whole.ledger.records
    assert whole.stop_reason == "schedule_complete" and len(whole.trials) == 20
    stopped = whole.scheduler.stopped  # type: ignore[attr-defined]
    assert stopped and any(r.budget == 9 for r in records)
    assert sum(r.budget_trained for r in records) < whole.scheduler.budget_units()
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "killed.jsonl").write_text("".join(lines[: len(lines) // 2]))
    resumed, executor = drive(slots, Ledger(tmp_path / "killed.jsonl", replay=True))
    assert resumed.scheduler.stopped == stopped  # type: ignore[attr-defined]
    outcomes = [(r.trial_id, r.rung, r.score) for r in resumed.ledger.records]
    expected = [(r.trial_id, r.rung, r.score) for r in records]
    # One slot: the same order too. Several: what ran after the kill may finish in another order on the new clock.
    assert outcomes == expected if slots == 1 else sorted(outcomes) == sorted(expected)
    assert 0 < len(executor.busy) < len(records)


# --- the config ------------------------------------------------------------------------------------


def test_the_config_chooses_the_variant_and_promotion_stays_the_default() -> None:
    def build(**scheduler: Any) -> Any:
        config = validate({"name": "a", "trainable": {"kind": "noop"},
                           "scheduler": {"kind": "asha", "min_budget": 1, "max_budget": 9, **scheduler}})
        return make_scheduler("asha", min_budget=1, max_budget=9, eta=3, integer=True, iterations=1, num_trials=9,
                              mode="max", **config.scheduler_options())

    assert type(build()) is ASHAScheduler and build().asha_type == "promotion"
    assert type(build(asha_type="promotion")) is ASHAScheduler
    assert type(build(asha_type="stopping")) is StoppingASHAScheduler


def test_rungflow_plan_shows_every_trial_to_the_top() -> None:
    from rungflow.flows.cli_plan import plan_rows

    rows, units, _ = plan_rows(validate({"name": "a", "trainable": {"kind": "noop"}, "search": {"num_trials": 8},
                                         "scheduler": {"kind": "asha", "asha_type": "stopping", "max_budget": 10}}))
    assert [(r["budget"], r["trials"], r["new_trials"]) for r in rows] == [(1, 8, 8), (3, 8, 0), (9, 8, 0), (10, 8, 0)]
    assert units == 8 * 10


@pytest.mark.parametrize("scheduler, fix", [
    ({"kind": "asha", "asha_type": "stop"}, "must be promotion (the default) or stopping"),
    ({"kind": "hyperband", "asha_type": "stopping"}, "only scheduler.kind: asha reads it, not hyperband"),
    ({"kind": "median", "asha_type": "promotion"}, "only scheduler.kind: asha reads it, not median"),
])
def test_bad_input_is_one_line_naming_the_field_and_the_fix(scheduler: dict[str, Any], fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"name": "a", "trainable": {"kind": "noop"}, "scheduler": scheduler})
    message = str(info.value)
    assert "\n" not in message and "scheduler.asha_type" in message and fix in message, message


# --- end to end: Ray Tune's own ASHA example, unchanged, on real Prefect (threads) -----------------------


def test_ray_tunes_xgboost_example_sweeps_under_the_stopping_variant(prefect_server: str, tmp_path: Path) -> None:
    from bench.migrate import EXAMPLES, run_rungflow

    example = next(e for e in EXAMPLES if e.name == "xgboost")
    run = run_rungflow(example, seed=0, trials=4, out=tmp_path / "run", budget=9,
                       runtime={"kind": "thread", "max_concurrent": 2})
    result = run["result"]
    events = [e for e in result.events if e["status"] == "completed"]
    assert result.stop_reason == "schedule_complete" and run["trials"] == 4
    assert sorted({e["budget"] for e in events}) == [1.0, 3.0, 9.0]  # Ray Tune's milestones for grace 1, max_t 9
    # Ray Tune's scheduler, fed the same results in the order the ledger billed them, stops the same trials.
    ray, top = ray_asha(1, 9, 3, mode="min"), 2
    reached = {}
    for e in events:
        reached[e["trial_id"]] = max(reached.get(e["trial_id"], 0), e["rung"])
        if e["rung"] < top and ray_stops(ray, e["trial_id"], e["budget"], e["score"]):
            assert not any(o["trial_id"] == e["trial_id"] and o["rung"] > e["rung"] for o in events), e
        elif e["rung"] < top:
            assert any(o["trial_id"] == e["trial_id"] and o["rung"] == e["rung"] + 1 for o in events), e
    assert top in reached.values()  # the first trial at each rung always runs on, so one reaches max_t
