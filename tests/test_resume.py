"""Fault injection with real processes: kill -9 the CLI sweep at several points, resume, compare.

The sweep runs as ``python -m rungflow.flows.cli`` against the real Prefect server; it dies by SIGKILL from
``RUNGFLOW_FAULT_AT`` (rungflow/faults.py, at an exact point of the driver) or from this test
(mid-train, at a moment the test picks). The noop trainable sleeps so kills land mid-train and
reports a fixed cost per budget unit, so the spend of finished work is comparable across runs to
the last digit: only interrupted work may differ, and it is billed once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SYNC = """\
name: resume-sync
trainable: {kind: noop, options: {sleep_seconds: 0.3, gpu_seconds_per_unit: 10}}
search: {algorithm: tpe, seed: 5}
scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}
budget: {max_gpu_hours: 100, price_per_gpu_hour: 2}
runtime: {kind: thread, max_concurrent: 1, gpus_per_trial: 1}
"""
# One slot: brackets then run one after another whatever order results come back in, so an uninterrupted run is a
# baseline to the last digit. On more slots brackets run side by side and the schedule follows the order results
# come back in, which two real runs need not share; replay after a crash is checked on a simulated cluster, where
# that order is fixed (tests/test_bracket_loop.py).

ASHA = """\
name: resume-asha
trainable: {kind: noop, options: {sleep_seconds: 0.02, gpu_seconds_per_unit: 10}}
search: {algorithm: random, seed: 2, num_trials: 9}
scheduler: {kind: asha, min_budget: 1, max_budget: 9, eta: 3}
budget: {max_gpu_hours: 100}
runtime: {kind: thread, max_concurrent: 1, gpus_per_trial: 1}
"""


def _popen(args: list[str], api: str, fault: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO), "RUNGFLOW_HEARTBEAT_SECONDS": "0.05"}
    env.pop("RUNGFLOW_FAULT_AT", None)
    if fault:
        env["RUNGFLOW_FAULT_AT"] = fault
    return subprocess.Popen([sys.executable, "-m", "rungflow.flows.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[str], expect: int) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == expect, f"exit {proc.returncode}, wanted {expect}\n{out[-3000:]}\n{err[-3000:]}"
    return out + err


def _baseline(config: Path, run_dir: Path) -> None:
    """The uninterrupted run, in this process (the same flow; it saves a process start)."""
    from rungflow.config import load_config
    from rungflow.flows.sweep import run_sweep

    run_sweep(load_config(config), run_dir)


def _entries(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    path = run_dir / "ledger.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("type") == kind:
            out.append(entry.get("record") or entry.get("start"))
    return out


def _kill_mid_train(proc: subprocess.Popen[str], run_dir: Path, markers: int, delay: float) -> float:
    """SIGKILL the sweep ``delay`` s after a trial of its ``markers``-th dispatch began training. Returns the kill time."""
    deadline = time.time() + 240

    def started() -> bool:
        starts = _entries(run_dir, "started")
        return len(starts) >= markers and any(
            (run_dir / "attempts" / f"{m['trial_id']}-r{m['rung']}-a{m['attempt']}.started").exists()
            for m in starts[markers - 1:])

    while not started():
        assert proc.poll() is None, "the sweep ended before the kill point"
        assert time.time() < deadline, "the sweep never reached the kill point"
        time.sleep(0.01)
    time.sleep(delay)
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return killed_at


def _completed(run_dir: Path) -> dict[tuple[str, int], float]:
    """(trial, rung) -> score of every completed record."""
    return {(r["trial_id"], r["rung"]): r["score"] for r in _entries(run_dir, "spend") if r["status"] == "completed"}


def _check_against(base: Path, run: Path, kills: list[float]) -> dict[str, float]:
    spend = _entries(run, "spend")
    keys = Counter((r["trial_id"], r["rung"], r["attempt"]) for r in spend)
    assert max(keys.values()) == 1, f"billed twice: {[k for k, n in keys.items() if n > 1]}"
    result = json.loads((run / "result.json").read_text())
    base_result = json.loads((base / "result.json").read_text())
    assert result["status"] == "finished" and result["stop_reason"] == "schedule_complete"
    # Nothing lost, nothing different: the same trials, configs and completed (trial, rung) scores.
    assert result["trials"] == base_result["trials"]
    assert _completed(run) == _completed(base)
    assert len(result["events"]) == len(spend)  # every record on disk is in the final result
    interrupted = [r for r in spend if r["status"] == "interrupted"]
    for r in interrupted:
        # Billed from the trial's own start to no later than the kill that ended it.
        assert r["gpu_seconds"] <= (min(k for k in kills if k >= r["started_at"]) - r["started_at"]) * r["gpus"] + 0.05
    interrupted_hours = sum(r["gpu_seconds"] for r in interrupted) / 3600
    base_hours = sum(r["gpu_seconds"] for r in _entries(base, "spend")) / 3600
    total = sum(r["gpu_seconds"] for r in spend) / 3600
    assert total == pytest.approx(base_hours + interrupted_hours, rel=1e-9, abs=1e-12)
    assert result["ledger"]["gpu_hours"] == pytest.approx(total, rel=1e-9)
    return {"interrupted": len(interrupted), "interrupted_gpu_hours": interrupted_hours, "base": base_hours}


def test_kill_9_at_search_gate_and_mid_train_then_resume_matches_an_uninterrupted_run(
    prefect_server: str, tmp_path: Path
) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(SYNC)
    base, run = tmp_path / "base", tmp_path / "run"
    _baseline(config, base)

    # 1. Killed right after bracket 1's search: its trials exist only in the dead process.
    _finish(_popen(["sweep", str(config), "--out", str(run)], prefect_server, fault="search:2"), -signal.SIGKILL)
    assert len(_entries(run, "spend")) == 13
    # 2. Resumed, then killed between a gate and its promotion (bracket 0's three gates replay first).
    _finish(_popen(["resume", str(run)], prefect_server, fault="gate:4"), -signal.SIGKILL)
    assert len(_entries(run, "spend")) == 18
    # 3. Resumed, then killed mid-train in the last bracket (3 trials on 1 slot), 0.1 s into a 0.3 s trial.
    proc = _popen(["resume", str(run)], prefect_server)
    killed_at = _kill_mid_train(proc, run, markers=20, delay=0.1)
    assert not (run / "result.json").exists() or json.loads((run / "result.json").read_text())["status"] != "finished"
    # 4. Resumed to the end.
    out = _finish(_popen(["resume", str(run)], prefect_server), 0)
    assert "schedule_complete" in out

    figures = _check_against(base, run, [killed_at])
    spend = _entries(run, "spend")
    interrupted = [r for r in spend if r["status"] == "interrupted"]
    # Running trials are billed their partial work; a trial still queued (no start stamp) is billed nothing.
    assert figures["interrupted"] >= 1 and any(r["gpu_seconds"] > 0 for r in interrupted)
    for r in interrupted:
        stamped = (run / "attempts" / f"{r['trial_id']}-r{r['rung']}-a{r['attempt']}.started").exists()
        assert (r["gpu_seconds"] > 0) == stamped
    for r in interrupted:  # each ran again as the next attempt, and completed
        assert any(s["trial_id"] == r["trial_id"] and s["rung"] == r["rung"] and s["attempt"] == r["attempt"] + 1
                   and s["status"] == "completed" for s in spend)
    # Decisions made before a crash are not written again when the replayed driver makes them again.
    base_decisions = [json.loads(x)["decision"]["stage"] for x in (base / "ledger.jsonl").read_text().splitlines()
                      if '"decision"' in x and json.loads(x)["type"] == "decision"]
    run_decisions = [json.loads(x)["decision"]["stage"] for x in (run / "ledger.jsonl").read_text().splitlines()
                     if json.loads(x)["type"] == "decision"]
    assert run_decisions == base_decisions


def test_asha_with_one_slot_resumes_to_the_same_results(prefect_server: str, tmp_path: Path) -> None:
    config = tmp_path / "asha.yaml"
    config.write_text(ASHA)
    base, run = tmp_path / "base", tmp_path / "run"
    _baseline(config, base)
    _finish(_popen(["sweep", str(config), "--out", str(run)], prefect_server, fault="asha-result:6"), -signal.SIGKILL)
    # `sweep` on the same run directory resumes too (as a retried flow run does).
    _finish(_popen(["sweep", str(config), "--out", str(run)], prefect_server), 0)
    _check_against(base, run, [])


def test_resume_refuses_search_changes_and_a_different_sweep_in_the_run_dir(prefect_server: str, tmp_path: Path) -> None:
    from rungflow.flows.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "x", "trainable": {"kind": "noop"}}))
    (run / "ledger.jsonl").write_text("")
    assert main(["resume", str(run), "--set", "search.seed=3"]) == 2
    config = tmp_path / "other.yaml"
    config.write_text("name: x\ntrainable: {kind: noop}\nsearch: {seed: 9}\n")
    assert main(["sweep", str(config), "--out", str(run)]) == 2
    # A second process on a run directory that a live sweep holds is refused, in one line.
    from rungflow.flows.sweep import lock_run_dir

    (run / "config.json").write_text(json.dumps({"name": "x", "trainable": {"kind": "noop"},
                                                 "runtime": {"kind": "thread"}}))
    held = lock_run_dir(run)
    try:
        assert main(["resume", str(run)]) == 2
    finally:
        held.close()


def test_a_retried_flow_run_with_the_same_run_dir_replays_instead_of_training(prefect_server: str, tmp_path: Path) -> None:
    from rungflow.config import validate
    from rungflow.flows.sweep import run_sweep
    from tests.conftest import sweep_config

    cfg = validate(sweep_config(tmp_path, name="retried", search={"algorithm": "tpe", "seed": 1},
                                runtime={"kind": "thread", "max_concurrent": 2, "gpus_per_trial": 1}))
    first = run_sweep(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()
    again = run_sweep(cfg, tmp_path / "run")
    new = (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()[len(lines):]
    assert [json.loads(x)["type"] for x in new] == ["session"], "a replay trains, bills and decides nothing new"
    assert again["trials"] == first["trials"] and again["events"] == first["events"]
    assert again["ledger"] == first["ledger"] and again["stop_reason"] == "schedule_complete"


def test_a_deadline_counts_the_time_the_sweep_ran_not_the_time_it_lay_dead(tmp_path: Path) -> None:
    from rungflow.config import ConfigError, validate
    from rungflow.flows.sweep import Sweep
    from tests.conftest import sweep_config

    cfg = validate(sweep_config(tmp_path, budget={"deadline": "1h"}))
    first = Sweep.create(cfg, tmp_path / "run")
    began = first.ledger.sessions[-1]["started_at"]
    with pytest.raises(ConfigError, match="in use by a running sweep"):
        Sweep.create(cfg, tmp_path / "run")  # one process per run directory
    first.close()
    # The first process was last seen 100 s after it started, then lay dead for an hour before the resume.
    for name in ("heartbeat", "ledger.jsonl"):
        (tmp_path / "run" / name).touch()
        os.utime(tmp_path / "run" / name, (began + 100, began + 100))
    second = Sweep.create(cfg, tmp_path / "run")
    assert second.resumed and second.started_at == began
    assert second.ledger.sessions[-1]["elapsed_before"] == pytest.approx(100, abs=0.01)
    assert time.time() - second.controller.started_at == pytest.approx(100, abs=5)
    assert second.controller.hard_cap_reached(second.ledger) is None
