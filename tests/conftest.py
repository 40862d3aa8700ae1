"""Shared fixtures: a real Prefect server (SQLite) on a free loopback port, and config builders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_prefect(home: Path, ui: bool = False) -> Iterator[str]:
    """``prefect server start`` (SQLite under ``home``) on a free loopback port; yields the API URL.

    While it runs, this process and everything it starts (Ray workers, CLI subprocesses) report to it.
    """
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if ui:
        # The browser asks the UI where the API is; without these it would try 127.0.0.1:4200.
        env.update(PREFECT_UI_API_URL=f"{origin}/api", PREFECT_UI_URL=origin)
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"{origin}/api"
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


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` on loopback, UI off; the flow and its Ray workers all report to it."""
    with serve_prefect(tmp_path_factory.mktemp("prefect-home")) as url:
        yield url


@pytest.fixture(scope="module")
def prefect_ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own with the UI on, for browser tests; yields the API URL (the UI is at its origin)."""
    with serve_prefect(tmp_path_factory.mktemp("prefect-ui-home"), ui=True) as url:
        yield url


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
