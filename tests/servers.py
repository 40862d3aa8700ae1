"""Server processes the fault tests and bench/faults.py kill and start again on the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

__all__ = ["RestartablePrefect", "RestartableMLflow"]


class _Restartable:
    """A server in its own process group, so SIGKILL takes everything it started, as a crashed host would."""

    proc: subprocess.Popen[bytes] | None = None

    def _wait_healthy(self, health_url: str, log: Path, began: float, timeout: float) -> float:
        """Seconds from ``began`` until ``health_url`` answers 200; fails with the log's tail if the server dies."""
        while True:
            assert self.proc is not None and self.proc.poll() is None, log.read_text()[-3000:]
            assert time.time() - began < timeout, f"{health_url} did not answer in {timeout:.0f} s: " + log.read_text()[-3000:]
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    return time.time() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class RestartablePrefect(_Restartable):
    """``prefect server start`` on a fixed port and database, which can be killed and started again."""

    def __init__(self, home: Path, database_url: str | None = None, env: dict[str, str] | None = None) -> None:
        from rungflow.tasks.ui_sync import recommended_server_settings

        self.home, self.port = home, free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, **recommended_server_settings(), "PREFECT_HOME": str(home),
                    "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_LOGGING_LEVEL": "WARNING"}
        if database_url:
            self.env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        self.env.update(env or {})
        self.env.pop("PREFECT_API_URL", None)
        self.starts = 0

    def start(self, timeout: float = 180) -> float:
        """Start it and wait until /health answers; returns the seconds that took."""
        self.starts += 1
        began = time.time()
        log = self.home / f"server-{self.starts}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        return self._wait_healthy(f"{self.api}/health", log, began, timeout)


class RestartableMLflow(_Restartable):
    """``mlflow server`` on SQLite under ``home``, on a fixed port, which can be killed and started again."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> float:
        began = time.time()
        mlflow = str(Path(sys.executable).parent / "mlflow")
        self.proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}", "--default-artifact-root",
             str(self.home / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=(self.home / "mlflow.log").open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        return self._wait_healthy(f"{self.uri}/health", self.home / "mlflow.log", began, timeout)
