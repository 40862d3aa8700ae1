"""A Prefect server killed with SIGKILL mid-sweep and started again on the same database: the sweep trains on.

The server is a real ``prefect server start`` process on SQLite; the sweep runs through the CLI in a
process of its own (Prefect's event worker is per process). The outage is 12 s here for CI time;
RUNGFLOW_OUTAGE_SECONDS=60 runs the 60 s case the fault figures in docs/resume-and-faults.md report.
An outage longer than ``ui.api_outage_seconds`` stops the sweep: tests/test_prefect_api_loss.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import optuna
import pytest

from tests.conftest import REPO, Postgres
from tests.servers import RestartablePrefect

pytestmark = pytest.mark.slow

OUTAGE = float(os.environ.get("RUNGFLOW_OUTAGE_SECONDS", "12"))


@pytest.fixture
def prefect_restartable(tmp_path: Path) -> Iterator[RestartablePrefect]:
    home = tmp_path / "prefect-home"
    home.mkdir()
    server = RestartablePrefect(home)
    try:
        yield server
    finally:
        server.kill()


def _sweep_yaml(name: str, sleep: float) -> str:
    # Two Hyperband iterations: 44 train task runs over 18 rounds of 3 trials, each `sleep` seconds.
    return (f"name: {name}\ntrainable: {{kind: noop, options: {{sleep_seconds: {sleep}}}}}\n"
            "search: {algorithm: random, seed: 0}\n"
            "scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3, iterations: 2}\n"
            "budget: {max_gpu_hours: 1}\nruntime: {kind: thread, max_concurrent: 3}\n")


def _spends(ledger: Path) -> list[dict]:
    if not ledger.exists():
        return []
    return [e["record"] for line in ledger.read_text().splitlines() if (e := json.loads(line))["type"] == "spend"]


def _cli(config: Path, out: Path, api: str, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(out)],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)


def _wait_for_spends(cli: subprocess.Popen[str], ledger: Path, count: int, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while len(_spends(ledger)) < count:
        assert cli.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_sweep_trains_through_a_prefect_server_restart_and_loses_nothing(
        prefect_restartable: RestartablePrefect, tmp_path: Path) -> None:
    server = prefect_restartable
    server.start()
    api = server.api
    config, out, log = tmp_path / "sweep.yaml", tmp_path / "run", tmp_path / "cli.log"
    # The sweep outlasts the outage: about 18 rounds of `sleep` seconds after the kill, so it ends after the restart.
    config.write_text(_sweep_yaml("api-restart", sleep=max(2.0, OUTAGE / 9)))
    ledger = out / "ledger.jsonl"
    cli = _cli(config, out, api, log)
    try:
        _wait_for_spends(cli, ledger, 3, log)  # the first rung is training (9 trials, 3 at a time)
        server.kill()
        killed = time.time()
        at_kill = len(_spends(ledger))
        time.sleep(OUTAGE)
        during = len(_spends(ledger)) - at_kill
        assert cli.poll() is None, log.read_text()[-3000:]
        server.start()
        back = time.time()
        cli.wait(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
    text = log.read_text()
    assert cli.returncode == 0, text[-3000:]
    assert during >= 3, f"only {during} trials finished during the {OUTAGE:.0f} s outage"

    # Nothing lost, nothing twice: every planned trial billed once, result.json agrees with the ledger.
    spends = _spends(ledger)
    keys = [(s["trial_id"], s["rung"]) for s in spends]
    assert len(keys) == len(set(keys)) == 44, len(keys)
    assert all(s["status"] == "completed" for s in spends)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["stop_reason"] == "schedule_complete", result["stop_detail"]
    assert sorted((e["trial_id"], e["rung"]) for e in result["events"]) == sorted(keys)
    outages = result["prefect_api"]["outages"]
    assert len(outages) == 1 and OUTAGE - 3 <= outages[0]["seconds"] <= back - killed + 5, outages
    trials = sorted({s["trial_id"] for s in spends})

    # The Optuna study holds every trial, each in a final state with its last budget's score.
    study = optuna.load_study(study_name="api-restart", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == len(trials) == result["counts"]["trials"]
    assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}

    # Once the server is back: the flow run ends Completed and the artifacts count every trial.
    flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["api-restart"]}},
                                                            "limit": 1}).json()[0]
    assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
    artifacts = {a["key"]: a for a in httpx.post(f"{api}/artifacts/filter", json={
        "flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json() if a.get("key")}
    summary, board = artifacts["api-restart-summary"], artifacts["api-restart-leaderboard"]
    assert f"on {len(trials)} trials" in summary["data"] and "schedule_complete" in summary["data"]
    assert f"of {len(trials)} trials" in board["description"]

    # What Prefect kept of the train task runs, those that finished during the outage included: its events
    # client resends what the dead server never confirmed, once the new one answers.
    query = {"flow_runs": {"id": {"any_": [flow_run["id"]]}},
             "task_runs": {"name": {"like_": "train-"}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    deadline = time.time() + 60
    while (shown := int(httpx.post(f"{api}/task_runs/count", json=query).json())) < len(spends):
        if time.time() > deadline:
            break
        time.sleep(1)
    print(f"outage {back - killed:.1f} s: {during} trials finished during it; the API shows {shown} of "
          f"{len(spends)} train task runs Completed; sweep wall-clock {result['elapsed_seconds']:.1f} s")
    assert shown == len(spends), f"the API shows {shown} of {len(spends)} train task runs"



def test_a_sweep_that_ends_during_the_outage_waits_for_the_server_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    """Production's Prefect database, and the other timing: the schedule runs out while the server is down, so
    the flow waits for it (within ui.api_outage_seconds) to end its flow run Completed with current artifacts."""
    postgres.create_database("prefect_restart")
    home = tmp_path / "prefect-home"
    home.mkdir()
    server = RestartablePrefect(home, database_url=postgres.url("prefect_restart"))
    config, out, log = tmp_path / "sweep.yaml", tmp_path / "run", tmp_path / "cli.log"
    config.write_text("name: api-restart-pg\ntrainable: {kind: noop, options: {sleep_seconds: 1.0}}\n"
                      "search: {algorithm: random, seed: 0, num_trials: 12}\n"
                      "scheduler: {kind: fifo, min_budget: 1, max_budget: 1}\n"
                      "budget: {max_gpu_hours: 1}\nruntime: {kind: thread, max_concurrent: 3}\n")
    ledger = out / "ledger.jsonl"
    try:
        server.start()
        cli = _cli(config, out, server.api, log)
        try:
            _wait_for_spends(cli, ledger, 3, log)
            server.kill()
            # Twelve 1 s trials, three at a time: the schedule is done long before the server is back.
            _wait_for_spends(cli, ledger, 12, log, timeout=60)
            done = time.time()
            time.sleep(OUTAGE)
            assert cli.poll() is None, "the sweep must wait for the server to record its flow run's end"
            assert json.loads((out / "result.json").read_text())["stop_reason"] == "schedule_complete"
            server.start()
            cli.wait(timeout=120)
            waited = time.time() - done
        finally:
            if cli.poll() is None:
                cli.kill()
        assert cli.returncode == 0, log.read_text()[-3000:]
        assert "waiting up to" in log.read_text()
        (outage,) = json.loads((out / "result.json").read_text())["prefect_api"]["outages"]
        assert outage["ended_at"] is not None and outage["seconds"] >= OUTAGE, outage  # rewritten once it was back
        api = server.api
        flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["api-restart-pg"]}},
                                                                "limit": 1}).json()[0]
        assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
        artifacts = {a["key"]: a for a in httpx.post(f"{api}/artifacts/filter", json={
            "flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json() if a.get("key")}
        assert "on 12 trials" in artifacts["api-restart-pg-summary"]["data"]
        assert "of 12 trials" in artifacts["api-restart-pg-leaderboard"]["description"]
        query = {"flow_runs": {"id": {"any_": [flow_run["id"]]}},
                 "task_runs": {"name": {"like_": "train-"}, "state": {"type": {"any_": ["COMPLETED"]}}}}
        deadline = time.time() + 60
        while (shown := int(httpx.post(f"{api}/task_runs/count", json=query).json())) < 12 and time.time() < deadline:
            time.sleep(1)
        print(f"sweep done {waited:.1f} s before the CLI returned; the API shows {shown} of 12 train task runs")
        assert shown == 12
    finally:
        server.kill()
