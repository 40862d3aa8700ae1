"""The Prefect API a sweep reports to: the user's (``PREFECT_API_URL``) or one embedded server of rungflow's own.

rungflow starts the embedded server itself, rather than letting each process start Prefect's ephemeral one, so the
flow and all its Ray workers share one API. The server runs as a subprocess whose output goes to a log file in the
run directory, never to the user's terminal: under load its services log ERROR tracebacks of their own (the
task-run recorder retrying a flush, say) that say nothing about the sweep, and would tear through the progress bar.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["PrefectAPIDown", "SERVER_LOG", "check_prefect_api", "ensure_prefect_api", "flush_prefect_logs",
           "prefect_api", "stop_prefect_server"]

# The embedded server's own log, beside the sweep's sweep.log.
SERVER_LOG = "prefect-server.log"


class PrefectAPIDown(Exception):
    """The API that ``PREFECT_API_URL`` names does not answer."""


def _logged_server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class LoggedSubprocessServer(SubprocessASGIServer):
        """Prefect's subprocess server with its stdout and stderr in a file (Prefect's inherits the terminal)."""

        log: IO[Any] | None = None

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            if self.log is None:
                return super()._run_uvicorn_command()
            real_popen = subprocess.Popen

            def popen_to_log(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
                return real_popen(*args, stdout=self.log, stderr=subprocess.STDOUT, **kwargs)

            # Prefect builds the command and its environment (settings, ports) itself; only where the output goes
            # is ours to change, so its Popen call is pointed at the log for the length of this one call.
            subprocess.Popen = popen_to_log  # type: ignore[misc]
            try:
                return super()._run_uvicorn_command()
            finally:
                subprocess.Popen = real_popen  # type: ignore[misc]

    return LoggedSubprocessServer


def ensure_prefect_api(log_path: Path | None = None) -> Any:
    """Use ``PREFECT_API_URL`` if set; otherwise start one embedded server that the flow and its Ray workers share.

    Returns the started server (``None`` when the user's API is used); its output goes to ``log_path`` (appended),
    or, without one, to a file in ``PREFECT_HOME``.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.settings import get_current_settings

    from rungflow.tasks.ui_sync import recommended_server_settings

    for name, value in recommended_server_settings().items():
        os.environ.setdefault(name, value)
    if log_path is None:
        log_path = Path(get_current_settings().home) / SERVER_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = _logged_server_class()()
    server.log = log_path.open("a", encoding="utf-8")
    try:
        server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    except Exception as exc:
        server.log.close()
        raise RuntimeError(f"the embedded Prefect server did not start ({exc}); its log is {log_path}") from None
    os.environ["PREFECT_API_URL"] = server.api_url
    return server


def stop_prefect_server(server: Any) -> None:
    """Stop a server :func:`ensure_prefect_api` started, after this process's logs have reached it."""
    flush_prefect_logs()
    server.stop()
    if server.log is not None:
        server.log.close()


def check_prefect_api() -> None:
    """Fail fast, naming PREFECT_API_URL, when the configured API does not answer."""
    import httpx

    url = os.environ["PREFECT_API_URL"].rstrip("/")
    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except Exception as exc:
        raise PrefectAPIDown(f"PREFECT_API_URL={url} does not answer ({type(exc).__name__}); start `prefect server "
                             "start` or unset PREFECT_API_URL to use the embedded server") from None


def flush_prefect_logs() -> None:
    # Logs are shipped to the API in the background; send them before the embedded server goes.
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
    except Exception:
        pass


@contextmanager
def prefect_api(log_path: Path | None = None) -> Iterator[Any]:
    """The API for one sweep from Python: the user's, or an embedded server for the length of the block.

    ``PREFECT_API_URL`` is set for the block (Ray workers and subprocesses read it) and put back after, so a
    process that sweeps twice does not point at a server that is gone.
    """
    previous = os.environ.get("PREFECT_API_URL")
    server = ensure_prefect_api(log_path)
    try:
        check_prefect_api()
        if server is None:
            yield None
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        if server is not None:
            stop_prefect_server(server)
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
