"""The model registry on a local directory and on a real S3 server: versions, pointer, checksums, one-call load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rungflow.tasks.data import DataSpec, load_dataset
from rungflow.tasks.models import fit_model, save_model
from rungflow.tasks.registry import CorruptArtifact, ModelRegistry, RegistryError, load_model
from tests.conftest import free_port

DATA = {"source": "sklearn:iris", "validation_fraction": 0.3, "seed": 0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = load_dataset(DataSpec(**DATA))
    model = fit_model("linear", {"data": DATA}, {}, 20, dataset)
    return save_model(model, tmp_path_factory.mktemp("model") / "m")


def _register(registry: ModelRegistry, model_dir: Path) -> str:
    return registry.register("iris", model_dir, config={"C": 1.0}, metrics={"val_score": 0.9},
                             cost={"gpu_hours": 0.01}, data_fingerprint="abc")


def _round_trip(registry: ModelRegistry, model_dir: Path) -> None:
    assert registry.production("iris") is None
    with pytest.raises(RegistryError, match="no production version"):
        registry.load_model("iris")
    v1 = _register(registry, model_dir)
    v2 = _register(registry, model_dir)
    assert (v1, v2) == ("v0001", "v0002") and registry.versions("iris") == ["v0001", "v0002"]
    registry.promote("iris", v2)
    assert registry.production("iris") == "v0002"
    info = registry.version_info("iris")
    assert info["data_fingerprint"] == "abc" and info["cost"] == {"gpu_hours": 0.01} and "model.json" in info["files"]
    dataset = load_dataset(DataSpec(**DATA))
    model = registry.load_model("iris")
    assert model.evaluate(dataset)["val_score"] > 0.6
    assert np.array_equal(model.predict(dataset.X_valid), registry.load_model("iris", "v0001").predict(dataset.X_valid))


def test_local_registry_round_trip_and_one_call_load(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    registry = ModelRegistry(str(tmp_path / "reg"))
    _round_trip(registry, model_dir)
    monkeypatch.setenv("RUNGFLOW_REGISTRY", str(tmp_path / "reg"))
    assert load_model("iris").family == "linear"
    # The pointer was replaced, never edited in place: no temp files left behind.
    assert not [p for p in (tmp_path / "reg").rglob(".*")]


def test_corrupt_artifact_is_refused(tmp_path: Path, model_dir: Path) -> None:
    registry = ModelRegistry(str(tmp_path / "reg"))
    registry.promote("iris", _register(registry, model_dir))
    target = next((tmp_path / "reg/models/iris/v0001/files").glob("model.skops"))
    target.write_bytes(target.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CorruptArtifact, match=r"artifact model.skops does not match its SHA-256.*refusing"):
        registry.load_model("iris")
    # A version.json edited behind the pointer's back is caught too.
    manifest = tmp_path / "reg/models/iris/v0001/version.json"
    manifest.write_text(manifest.read_text().replace('"abc"', '"zzz"'))
    with pytest.raises(CorruptArtifact, match="version.json does not match"):
        registry.version_info("iris")


def test_s3_registry_round_trip_and_pointer_survives_an_unreachable_endpoint(s3_server, model_dir: Path) -> None:
    registry = ModelRegistry(s3_server.url("rungflow-registry", "team"))
    _round_trip(registry, model_dir)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket="rungflow-registry", Prefix="team/models/iris/")["Contents"]]
    assert "team/models/iris/production.json" in keys and "team/models/iris/v0002/version.json" in keys
    # Promoting through an endpoint that does not answer fails with one clear line; the pointer is untouched.
    dead = ModelRegistry(f"s3://rungflow-registry/team?endpoint_url=http://127.0.0.1:{free_port()}"
                         "&connect_timeout=0.3&max_attempts=1&outage_seconds=0.5")
    with pytest.raises(Exception, match="unreachable"):
        dead.promote("iris", "v0001")
    assert registry.production("iris") == "v0002"
    # A corrupt object in S3 is refused as on disk.
    s3_server.client().put_object(Bucket="rungflow-registry", Key="team/models/iris/v0002/files/model.json", Body=b"{}")
    with pytest.raises(CorruptArtifact, match="model.json does not match"):
        registry.load_model("iris")
    assert json.loads(s3_server.client().get_object(Bucket="rungflow-registry", Key="team/models/iris/production.json")
                      ["Body"].read())["version"] == "v0002"
