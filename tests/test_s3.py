"""The S3 layer and the S3 checkpoint store against a real SeaweedFS server: round trips, checksums, outages."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rungflow.config import ConfigError, validate
from tasks.checkpoints import CorruptCheckpoint, LocalCheckpointStore, S3CheckpointStore, open_store
from tasks.s3 import S3Error, S3NotFound, S3Store, S3Unavailable, parse_s3_url
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
    assert isinstance(ckpt, S3CheckpointStore) and isinstance(LocalCheckpointStore(location), S3CheckpointStore)
    ckpt.save("t0001", 0, b"weights")
    assert ckpt.load("t0001", 0) == b"weights"
    assert ckpt.load("t0001", 1) is None
    # Another writer replaces the object but not its checksum: refused on load.
    s3_server.client().put_object(Bucket="rungflow-unit", Key="ckpt/t0001/rung-0.ckpt", Body=b"garbage",
                                  Metadata={"sha256": "0" * 64})
    with pytest.raises(CorruptCheckpoint, match="does not match its checksum"):
        ckpt.load("t0001", 0)


def test_unreachable_endpoint_fails_fast_with_one_clear_line() -> None:
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
