"""The embedded Prefect server's output stays in the run directory, and Prefect's telemetry is off by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rungflow.flows.prefect_server import prefect_api


def _telemetry_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    return {**env, **extra}


@pytest.mark.parametrize(("given", "seen"), [(None, "1 false"), ("0", "0 false")])
def test_importing_rungflow_turns_prefect_telemetry_off_unless_the_user_chose(given: str | None, seen: str) -> None:
    env = _telemetry_env(**({"DO_NOT_TRACK": given} if given is not None else {}))
    out = subprocess.run([sys.executable, "-c", "import os, rungflow.flows.cli, prefect; "
                          "print(os.environ['DO_NOT_TRACK'], os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == seen


@pytest.mark.slow
def test_the_embedded_server_writes_to_its_log_file_not_the_terminal(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    log = tmp_path / "run" / "prefect-server.log"
    with prefect_api(log) as server:
        assert server is not None
        assert os.environ["PREFECT_API_URL"] == server.api_url
        assert httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200
        pid = server.server_process.pid
        # Where the server's stdout and stderr point: the log, not the terminal this process inherited.
        assert Path(os.readlink(f"/proc/{pid}/fd/1")) == log
        assert Path(os.readlink(f"/proc/{pid}/fd/2")) == log
    assert "PREFECT_API_URL" not in os.environ  # put back: a second sweep must not report to a stopped server
    assert log.exists()


def test_a_user_api_url_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # discard port: nothing answers
    from rungflow.flows.prefect_server import PrefectAPIDown

    with pytest.raises(PrefectAPIDown, match="PREFECT_API_URL=http://127.0.0.1:9/api does not answer"):
        with prefect_api(tmp_path / "prefect-server.log"):
            pass
    assert not (tmp_path / "prefect-server.log").exists()
