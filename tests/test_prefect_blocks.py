"""Credentials from Prefect blocks, against the real Prefect server and the real SeaweedFS.

The blocks are saved through the Prefect API, the AWS variables are taken out of the environment, and a sweep
must still reach S3 and its Optuna study through the blocks alone, with no credential in what it writes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from rungflow.config import ConfigError, validate
from rungflow.flows.cli import main
from tests.conftest import sweep_config

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE")


def _unique(prefix: str) -> str:
    # The server is shared by the session: fresh names keep tests independent of order.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def aws_block(prefect_server: str, s3_server) -> str:
    from prefect_aws import AwsCredentials

    name = _unique("seaweed")
    AwsCredentials(aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
                   region_name="us-east-1", aws_client_parameters={"endpoint_url": s3_server.endpoint}).save(name)
    return name


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # No ~/.aws either: the block must be the only way in.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def _files_holding(root: Path, secrets: list[str]) -> list[str]:
    return [f"{p}: {s}" for p in root.rglob("*") if p.is_file() for s in secrets if s.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_sweep_checkpoints_to_s3_and_keeps_its_study_through_blocks_alone(
        prefect_server: str, s3_server, aws_block: str, no_aws_environment: None, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    from rungflow.flows.sweep import run_sweep

    bucket = _unique("blocks")
    db = tmp_path / f"study-{uuid.uuid4().hex}.db"
    study_url = f"sqlite:///{db}"
    secret = _unique("optuna-db")
    Secret(value=study_url).save(secret)
    cfg = validate(sweep_config(
        tmp_path, name="blocks", trainable={"kind": "noop", "options": {"sleep_seconds": 0.05}},
        scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 3, "eta": 3},
        storage={"run_dir": str(tmp_path / "run"), "checkpoints": f"s3://{bucket}/sweeps", "optuna_url": {"secret": secret},
                 "s3": {"block": aws_block, "connect_timeout": 1, "read_timeout": 2, "outage_seconds": 20}}))
    assert cfg.storage.optuna_url == study_url and repr(cfg.storage.optuna_url) == f"{{secret: {secret}}}"
    from rungflow.tasks.s3 import S3Store

    S3Store.from_url(cfg.storage.checkpoint_location(tmp_path)).ensure_bucket()  # the bucket, made through the block
    result = run_sweep(cfg, tmp_path / "run")

    assert result["stop_reason"] == "schedule_complete" and result["ledger"]["trials_failed"] == 0
    import boto3

    keys = [o["Key"] for o in boto3.session.Session().client(
        "s3", endpoint_url=s3_server.endpoint, region_name="us-east-1", aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key).list_objects_v2(Bucket=bucket, Prefix="sweeps/run/")["Contents"]]
    assert "sweeps/run/t0000/rung-0.ckpt" in keys
    resumed = [e for e in result["events"] if e["rung"] > 0]
    assert resumed and all(e["budget_trained"] < e["budget"] for e in resumed), "promoted trials resume from S3"
    import optuna

    assert len(optuna.load_study(study_name=optuna.get_all_study_summaries(study_url)[0].study_name,
                                 storage=study_url).trials) == len({e["trial_id"] for e in result["events"]})
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["storage"]["optuna_url"] == {"secret": secret} and saved["storage"]["s3"]["block"] == aws_block
    assert not _files_holding(tmp_path / "run", [s3_server.secret_key, str(db)])
    # A resumed sweep reads the block again: config.json validates back to the same URL.
    assert validate(saved).storage.optuna_url == study_url


def test_an_s3_bucket_block_gives_credentials_and_its_bucket(prefect_server: str, s3_server, no_aws_environment: None,
                                                             tmp_path: Path) -> None:
    from prefect_aws import AwsCredentials, S3Bucket

    from rungflow.tasks.s3 import S3Store

    bucket, name = _unique("bucket-block"), _unique("bucket")
    S3Bucket(bucket_name=bucket, credentials=AwsCredentials(
        aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
        aws_client_parameters={"endpoint_url": s3_server.endpoint})).save(name)
    store = S3Store.from_url(f"s3://{bucket}/p?block={name}")
    store.ensure_bucket()
    store.put("x.bin", b"through the block")
    assert store.get("x.bin")[0] == b"through the block"
    cfg = validate(sweep_config(tmp_path, storage={"checkpoints": f"s3://{bucket}/c", "s3": {"block": name}}))
    assert f"block={name}" in cfg.storage.checkpoint_location(tmp_path)
    with pytest.raises(ConfigError, match=rf"names bucket 'other'.*S3Bucket block for bucket '{bucket}'; use s3://{bucket}/PREFIX"):
        validate(sweep_config(tmp_path, storage={"checkpoints": "s3://other/c", "s3": {"block": name}}))


def test_a_missing_or_mistyped_block_fails_before_spending_in_one_line(prefect_server: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.blocks.system import Secret

    secret = _unique("a-secret")
    Secret(value="sqlite:///never-used-7c1d.db").save(secret)
    missing = _unique("missing")
    cases = [
        ({"s3": {"block": missing}}, f"storage.s3.block = '{missing}': no Prefect block named '{missing}' on "
                                     f"{prefect_server}; create a 'aws-credentials' or 's3-bucket' block of that name"),
        ({"s3": {"block": secret}}, f"storage.s3.block = '{secret}': Prefect block '{secret}' is of type 'secret', not "
                                    "'aws-credentials' or 's3-bucket'; name a"),
        ({"optuna_url": {"secret": missing}}, f"storage.optuna_url: no Prefect block named '{missing}'"),
        ({"optuna_url": {"secret": "x", "key": 1}}, "storage.optuna_url: write a URL, or {secret: NAME}"),
    ]
    for storage, expected in cases:
        with pytest.raises(ConfigError) as err:
            validate(sweep_config(tmp_path, storage=storage))
        assert str(err.value).startswith(expected) and "\n" not in str(err.value), str(err.value)
    # On the command line: exit 2, one line, no run directory, nothing spent.
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: bad-block\ntrainable: {{kind: noop}}\nstorage: {{s3: {{block: {missing}}}}}\n")
    assert main(["sweep", str(config), "--out", str(tmp_path / "run")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "storage.s3.block" in err_lines[0] and "fix the name" in err_lines[0], err_lines
    assert not (tmp_path / "run").exists()


def test_an_mlflow_uri_from_a_secret_dumps_as_its_reference(prefect_server: str, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    from rungflow.redact import redact

    name, uri = _unique("mlflow"), "http://tracker:pw-6b1e9a@127.0.0.1:5000"
    Secret(value=uri).save(name)
    cfg = validate(sweep_config(tmp_path, tracking={"mlflow": {"tracking_uri": {"secret": name}}}))
    assert cfg.tracking.mlflow.tracking_uri == uri
    assert cfg.model_dump(mode="json")["tracking"]["mlflow"]["tracking_uri"] == {"secret": name}
    assert "pw-6b1e9a" not in redact(f"could not reach {uri} (password pw-6b1e9a)")
    bad = _unique("not-a-uri")
    Secret(value="ftp://nowhere-at-all").save(bad)
    with pytest.raises(ConfigError) as err:
        validate(sweep_config(tmp_path, tracking={"mlflow": {"tracking_uri": {"secret": bad}}}))
    assert "is not usable here: expected an MLflow tracking URI" in str(err.value)
    assert "nowhere-at-all" not in str(err.value)
