"""The S3 layer and the S3 checkpoint store against a real SeaweedFS server: round trips, checksums, outages."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from rungflow.config import ConfigError, validate
from rungflow.tasks.checkpoints import CorruptCheckpoint, S3CheckpointStore, open_store
from rungflow.tasks.s3 import S3Error, S3NotFound, S3Store, S3Unavailable, parse_s3_url
from tests.conftest import free_port, sweep_config


def test_url_round_trip_and_no_credentials_in_urls() -> None:
    s = parse_s3_url("s3://models/team/a?endpoint_url=http://127.0.0.1:9&connect_timeout=1.5&max_attempts=3")
    assert (s.bucket, s.prefix, s.endpoint_url, s.connect_timeout, s.max_attempts) == ("models", "team/a", "http://127.0.0.1:9", 1.5, 3)
    assert parse_s3_url(s.url()) == s
    with pytest.raises(S3Error, match="credentials never go in URLs"):
        parse_s3_url("s3://b/p?aws_secret_access_key=x")


def test_credentials_in_config_are_refused_by_name(tmp_path: Path) -> None:
    cfg = sweep_config(tmp_path, storage={"checkpoints": "s3://b/p", "s3": {"aws_secret_access_key": "hunter2"}})
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "credentials never go in config files" in str(err.value) and "hunter2" not in str(err.value)


def test_put_get_list_and_checkpoint_checksums(s3_server) -> None:
    store = S3Store.from_url(s3_server.url("rungflow-unit", "s3test"))
    store.ensure_bucket()
    store.put("a/one.bin", b"\x00\x01", metadata={"k": "v"})
    assert store.get("a/one.bin") == (b"\x00\x01", {"k": "v"})
    assert store.list("a") == ["a/one.bin"]
    with pytest.raises(S3NotFound):
        store.get("a/missing")

    location = s3_server.url("rungflow-unit", "ckpt")
    ckpt = open_store(location)
    assert isinstance(ckpt, S3CheckpointStore)
    ckpt.save("t0001", 0, b"weights")
    assert ckpt.load("t0001", 0) == b"weights"
    assert ckpt.load("t0001", 1) is None
    # Another writer replaces the object but not its checksum: refused on load.
    s3_server.client().put_object(Bucket="rungflow-unit", Key="ckpt/t0001/rung-0.ckpt", Body=b"garbage",
                                  Metadata={"sha256": "0" * 64})
    with pytest.raises(CorruptCheckpoint, match="does not match its checksum"):
        ckpt.load("t0001", 0)


def test_unreachable_endpoint_fails_fast_with_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some credentials must be there, or botocore refuses before it tries the network.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "unreachable-test"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "unreachable-test"))
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store.from_url(f"s3://bucket/p?endpoint_url={endpoint}&connect_timeout=0.5&max_attempts=2&outage_seconds=1.5")
    t0 = time.monotonic()
    with pytest.raises(S3Unavailable) as err:
        store.put("x", b"1")
    elapsed = time.monotonic() - t0
    message = str(err.value)
    assert endpoint in message and "unreachable" in message and "check the endpoint URL" in message
    assert "\n" not in message and "secret" not in message.lower()
    assert 1.5 <= elapsed < 10, elapsed


def test_a_write_during_an_outage_backs_off_and_lands_when_the_server_returns(s3_server) -> None:
    store = S3Store.from_url(s3_server.url("rungflow-unit", "outage", read_timeout=1, outage_seconds=30))
    store.ensure_bucket()
    s3_server.pause()
    threading.Timer(3.0, s3_server.resume).start()
    t0 = time.monotonic()
    try:
        store.put("late.bin", b"still arrives")
    finally:
        s3_server.resume()
    assert time.monotonic() - t0 >= 2.5
    assert store.get("late.bin")[0] == b"still arrives"


def _sweep(tmp_path: Path, checkpoints: str, **overrides):
    cfg = sweep_config(tmp_path, name="s3-sweep", storage={"run_dir": str(tmp_path / "run"), "checkpoints": checkpoints},
                       **overrides)
    return validate(cfg)


@pytest.mark.slow
def test_sweep_checkpoints_in_s3_ride_out_a_stopped_server(prefect_server: str, s3_server, tmp_path: Path) -> None:
    from rungflow.flows.sweep import run_sweep

    client = s3_server.client()
    client.create_bucket(Bucket="rungflow-ckpt")
    cfg = _sweep(tmp_path, s3_server.url("rungflow-ckpt", "sweeps", read_timeout=1, outage_seconds=60),
                 trainable={"kind": "noop", "options": {"sleep_seconds": 0.3}},
                 scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 3, "eta": 3})

    def stop_after_first_checkpoint() -> None:
        # The server stops once the sweep has written its first checkpoint, for 4 s.
        while not client.list_objects_v2(Bucket="rungflow-ckpt", Prefix="sweeps/").get("KeyCount"):
            time.sleep(0.1)
        s3_server.pause()
        time.sleep(4.0)
        s3_server.resume()

    outage = threading.Thread(target=stop_after_first_checkpoint, daemon=True)
    outage.start()
    try:
        result = run_sweep(cfg, tmp_path / "run")
    finally:
        outage.join(timeout=30)
        s3_server.resume()  # never leave the shared server stopped
    assert result["stop_reason"] == "schedule_complete"
    assert result["ledger"]["trials_failed"] == 0 and len(result["events"]) == 6
    # Some trial's checkpoint write waited out the stop (trials sleep 0.3 s; the stop lasted 4 s).
    assert max(e["wall_seconds"] for e in result["events"]) >= 2.5
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket="rungflow-ckpt", Prefix="sweeps/run/")["Contents"]]
    assert "sweeps/run/t0000/rung-0.ckpt" in keys and len(keys) == 6
    # Promoted trials resumed from their S3 checkpoints: each trained only the budget it added.
    resumed = [e for e in result["events"] if e["rung"] > 0]
    assert resumed and all(e["budget_trained"] < e["budget"] for e in resumed)


@pytest.mark.slow
def test_sweep_with_s3_gone_for_good_fails_its_trials_clearly_and_keeps_the_ledger(prefect_server: str, s3_server,
                                                                                   tmp_path: Path) -> None:
    from rungflow.flows.sweep import run_sweep

    cfg = _sweep(tmp_path, s3_server.url("rungflow-ckpt", "gone", connect_timeout=0.5, read_timeout=0.5, outage_seconds=1.5),
                 scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1}, search={"algorithm": "random", "num_trials": 4})
    s3_server.pause()
    try:
        result = run_sweep(cfg, tmp_path / "run")
    finally:
        s3_server.resume()
    errors = [e["error"] for e in result["events"]]
    assert len(errors) == 4 and all("unreachable" in e and s3_server.endpoint in e for e in errors)
    # Every trial is on the ledger, billed, with its error: nothing already recorded is lost.
    ledger = [json.loads(line) for line in (tmp_path / "run/ledger.jsonl").read_text().splitlines()]
    charged = [r["record"] for r in ledger if "record" in r]
    assert sorted(r["trial_id"] for r in charged) == ["t0000", "t0001", "t0002", "t0003"]
    assert all(r["status"] == "failed" and "unreachable" in r["error"] for r in charged)


def test_checkpoint_location_keeps_url_options_through_a_config_round_trip(tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path, storage={"run_dir": str(tmp_path / "run"), "checkpoints": "s3://b/p?read_timeout=0.5",
                                                   "s3": {"endpoint_url": "http://127.0.0.1:9", "outage_seconds": 7}}))
    again = validate(cfg.model_dump(mode="json"))  # what sweep_flow receives
    settings = parse_s3_url(again.storage.checkpoint_location(tmp_path / "run"))
    assert (settings.read_timeout, settings.outage_seconds, settings.endpoint_url, settings.prefix) == (0.5, 7, "http://127.0.0.1:9", "p/run")
