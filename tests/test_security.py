"""Security: credentials never reach what rungflow writes or prints; configs choose trainables by name only."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from rungflow.config import ConfigError, validate
from rungflow.redact import RedactingFilter, redact, redact_json, secret_values
from tests.conftest import REPO

FAKE = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY0001",
    "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-7Hq2Lx9Zp",
    "PREFECT_API_KEY": "pnu_fakeprefectapikey1234567890",
    "PREFECT_API_AUTH_STRING": "admin:fake-auth-pass-55",
}
URL_PASSWORD = "dbpass-9911-secret"

PLUGIN = '''
import os

from rungflow.budgets.space import FloatParam, SearchSpace
from rungflow.tasks.trainables.base import Trainable, TrainOutcome


class LeakyTrainable(Trainable):
    """Fails with its credentials in the message, as careless storage clients do."""

    kind = "leaky"
    metric = "score"
    default_budget = (1, 3)

    def default_space(self):
        return SearchSpace((FloatParam("x", 0.0, 1.0),))

    def train(self, request):
        if request.config["x"] > 0.5:
            raise RuntimeError(f"S3 refused key {os.environ.get('AWS_SECRET_ACCESS_KEY')} "
                               f"(prefect {os.environ.get('PREFECT_API_KEY')})")
        return TrainOutcome(score=request.config["x"], budget_reached=request.budget, budget_trained=request.budget)
'''


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package (a dist-info with an entry point) that registers the ``leaky`` trainable."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "leaky_plugin.py").write_text(PLUGIN)
    info = root / "leaky_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rungflow.trainables]\nleaky = leaky_plugin:LeakyTrainable\n")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_redact_masks_env_credentials_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAKE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RUNGFLOW_VISIBLE", "visible-value")
    assert set(FAKE.values()) <= set(secret_values())
    text = f"boom {FAKE['AWS_SECRET_ACCESS_KEY']} at postgresql://bob:{URL_PASSWORD}@db:5432/x visible-value"
    assert redact(text) == "boom *** at postgresql://bob:***@db:5432/x visible-value"
    data = {"a": [FAKE["PREFECT_API_KEY"], 1.5, None], FAKE["AWS_ACCESS_KEY_ID"]: {"url": "http://h:4200/api"}}
    assert redact_json(data) == {"a": ["***", 1.5, None], "***": {"url": "http://h:4200/api"}}


def test_log_records_are_redacted_with_arguments_and_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE["AWS_SECRET_ACCESS_KEY"])
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("rungflow.test-redaction")
    logger.addHandler(handler)
    try:
        logger.warning("key is %s", FAKE["AWS_SECRET_ACCESS_KEY"])
        try:
            raise RuntimeError(f"denied for {FAKE['AWS_SECRET_ACCESS_KEY']}")
        except RuntimeError:
            logger.exception("upload failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and "RuntimeError" in records[1]
    assert all(FAKE["AWS_SECRET_ACCESS_KEY"] not in r for r in records)


def test_trainables_come_from_names_and_entry_points_never_import_strings(plugin_path: Path) -> None:
    from rungflow.tasks.train import TrialSpec, run_trial
    from rungflow.tasks.trainables import known_kinds

    assert "leaky" in known_kinds() and "noop" in known_kinds()
    cfg = validate({"name": "plugin", "trainable": {"kind": "leaky"}, "scheduler": {"kind": "fifo"}})
    assert cfg.trainable_class().__name__ == "LeakyTrainable"
    result = run_trial(TrialSpec(trial_id="t0", config={"x": 0.25}, bracket=0, rung=0, budget=3, trainable_kind="leaky",
                                 trainable_options={}, checkpoint_dir=str(plugin_path / "ckpt")))
    assert result.ok and result.record.score == 0.25
    for kind in ("leaky_plugin:LeakyTrainable", "os:system", "rungflow.tasks.trainables.noop.NoopTrainable", "__import__('os')"):
        with pytest.raises(ConfigError, match="unknown trainable"):
            validate({"name": "evil", "trainable": {"kind": kind}})


@pytest.mark.slow
def test_no_credential_in_run_dir_output_or_prefect_logs(prefect_server: str, plugin_path: Path, tmp_path: Path,
                                                        postgres) -> None:
    # The sweep writes its Optuna study to a real PostgreSQL whose password is in the URL.
    postgres.create_database("optuna_secrets")
    optuna_url = postgres.url("optuna_secrets", driver="postgresql+psycopg")
    config = tmp_path / "sweep.yaml"
    config.write_text(textwrap.dedent(f"""\
        name: secrets
        trainable: {{kind: leaky}}
        search: {{algorithm: random, seed: 0, num_trials: 6}}
        scheduler: {{kind: fifo, max_budget: 3}}
        runtime: {{kind: thread, max_concurrent: 2, gpus_per_trial: 1}}
        storage: {{optuna_url: "{optuna_url}"}}
        """))
    env = {**os.environ, **FAKE, "PREFECT_API_URL": prefect_server,
           "PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)])}
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(out)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((out / "result.json").read_text())
    failed = [e for e in result["events"] if e["status"] == "failed"]
    assert failed and all("S3 refused key ***" in e["error"] for e in failed), "the failure must still be reported"
    secrets = [*FAKE.values(), postgres.password]
    leaks = []
    for path in [p for p in out.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        leaks += [f"{path.name}: {s}" for s in secrets if s.encode() in data]
    leaks += [f"output: {s}" for s in secrets if s in run.stdout + run.stderr]
    logs = httpx.post(f"{prefect_server}/logs/filter", json={"limit": 200, "sort": "TIMESTAMP_DESC"}).json()
    text = json.dumps(logs)
    assert "S3 refused key ***" in text, "the trial failures should be logged to Prefect, redacted"
    leaks += [f"prefect logs: {s}" for s in secrets if s in text]
    assert not leaks, leaks


def test_ray_workers_get_prefect_settings_but_no_credentials() -> None:
    from rungflow.tasks.runtime import _ray_env

    env = _ray_env({"PREFECT_API_URL": "http://127.0.0.1:4200/api", "PREFECT_API_KEY": "pnu_0123456789abcdef",
                    "PREFECT_API_AUTH_STRING": "admin:hunter22", "RUNGFLOW_FAULT_AT": "gate:2",
                    "RUNGFLOW_S3_SECRET_ACCESS_KEY": "abcdefghij", "AWS_SECRET_ACCESS_KEY": "abcdefghij",
                    "HOME": "/root"})
    # A runtime_env is readable by anyone who can list the cluster's actors: only non-secret settings go there.
    assert env == {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "RUNGFLOW_FAULT_AT": "gate:2",
                   "PREFECT_LOGGING_LEVEL": "WARNING"}
