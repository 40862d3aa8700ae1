"""Trial reporting through a real ``mlflow server`` (SQLite backend) started by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow
SECRET = "mlflow-s3cret-9d1"


def _start(tmp_path: Path, port: int) -> subprocess.Popen:
    mlflow = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=(tmp_path / "mlflow.log").open("a"), stderr=subprocess.STDOUT, start_new_session=True)
    # Generous: the suite's other processes share the cores while mlflow imports (a hang still ends here).
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "mlflow.log").read_text()[-2000:]
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)


def test_each_trial_is_an_mlflow_run_under_the_sweeps_parent(prefect_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    port = free_port()
    server = _start(tmp_path, port)
    try:
        uri = f"http://rungflow:{SECRET}@127.0.0.1:{port}"
        config = tmp_path / "sweep.yaml"
        config.write_text("name: tracked\ntrainable: {kind: noop, options: {fail_when_x_above: 0.9}}\n"
                          "search: {algorithm: random, seed: 0}\nscheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\n"
                          f"runtime: {{kind: thread}}\ntracking: {{mlflow: {{tracking_uri: '{uri}', experiment: weekly}}}}\n")
        run = tmp_path / "run"
        out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(run)], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("weekly")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 17
        assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"summary.md", "anytime.png"}
        by_status = {}
        for child in children:
            by_status.setdefault(child.data.tags["status"], []).append(child)
            assert set(child.data.params) >= {"x", "y"} and child.data.metrics["gpu_hours"] >= 0
        assert len(by_status["full_budget"]) == 5 and all(c.info.status == "FINISHED" for c in by_status["full_budget"])
        full = by_status["full_budget"][0]
        steps = [m.step for m in client.get_metric_history(full.info.run_id, "score")]
        assert steps == sorted(steps) and steps[-1] == 9
        assert all(c.info.status == "KILLED" for c in by_status.get("stopped_by_gate", []))
        assert all(c.info.status == "FAILED" for c in by_status.get("failed", []))
        # Resuming the finished sweep reports nothing twice.
        again = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "resume", str(run)], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == 18
        assert len(client.get_metric_history(full.info.run_id, "score")) == len(steps)
        # The tracking URI's password reaches neither the run directory's results nor the console.
        for name in ("result.json", "sweep.log", "ledger.jsonl"):
            assert SECRET not in (run / name).read_text(), name
        assert SECRET not in out.stdout + out.stderr + again.stdout + again.stderr
    finally:
        _stop(server)


def test_an_unreachable_tracking_server_fails_before_spending(prefect_server: str, tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("name: untracked\ntrainable: {kind: noop}\nscheduler: {kind: sha, min_budget: 1, max_budget: 3, eta: 3}\n"
                      f"runtime: {{kind: thread}}\ntracking: {{mlflow: {{tracking_uri: 'http://127.0.0.1:{free_port()}'}}}}\n")
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(tmp_path / "run")],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "tracking.mlflow.tracking_uri" in out.stderr
    assert not any(line.startswith('{"type": "spend"') for line in
                   (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()) if (tmp_path / "run" / "ledger.jsonl").exists() else True
