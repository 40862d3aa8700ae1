"""``rungflow plan --simulate``: the real driver on a simulated cluster, its figures and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rungflow.budgets.holding import HoldSpan
from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.budgets.rungs import hyperband_plan
from rungflow.budgets.simulate import dispatch_overhead, setup_overhead, stage_overhead, worker_startup
from rungflow.flows.cli import main
from rungflow.flows.plan_sim import DEFAULT_STAGE_SECONDS
from tests.conftest import sweep_config


def _config(tmp_path: Path, **overrides) -> Path:
    cfg = sweep_config(tmp_path, name="plan-sim", runtime={"kind": "thread", "max_concurrent": 2, "gpus_per_trial": 1},
                       budget={"price_per_gpu_hour": 2.0}, **overrides)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_one_worker_runs_the_plan_back_to_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    out = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0")
    units = sum(b.budget_units() for b in hyperband_plan(1, 9, 3))
    assert out["wall_seconds"] == pytest.approx(units * 10)
    assert out["gpu_hours"] == pytest.approx(units * 10 / 3600)
    assert out["cost"] == pytest.approx(out["gpu_hours"] * 2.0)
    assert out["utilisation"] == pytest.approx(1.0) and out["barrier_idle_fraction"] == pytest.approx(0.0)
    assert out["trials"] == sum(b.num_trials for b in hyperband_plan(1, 9, 3))
    assert out["stop_reason"] == "schedule_complete" and out["best_score"] is not None
    assert len(out["events"]) == sum(len(b.rungs) and sum(r.num_trials for r in b.rungs) for b in hyperband_plan(1, 9, 3))


def test_each_synchronous_stage_costs_its_driver_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    plan = hyperband_plan(1, 9, 3)
    units, stages = sum(b.budget_units() for b in plan), sum(len(b.rungs) for b in plan)
    out = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "2")
    # One charge before each stage's first job: no trial runs meanwhile, and none is left after the last result.
    assert out["wall_seconds"] == pytest.approx(units * 10 + stages * 2)
    assert out["wall_seconds"] == pytest.approx(max(e["finished_at"] for e in out["events"]))
    assert out["gpu_hours"] == pytest.approx(units * 10 / 3600)  # the driver's time is nobody's GPU time
    assert out["utilisation"] == pytest.approx(units * 10 / (units * 10 + stages * 2))
    assert out["stage_seconds"] == 2
    default = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json")
    assert default["stage_seconds"] == DEFAULT_STAGE_SECONDS
    assert default["wall_seconds"] == pytest.approx(units * 10 + stages * DEFAULT_STAGE_SECONDS)
    # ASHA has no barriers to pay at.
    asha = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "2",
                 "--set", "scheduler.kind=asha")
    assert asha["stage_seconds"] == 0.0 and asha["utilisation"] == pytest.approx(1.0)


def _record(trial: str, bracket: int, rung: int, start: float, finish: float, worker: str = "") -> SpendRecord:
    return SpendRecord(trial_id=trial, bracket=bracket, rung=rung, budget=1.0 + rung, score=0.5,
                       status=TrialStatus.COMPLETED, gpu_seconds=finish - start, gpus=1.0, cost=0.0, started_at=start,
                       finished_at=finish, wall_seconds=finish - start, budget_trained=1.0, worker=worker)


def test_stage_overhead_is_the_wall_clock_no_stage_spans() -> None:
    # 1 s of set-up to the first trial, stage (0, 0) to 4, 0.4 s between stages, stage (0, 1) logged from 4.4 to 6.
    records = [_record("t0", 0, 0, 1.0, 3.0), _record("t1", 0, 0, 1.5, 4.0), _record("t0", 0, 1, 4.5, 6.0)]
    schedule = [{"bracket": 0, "rungs": [{"rung": 0, "started_at": 0.9, "finished_at": 4.0},
                                         {"rung": 1, "started_at": 4.4, "finished_at": 6.0}]}]
    assert setup_overhead(records, schedule, elapsed_seconds=6.0) == pytest.approx(1.0)
    assert stage_overhead(records, schedule, elapsed_seconds=6.0) == pytest.approx(6.0 - 1.0 - 3.0 - 1.6)
    # Side by side, bracket 1's stage covers bracket 0's barrier (4.0 to 4.4): each bracket's log still shows it.
    beside = [*records, _record("t5", 1, 0, 3.5, 5.0), _record("t5", 1, 1, 5.2, 6.0)]
    both = [*schedule, {"bracket": 1, "rungs": [{"rung": 0, "started_at": 3.4, "finished_at": 5.0},
                                                {"rung": 1, "started_at": 5.2, "finished_at": 6.0}]}]
    assert stage_overhead(beside, both, elapsed_seconds=6.0) == pytest.approx((0.4 + 0.2) / 2)
    # ASHA's schedule has no synchronous stage: nothing to measure.
    assert stage_overhead(records, [{"bracket": 0, "asynchronous": True, "rungs": [{"rung": 0}]}], 6.0) is None


def test_dispatch_overhead_is_the_dispatcher_time_that_leaves_the_stages_as_idle_as_they_were(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Four 1 s trials on 2 slots in a stage logged from 0 to 3: packed back to back they would leave no slot
    # idle; 2 slot-seconds were, as a dispatcher handing out one trial every 0.5 s leaves them
    # (starts at 0.5, 1.0, 1.5, 2.0).
    # The first stage (t9, the runtime warming up) is the set-up's, not the dispatcher's.
    records = [_record("t9", 0, 0, 0.0, 5.0), _record("t0", 1, 0, 10.5, 11.5), _record("t1", 1, 0, 10.5, 11.5),
               _record("t2", 1, 0, 12.0, 13.0), _record("t3", 1, 0, 12.0, 13.0)]
    schedule = [{"bracket": 0, "rungs": [{"rung": 0, "started_at": -3.0, "finished_at": 5.0}]},
                {"bracket": 1, "rungs": [{"rung": 0, "started_at": 10.0, "finished_at": 13.0}]}]
    assert dispatch_overhead(records, schedule, 16.0, slots=2) == pytest.approx(0.5)
    # Packed back to back with no gap: nothing to charge. Uneven trials idle at the barrier, which is not dispatch.
    tight = [_record("t0", 0, 0, 0.0, 1.0), _record("t1", 0, 0, 0.0, 2.0), _record("t2", 0, 0, 1.0, 2.0)]
    assert dispatch_overhead(tight, [{"bracket": 0, "rungs": [{"rung": 0, "started_at": 0.0, "finished_at": 2.0}]}],
                             2.0, slots=2) == pytest.approx(0.0)
    uneven = [_record("t0", 0, 0, 0.0, 3.0), _record("t1", 0, 0, 0.0, 1.0)]
    assert dispatch_overhead(uneven, [{"bracket": 0, "rungs": [{"rung": 0, "started_at": 0.0, "finished_at": 3.0}]}],
                             3.0, slots=2) == pytest.approx(0.0)
    # The simulator's dispatcher hands out one trial every d: four 10 s trials on 2 slots, the last starts at
    # 10 + 2d (its slot's first trial started at 2d), so the stage ends 2d later than without it.
    path = _config(tmp_path)
    plain = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0",
                  "--set", "scheduler.kind=sha", "--set", "scheduler.max_budget=1", "--set", "search.num_trials=4",
                  "--workers", "2")
    slow = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0",
                 "--set", "scheduler.kind=sha", "--set", "scheduler.max_budget=1", "--set", "search.num_trials=4",
                 "--workers", "2", "--dispatch-seconds", "0.5")
    assert slow["dispatch_seconds"] == 0.5 and slow["gpu_hours"] == pytest.approx(plain["gpu_hours"])
    assert slow["wall_seconds"] == pytest.approx(plain["wall_seconds"] + 2 * 0.5)
    assert slow["barrier_idle_fraction"] > plain["barrier_idle_fraction"]


def test_costs_from_a_run_brings_its_stage_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rungflow.budgets.ledger import Ledger

    run = tmp_path / "past"
    run.mkdir()
    ledger = Ledger(run / "ledger.jsonl")
    for record in (_record("t0", 0, 0, 1.0, 3.0), _record("t1", 0, 0, 1.5, 4.0), _record("t0", 0, 1, 4.5, 6.0)):
        ledger.charge(record)
    (run / "result.json").write_text(json.dumps({
        "elapsed_seconds": 6.0, "trials": {"t0": {"x": 0.1}, "t1": {"x": 0.2}},
        "schedule": [{"bracket": 0, "rungs": [{"rung": 0, "started_at": 0.9}, {"rung": 1, "started_at": 4.4}]}]}))
    path = _config(tmp_path)
    out = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--costs-from", str(run))
    assert out["stage_seconds"] == pytest.approx(0.4) and out["setup_seconds"] == pytest.approx(1.0)
    # Given on the command line, it wins over the run's.
    out = _json(capsys, "plan", str(path), "--simulate", "--json", "--costs-from", str(run), "--stage-seconds", "0")
    assert out["stage_seconds"] == 0.0


def test_fractional_gpus_pack_and_barriers_idle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    whole = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--workers", "4")
    quarter = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--workers", "4",
                    "--set", "runtime.gpus_per_trial=0.25")
    assert whole["slots"] == 4 and quarter["slots"] == 16
    assert quarter["wall_seconds"] < whole["wall_seconds"]
    assert whole["barrier_idle_fraction"] > 0 and whole["utilisation"] < 1
    asha = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--workers", "4",
                 "--set", "scheduler.kind=asha")
    assert asha["barrier_idle_fraction"] == 0.0


def test_side_by_side_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(_config(tmp_path)), "--simulate", "--seconds-per-unit", "1", "--workers", "8"]) == 0
    out = capsys.readouterr().out
    assert "hyperband:" in out and "asha:" in out and "utilisation" in out and "idle at barriers" in out


def test_the_plan_shows_speedup_critical_path_and_warns_when_it_cannot_fill_the_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    one = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0")
    assert one["speedup_over_one_gpu"] == 1.0 and one["warning"] is None
    assert 0 < one["critical_path_seconds"] <= one["wall_seconds"]
    # A one-iteration Hyperband of 1..9 epochs on 64 GPUs: its longest bracket is the wall-clock, most slots idle.
    wide = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0",
                 "--workers", "64")
    assert wide["one_gpu_wall_seconds"] == pytest.approx(one["wall_seconds"])
    assert wide["speedup_over_one_gpu"] == pytest.approx(one["wall_seconds"] / wide["wall_seconds"])
    assert wide["critical_path_seconds"] == pytest.approx(wide["wall_seconds"])
    warning = wide["warning"]
    assert warning.startswith("warning: hyperband cannot fill 64 GPUs") and "\n" not in warning
    for name in ("scheduler.iterations", "scheduler.max_budget", "scheduler.eta", "runtime.gpus_per_trial"):
        assert name in warning
    # More iterations give the slots work: the same cluster, filled.
    filled = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0",
                   "--workers", "2", "--set", "scheduler.iterations=4")
    assert filled["warning"] is None and filled["utilisation"] >= 0.8
    assert main(["plan", str(path), "--simulate", "--seconds-per-unit", "10", "--workers", "64"]) == 0
    text = capsys.readouterr().out
    assert "the speed of 1 GPU" in text and "critical path" in text and "cannot fill 64 GPUs" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0", "--seconds-per-unit", "1"], "--workers: 0 must be at least 1"),
    ([], "has no cost model: give durations with --costs-from RUN_DIR"),
    (["--costs-from", "EMPTY"], "no ledger.jsonl there"),
    (["--costs-from", "OTHER"], "that ledger is of trainable 'sklearn'"),
    (["--seconds-per-unit", "1", "--stage-seconds", "-1"], "--stage-seconds: -1 must be zero or more"),
    (["--seconds-per-unit", "1", "--dispatch-seconds", "-1"], "--dispatch-seconds: -1 must be zero or more"),
    (["--seconds-per-unit", "1", "--setup-seconds", "-1"], "--setup-seconds: -1 must be zero or more"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "ledger.jsonl").write_text("", encoding="utf-8")
    (other / "config.json").write_text(json.dumps({"trainable": {"kind": "sklearn"}}), encoding="utf-8")
    argv = [str(tmp_path / "empty") if a == "EMPTY" else str(other) if a == "OTHER" else a for a in argv]
    assert main(["plan", str(_config(tmp_path)), "--simulate", *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err.replace("\n", " ") and len(err.splitlines()) <= 3


def test_a_ray_worker_given_back_idle_is_started_again_before_its_next_trial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One worker, SHA 1..9: three stages, and at each of the two barriers the driver's 5 s idle the worker. Given
    # back after 1 s, it is started again (3 s) before the next stage's trial; kept, it runs that trial at once.
    path = _config(tmp_path)
    argv = ["plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "5",
            "--setup-seconds", "3", "--set", "scheduler.kind=sha", "--set", "scheduler.max_budget=9",
            "--set", "search.num_trials=3", "--set", "runtime.kind=ray", "--set", "runtime.max_concurrent=null",
            "--workers", "1"]
    kept = _json(capsys, *argv, "--set", "runtime.release_idle_after=never")
    given_back = _json(capsys, *argv, "--set", "runtime.release_idle_after=1")
    assert given_back["wall_seconds"] == pytest.approx(kept["wall_seconds"] + 2 * 3.0)
    assert given_back["gpu_hours"] == pytest.approx(kept["gpu_hours"])
    # Held: idle 1 s then a 3 s start-up at each barrier, against the 5 s kept idle.
    assert given_back["worker_hours_held"] * 3600 == pytest.approx(kept["worker_hours_held"] * 3600 + 2 * (1 + 3 - 5))


def test_a_workers_start_up_is_read_from_its_hold_to_its_first_trial() -> None:
    # Two workers held from 0.0 and 1.0; their processes' first trials start at 0.2 and 1.6. A third, acquired at
    # 9.0 and given back with no trial, has nothing to pair with.
    records = [_record("t0", 0, 0, 0.2, 3.0, worker="p1"), _record("t1", 0, 0, 1.6, 4.0, worker="p2"),
               _record("t2", 0, 0, 3.0, 5.0, worker="p1")]
    holds = [HoldSpan("actor-0", 0.0, 1.0, 0.0, 6.0), HoldSpan("actor-1", 0.0, 1.0, 1.0, 6.0),
             HoldSpan("actor-2", 0.0, 1.0, 9.0, 9.5)]
    assert worker_startup(records, holds) == pytest.approx(0.6)  # the median of 0.2 and 0.6: the upper one
    assert worker_startup(records, []) is None


def test_the_simulated_plan_names_the_asha_variant_it_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, scheduler={"kind": "asha", "min_budget": 1, "max_budget": 9, "eta": 3})
    args = ["--simulate", "--seconds-per-unit", "10", "--json", "--stage-seconds", "0"]
    assert _json(capsys, "plan", str(path), *args)["scheduler"] == "asha"
    stopping = _json(capsys, "plan", str(path), *args, "--set", "scheduler.asha_type=stopping")
    assert stopping["scheduler"] == "asha stopping" and stopping["trials"] > 0
