"""An unreachable Prefect API, through the CLI: before the sweep (nothing spent) and down mid-sweep for longer than
the sweep may train without it (nothing lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

SWEEP = (
    "name: api-loss\ntrainable: {kind: noop, options: {sleep_seconds: 1.0}}\nsearch: {algorithm: random, seed: 0}\n"
    "scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\nbudget: {max_gpu_hours: 1}\n"
    "runtime: {kind: thread, max_concurrent: 3}\n"
)
# A sweep trains through an outage of up to ui.api_outage_seconds (tests/test_prefect_restart.py); a small one here.
ALLOWED_OUTAGE = 3


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rungflow.flows.cli", *args]


def _env(api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}


def _assert_one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


def test_unreachable_api_fails_before_spending_anything(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(SWEEP)
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    out = tmp_path / "run"
    started = time.time()
    run = subprocess.run(_cli("sweep", str(config), "--out", str(out)), cwd=REPO, env=_env(api),
                         capture_output=True, text=True, timeout=120)
    elapsed = time.time() - started
    assert run.returncode == 2
    line = _assert_one_line_error(run.stderr)
    assert f"PREFECT_API_URL={api}" in line and "prefect server start" in line
    assert not out.exists(), "nothing may run (or be billed) before the API answers"
    assert elapsed < 60, f"took {elapsed:.0f} s"  # interpreter start and imports; the probe itself is one refused connect


@pytest.mark.slow
def test_api_dying_mid_sweep_stops_it_fast_and_keeps_every_finished_trial(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    # Its own process group: killing it takes its uvicorn workers too, as a crashed server would go.
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=(home / "server.log").open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    cli = None
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None and time.time() < deadline, (home / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        config = tmp_path / "sweep.yaml"
        config.write_text(SWEEP + f"ui: {{api_outage_seconds: {ALLOWED_OUTAGE}}}\n")
        out = tmp_path / "run"
        ledger = out / "ledger.jsonl"
        cli = subprocess.Popen(_cli("sweep", str(config), "--out", str(out)), cwd=REPO, env=_env(api),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Kill the server while the first rung (9 trials of 1 s, 3 at a time) is training.
        deadline = time.time() + 240
        while not (ledger.exists() and len(ledger.read_text().splitlines()) >= 3):
            assert cli.poll() is None and time.time() < deadline, cli.communicate()
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        killed = time.time()
        stdout, stderr = cli.communicate(timeout=240)
        after = time.time() - killed
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        if cli is not None and cli.poll() is None:
            cli.kill()
    assert cli.returncode == 2, stdout + stderr
    line = _assert_one_line_error(stderr)
    assert f"PREFECT_API_URL={api} stopped answering" in line and str(out) in line and "rerun" in line
    assert f"ui.api_outage_seconds={ALLOWED_OUTAGE}" in line
    assert after < 90, f"the CLI took {after:.0f} s to give up after the API died"
    # Nothing lost: every ledger line is whole, and result.json is complete and agrees with it.
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    spends = [e["record"] for e in entries if e["type"] == "spend"]
    # Every attempt handed to a worker is billed, once: what was running finished, what had not started came back
    # cancelled. A start with no spend after it is worker time the stopped run never paid for.
    starts = [(e["start"]["trial_id"], e["start"]["rung"], e["start"]["attempt"]) for e in entries if e["type"] == "started"]
    billed = [(s["trial_id"], s["rung"], s["attempt"]) for s in spends]
    assert len(billed) == len(set(billed)), "an attempt billed twice"
    assert sorted(starts) == sorted(billed), "a start without its spend (or a spend without its start)"
    assert len(starts) >= 9  # the first rung's trials had all been handed out when the API died
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["stop_reason"] == "cancelled"
    assert "Prefect API stopped answering" in result["stop_detail"]
    assert f"more than ui.api_outage_seconds={ALLOWED_OUTAGE}" in result["stop_detail"]
    outage = result["prefect_api"]["outages"][-1]
    assert outage["ended_at"] is None and outage["seconds"] > ALLOWED_OUTAGE
    assert sorted((e["trial_id"], e["rung"]) for e in result["events"]) == sorted((s["trial_id"], s["rung"]) for s in spends)
    assert result["ledger"]["gpu_hours"] == pytest.approx(sum(s["gpu_seconds"] for s in spends) / 3600)
    report = subprocess.run(_cli("report", str(out)), cwd=REPO, env=_env(api), capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0 and "t0000" in report.stdout, report.stderr
