"""Shared fixtures: a real Prefect server (SQLite) on a free loopback port, and config builders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` on loopback; the flow and its Ray workers all report to it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited early; see {home / 'server.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not start within 180 s")
    previous = os.environ.get("PREFECT_API_URL")
    # The env var reaches Ray workers and subprocesses; the settings context reaches this process,
    # whose Prefect settings were read when prefect was first imported.
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def ray_shutdown() -> Iterator[None]:
    """Tests that start Ray leave none behind for the next test."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def sweep_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A small sweep config as a dict; keyword overrides replace whole sections."""
    cfg: dict[str, Any] = {
        "name": "test-sweep",
        "trainable": {"kind": "noop", "options": {}},
        "search": {"algorithm": "random", "seed": 0},
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
        "budget": {"max_gpu_hours": 10.0, "price_per_gpu_hour": 2.0},
        "runtime": {"kind": "thread", "max_concurrent": 2},
        "storage": {"run_dir": str(tmp_path / "run")},
    }
    cfg.update(overrides)
    return cfg
