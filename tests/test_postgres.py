"""Prefect on PostgreSQL, as in production: a 1,000-trial sweep on Ray, every task run and artifact in the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rungflow.config import validate
from tests.conftest import REPO, Postgres, sweep_config

pytestmark = pytest.mark.slow

TRIALS = 1000


def test_a_1000_trial_ray_sweep_on_a_postgres_backed_prefect_server(prefect_on_postgres: str, postgres: Postgres,
                                                                     tmp_path: Path, ray_shutdown: None) -> None:
    api = prefect_on_postgres
    cfg = validate(sweep_config(
        tmp_path, name="pg-1000", scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
        search={"algorithm": "random", "seed": 0, "num_trials": TRIALS},
        runtime={"kind": "ray", "cpus_per_trial": 1},
    ))
    # A process of its own: Prefect's event worker is per process and stays bound to the first API it reported
    # to, which in a test session is the SQLite server other tests started.
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(tmp_path / "sweep.yaml"), "--out",
                          str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PREFECT_API_URL": api})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["counts"]["by_status"] == {"ok": TRIALS} and result["stop_reason"] == "schedule_complete"

    flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["pg-1000"]}},
                                                            "sort": "START_TIME_DESC", "limit": 1}).json()[0]
    assert flow_run["state_type"] == "COMPLETED"
    query = {"flow_runs": {"id": {"any_": [flow_run["id"]]}},
             "task_runs": {"name": {"like_": "train-"}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    deadline = time.time() + 60
    while (shown := int(httpx.post(f"{api}/task_runs/count", json=query).json())) < TRIALS:
        assert time.time() < deadline, f"the API shows {shown} of {TRIALS} trials"
        time.sleep(1)
    artifacts = httpx.post(f"{api}/artifacts/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json()
    keys = {a["key"] for a in artifacts if a.get("key")}
    assert any(k.endswith("-leaderboard") for k in keys) and any(k.endswith("-summary") for k in keys), keys
    summary = next(a for a in artifacts if (a.get("key") or "").endswith("-summary"))
    assert f"on {TRIALS} trials" in summary["data"], summary["data"][:400]

    # The database password reaches neither the run directory nor the API's artifacts.
    leaked = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and postgres.password.encode() in p.read_bytes()]
    assert not leaked and postgres.password not in str(artifacts)
