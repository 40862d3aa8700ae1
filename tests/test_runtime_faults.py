"""Trial faults on real runtimes: hung, leaking, raising trials, and a Ray worker killed mid-trial.

Each fault must end as a billed record with its reason while the sweep goes on; a lost worker is
retried (from the trial's last checkpoint) by the runtime, the only owner of retries.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from rungflow.config import validate
from rungflow.flows.sweep import run_sweep
from tests.conftest import sweep_config

pytestmark = pytest.mark.slow

# search.seed 0 draws x = 0.64, 0.04, 0.81, 0.61, 0.54, 0.82, 0.86, 0.73 for the first eight trials:
# two fail (0.55 < x <= 0.7), three leak memory (0.7 < x <= 0.85), one hangs (x > 0.85), two are healthy.
FAULTY_NOOP = {"kind": "noop", "options": {"fail_when_x_above": 0.55, "allocate_mb_when_x_above": 0.7,
                                           "hang_when_x_above": 0.85}}


def _by_trial(result: dict) -> dict[str, dict]:
    return {e["trial_id"]: e for e in result["events"]}


def test_thread_runtime_stops_a_hung_trial_at_its_timeout(prefect_server: str, tmp_path: Path) -> None:
    cfg = validate(sweep_config(
        tmp_path, name="thread-timeout",
        trainable={"kind": "noop", "options": {"hang_when_x_above": 0.85}},
        scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
        search={"algorithm": "random", "seed": 0, "num_trials": 8},
        runtime={"kind": "thread", "max_concurrent": 2, "trial_timeout": 5, "gpus_per_trial": 1},
    ))
    t0 = time.time()
    result = run_sweep(cfg, tmp_path / "run")
    assert time.time() - t0 < 60
    events = _by_trial(result)
    assert len(events) == 8 and result["stop_reason"] == "schedule_complete"
    hung = events["t0006"]
    assert hung["status"] == "timeout" and "runtime.trial_timeout=5" in hung["error"]
    assert hung["gpu_hours"] * 3600 >= 4.9  # billed for the time it held its GPU
    assert sum(e["status"] == "completed" for e in events.values()) == 7


def test_ray_runtime_records_each_fault_with_its_reason(prefect_server: str, tmp_path: Path, ray_shutdown: None) -> None:
    cfg = validate(sweep_config(
        tmp_path, name="ray-faults", trainable=FAULTY_NOOP,
        scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
        search={"algorithm": "random", "seed": 0, "num_trials": 8},
        runtime={"kind": "ray", "max_concurrent": 2, "trial_timeout": 15, "memory_per_trial_gb": 0.5,
                 "gpus_per_trial": 0.5},
    ))
    result = run_sweep(cfg, tmp_path / "run")
    assert result["stop_reason"] == "schedule_complete"
    events = _by_trial(result)
    assert len(events) == 8
    assert {t for t, e in events.items() if e["status"] == "completed"} == {"t0001", "t0004"}
    for trial in ("t0000", "t0003"):
        assert events[trial]["status"] == "failed" and "noop configured to fail" in events[trial]["error"]
    for trial in ("t0002", "t0005", "t0007"):
        assert events[trial]["status"] == "failed", events[trial]
        assert "memory_per_trial_gb=0.5" in events[trial]["error"]
    assert events["t0006"]["status"] == "timeout" and events["t0006"]["gpu_hours"] * 3600 >= 0.5 * 14.9
    assert result["best"]["trial_id"] in {"t0001", "t0004"}

    # The failures' log lines, emitted in Ray workers, are in the Prefect flow run's logs.
    flow_run = httpx.post(f"{prefect_server}/flow_runs/filter",
                          json={"flow_runs": {"name": {"any_": ["ray-faults"]}}}).json()[-1]
    deadline = time.time() + 30
    while True:
        logs = httpx.post(f"{prefect_server}/logs/filter",
                          json={"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 200}).json()
        text = "\n".join(entry["message"] for entry in logs)
        if "noop configured to fail" in text or time.time() > deadline:
            break
        time.sleep(1)
    assert "rungflow.train: trial t0000 rung 0 failed" in text
    # Failed trials are red in the UI: their task runs end Failed, with the error as the state's message.
    runs = httpx.post(f"{prefect_server}/task_runs/filter",
                      json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}, "limit": 200}).json()
    states = {r["name"]: r["state_type"] for r in runs}
    assert states.get("train-t0001-r0") == "COMPLETED"
    assert states.get("train-t0000-r0") == "FAILED"


def _worker_pids(ledger: Path) -> set[int]:
    """The actor processes that ran the trials billed so far (``worker`` is host:pid:node)."""
    pids = set()
    for line in ledger.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "spend" and entry["record"].get("worker"):
            pids.add(int(entry["record"]["worker"].split(":")[1]))
    return pids


def test_killed_ray_worker_is_retried_from_its_checkpoint_and_billed_once(
    prefect_server: str, tmp_path: Path, ray_shutdown: None
) -> None:
    cfg = validate(sweep_config(
        tmp_path, name="ray-kill",
        trainable={"kind": "noop", "options": {"sleep_seconds": 2.0}},
        scheduler={"kind": "sha", "min_budget": 1, "max_budget": 3, "eta": 3},
        search={"algorithm": "random", "seed": 0, "num_trials": 3},
        runtime={"kind": "ray", "max_concurrent": 2, "max_retries": 2},
    ))
    killed: list[int] = []

    def kill_during_the_promoted_rung() -> None:
        # Rung 0 (3 trials, 2 at a time) takes ~4 s after the actors start; rung 1 runs one trial alone.
        run_dir = tmp_path / "run"
        deadline = time.time() + 120
        while time.time() < deadline:
            ledger = run_dir / "ledger.jsonl"
            if ledger.exists() and ledger.read_text().count('"type": "spend"') >= 3:
                time.sleep(1.0)  # mid-way through the promoted trial's 2 s
                pids = _worker_pids(ledger)
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append(pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_during_the_promoted_rung, daemon=True)
    killer.start()
    result = run_sweep(cfg, tmp_path / "run")
    killer.join(timeout=5)
    assert killed, "the test never found a trial worker to kill"
    promoted = [e for e in result["events"] if e["rung"] == 1]
    lost = [e for e in promoted if e["status"] == "lost"]
    done = [e for e in promoted if e["status"] == "completed"]
    # Both actors were killed: the attempt on the running one is lost, and so is a retry that lands on the
    # other, idle-but-dead actor; each lost attempt is billed once, and a fresh actor finishes the trial.
    assert 1 <= len(lost) <= 2 and len(done) == 1, promoted
    assert [e["attempt"] for e in lost] == list(range(len(lost))) and done[0]["attempt"] == len(lost)
    assert all("worker lost" in e["error"] for e in lost)
    # The retry resumed from the rung-0 checkpoint: it trained 3 - 1 = 2 units, not 3.
    assert done[0]["budget_trained"] == 2
    keys = [(e["trial_id"], e["rung"], e["attempt"]) for e in result["events"]]
    assert len(keys) == len(set(keys)) == 3 + len(lost) + 1
    assert result["stop_reason"] == "schedule_complete"
