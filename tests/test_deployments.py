"""The weekly deployments from deployments/prefect.yaml on a real Prefect server, run by a real process worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from rungflow.tasks.registry import ModelRegistry
from tests.conftest import REPO

pytestmark = pytest.mark.slow

NAME = "rungflow-retrain/weekly-breast-cancer"


def _env(prefect_server: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "WARNING",
            "RUNGFLOW_REGISTRY": str(tmp_path / "registry"), "RUNGFLOW_RUNS": str(tmp_path / "runs")}


def _deployment(api: str) -> dict:
    response = httpx.get(f"{api}/deployments/name/{NAME}")
    response.raise_for_status()
    return response.json()


def _scheduled_runs(api: str, deployment_id: str, at_least: int, within: float) -> list[dict]:
    """The deployment's auto-scheduled flow runs, once the scheduler service has made ``at_least`` of them."""
    deadline = time.time() + within
    while True:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {
            "deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
        runs = [r for r in runs if r["auto_scheduled"]]
        if len(runs) >= at_least:
            return runs
        if time.time() > deadline:
            pytest.fail(f"the scheduler service made {len(runs)} scheduled runs in {within:.0f} s, not {at_least}; "
                        "is sqlalchemy<2.1 installed (pyproject.toml)? see the server log")
        time.sleep(2)


def test_prefect_yaml_declares_weekly_cron_with_timezone_and_process_pool() -> None:
    spec = yaml.safe_load((REPO / "deployments/prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        assert deployment["work_pool"]["name"] == "rungflow-process" and deployment["parameters"]["config"]
        assert (REPO / deployment["parameters"]["config"]).is_file()
        for schedule in deployment["schedules"]:
            assert len(schedule["cron"].split()) == 5 and schedule["cron"].split()[4] != "*"  # one weekday: weekly
            ZoneInfo(schedule["timezone"])  # a real IANA zone, not UTC by default


def test_deployment_runs_on_a_process_worker_and_its_schedule_is_weekly(prefect_server: str, tmp_path: Path) -> None:
    env = _env(prefect_server, tmp_path)
    subprocess.run([sys.executable, "-m", "rungflow.deployments.deploy", "weekly-breast-cancer"], cwd=REPO, env=env, check=True,
                   timeout=180, capture_output=True)
    deployment = _deployment(prefect_server)
    assert deployment["work_pool_name"] == "rungflow-process"
    assert deployment["parameters"] == {"config": "deployments/retrain-breast-cancer.yaml"}
    pool = httpx.get(f"{prefect_server}/work_pools/rungflow-process").json()
    assert pool["type"] == "process"
    [schedule] = [s["schedule"] for s in deployment["schedules"] if s["active"]]
    assert (schedule["cron"], schedule["timezone"]) == ("0 3 * * 1", "Europe/Berlin")
    # The next run times the server derives from that schedule: Mondays, 03:00 Berlin time, a week apart.
    from prefect.server.schemas.schedules import CronSchedule

    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    dates = asyncio.run(cron.get_dates(3, start=datetime(2026, 3, 20, tzinfo=ZoneInfo("UTC"))))
    berlin = [d.astimezone(ZoneInfo("Europe/Berlin")) for d in dates]
    assert all((d.weekday(), d.hour, d.minute) == (0, 3, 0) for d in berlin)
    assert [d.utcoffset().total_seconds() / 3600 for d in berlin] == [1, 2, 2]  # across the switch to summer time

    # The server's scheduler service materialises the coming weekly runs (needs sqlalchemy<2.1, see pyproject.toml).
    scheduled = _scheduled_runs(prefect_server, deployment["id"], at_least=3, within=90)
    starts = sorted(datetime.fromisoformat(r["expected_start_time"]).astimezone(ZoneInfo("Europe/Berlin")) for r in scheduled)
    assert all((d.weekday(), d.hour, d.minute) == (0, 3, 0) for d in starts), starts
    assert all(7 * 86400 - 3600 <= (b - a).total_seconds() <= 7 * 86400 + 3600 for a, b in zip(starts, starts[1:]))

    # Triggered by hand as the README shows; a process worker picks it up and runs the flow from this checkout.
    out = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", NAME], cwd=REPO, env=env, check=True,
                         timeout=120, capture_output=True, text=True).stdout
    assert "Created flow run" in out
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "rungflow-process", "--run-once"],
                            cwd=tmp_path, env=env, timeout=420, capture_output=True, text=True)
    runs = httpx.post(f"{prefect_server}/flow_runs/filter",
                      json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}).json()
    by_hand = [r for r in runs if not r["auto_scheduled"]]
    assert [r["state_type"] for r in by_hand] == ["COMPLETED"], worker.stdout[-3000:] + worker.stderr[-3000:]
    assert by_hand[0]["name"] == "retrain-breast-cancer"
    # The worker ran only what was due: next Monday's runs are still waiting.
    assert {r["state_type"] for r in runs if r["auto_scheduled"]} == {"SCHEDULED"}
    registry = ModelRegistry(str(tmp_path / "registry"))
    assert registry.production("breast-cancer") == "v0001"
    assert registry.load_model("breast-cancer").family == "linear"


def test_serve_registers_the_same_deployments_without_a_work_pool(prefect_server: str, tmp_path: Path) -> None:
    env = _env(prefect_server, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "rungflow.deployments.serve", "weekly-digits-mlp"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            response = httpx.get(f"{prefect_server}/deployments/name/rungflow-retrain/weekly-digits-mlp")
            if response.status_code == 200:
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(1)
        else:
            pytest.fail("serve did not register weekly-digits-mlp within 120 s")
        deployment = response.json()
        assert deployment["work_pool_name"] is None and deployment["parameters"] == {"config": "deployments/retrain-digits.yaml"}
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in deployment["schedules"]] == [("30 3 * * 1", "Europe/Berlin")]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_prefect_deploy_all_creates_every_deployment_of_prefect_yaml(prefect_server: str, tmp_path: Path) -> None:
    """The README's `prefect deploy --all` (a 422 with fastapi>=0.151, see pyproject.toml) creates both deployments."""
    env = {**_env(prefect_server, tmp_path), "RUNGFLOW_HOME": str(REPO)}
    created = httpx.post(f"{prefect_server}/work_pools/", json={"name": "rungflow-process", "type": "process"})
    assert created.status_code in (201, 409)  # 409: an earlier test made it
    out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                          "--all"], cwd=REPO, env=env, timeout=240, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for spec in yaml.safe_load((REPO / "deployments/prefect.yaml").read_text())["deployments"]:
        deployment = httpx.get(f"{prefect_server}/deployments/name/rungflow-retrain/{spec['name']}").json()
        assert deployment["work_pool_name"] == "rungflow-process" and deployment["parameters"] == spec["parameters"]
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in deployment["schedules"]] == [
            (s["cron"], s["timezone"]) for s in spec["schedules"]]
        assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
