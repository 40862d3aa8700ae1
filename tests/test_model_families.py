"""Tabular data in, model families trained for real at small budgets, models saved and loaded back."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from rungflow.tasks.data import DataError, DataSpec, load_dataset, read_table
from rungflow.tasks.models import ModelError, fit_model, load_model, save_model
from rungflow.tasks.trainables import TrainableError, TrainRequest, get_trainable_class, known_kinds
from rungflow.tasks.trainables.external import AUTOGLUON, AUTOSKLEARN
from tests.conftest import colour_table

BC = {"source": "sklearn:breast_cancer"}
DIABETES = {"source": "sklearn:diabetes"}


# --- data ------------------------------------------------------------------------------------------


def test_bundled_datasets_split_seeded_and_infer_the_task() -> None:
    for name, task, n_classes in [("breast_cancer", "classification", 2), ("wine", "classification", 3),
                                  ("iris", "classification", 3), ("digits", "classification", 10),
                                  ("diabetes", "regression", 0)]:
        ds = load_dataset({"source": f"sklearn:{name}"})
        assert ds.task == task and ds.n_classes == n_classes
        assert len(ds.X_valid) == pytest.approx(0.2 * (len(ds.X_train) + len(ds.X_valid)), abs=1)
        assert len(ds.fingerprint) == 64 and ds.schema["target"]
    ds = load_dataset(BC)
    assert load_dataset(BC) is ds  # cached per process
    other = load_dataset({**BC, "seed": 1})
    assert not np.array_equal(other.X_valid, ds.X_valid) and other.fingerprint == ds.fingerprint
    # Stratified: the class balance of the split follows the table's.
    assert abs(ds.y_valid.mean() - ds.y_train.mean()) < 0.02


@pytest.fixture
def mixed_csv(tmp_path):
    return colour_table(tmp_path / "table.csv", rows=240)


def test_csv_with_categories_missing_values_and_string_labels(mixed_csv, tmp_path) -> None:
    ds = load_dataset({"source": str(mixed_csv), "label": "answer"})
    assert ds.task == "classification" and ds.classes == ("no", "yes")
    assert ds.categories == {"colour": ("blue", "green", "red")} and ds.feature_names == ("x", "colour", "z")
    assert np.isnan(ds.X_train[:, 0]).any()
    model = fit_model("hgb", {"data": {"source": str(mixed_csv), "label": "answer"}}, {"learning_rate": 0.2}, 40)
    assert model.metrics["val_accuracy"] > 0.85
    # Raw rows in: categories encoded as at training time; an unseen category is treated as missing.
    rows = pd.DataFrame({"x": [1.0, -1.0, 0.5], "colour": ["red", "blue", "purple"], "z": [1, 2, 3]})
    assert set(model.predict(rows)) <= {"yes", "no"} and model.predict_proba(rows).shape == (3, 2)
    # Parquet gives the same table, so the same fingerprint.
    parquet = tmp_path / "table.parquet"
    read_table(str(mixed_csv)).to_parquet(parquet)
    assert load_dataset({"source": str(parquet), "label": "answer"}).fingerprint == ds.fingerprint
    # A changed file is re-read, not served from the cache.
    frame = read_table(str(mixed_csv))
    frame.loc[0, "z"] = 99
    frame.to_csv(mixed_csv, index=False)
    assert load_dataset({"source": str(mixed_csv), "label": "answer"}).fingerprint != ds.fingerprint


@pytest.mark.parametrize(
    ("spec", "content", "match"),
    [
        ({"source": "{d}/missing.csv", "label": "y"}, None, r"data.source = .*missing.csv': file does not exist"),
        ({"source": "{d}/t.csv", "label": "y"}, 'a,y\n1,2\n3,4,5,6\n"x', r"data.source = .*malformed CSV"),
        ({"source": "{d}/t.csv", "label": "nope"}, "a,y\n1,0\n2,1\n3,0\n4,1\n", r"data.label = 'nope': no such column.*\['a', 'y'\]"),
        ({"source": "{d}/t.csv", "label": "y"}, "", r"the file is empty"),
        ({"source": "{d}/t.csv", "label": "y"}, "a,y\n", r"the table is empty"),
        ({"source": "{d}/t.csv", "label": "y"}, "a,y\n1,1\n2,1\n3,1\n4,1\n", r"only one class"),
        ({"source": "{d}/t.csv", "label": "y"}, "y\n1\n2\n3\n4\n", r"only the label column"),
        ({"source": "{d}/t.csv"}, "a,y\n", r"data.label is required"),
        ({"source": "sklearn:mnist"}, None, r"unknown bundled dataset.*sklearn:breast_cancer"),
        ({"source": "{d}/t.txt", "label": "y"}, None, r"unknown format; use a .csv or .parquet"),
        ({"source": "sklearn:iris", "validation_fraction": 1.5}, None, r"data.validation_fraction"),
        ({"source": "sklearn:iris", "colour": 1}, None, r"data.colour: unknown field"),
        ({"source": "{d}/t.parquet", "label": "y"}, "not parquet", r"not a readable Parquet file"),
    ],
)
def test_bad_data_is_a_one_line_error_naming_the_field(tmp_path, spec, content, match) -> None:
    spec = {k: v.format(d=tmp_path) if isinstance(v, str) else v for k, v in spec.items()}
    if content is not None:
        (tmp_path / spec["source"].rsplit("/", 1)[1]).write_text(content)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(spec)
    assert "\n" not in str(info.value)


def test_s3_source_unreachable_endpoint_is_a_clear_error(monkeypatch) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DataError, match=r"data.source = 's3://bucket/t.csv': cannot reach S3"):
        load_dataset({"source": "s3://bucket/t.csv", "label": "y"})
    with pytest.raises(DataError, match="needs a bucket and a key"):
        DataSpec.parse({"source": "s3://bucket.csv", "label": "y"})


def test_s3_csv_and_parquet_read_through_boto3(s3_server, mixed_csv) -> None:
    # s3_server: a real SeaweedFS S3 gateway; it sets AWS_ENDPOINT_URL and keys.
    import io

    import boto3

    client = boto3.session.Session().client("s3")
    client.create_bucket(Bucket="rungflow-data-8")
    client.put_object(Bucket="rungflow-data-8", Key="t/table.csv", Body=mixed_csv.read_bytes())
    buf = io.BytesIO()
    read_table(str(mixed_csv)).to_parquet(buf)
    client.put_object(Bucket="rungflow-data-8", Key="t/table.parquet", Body=buf.getvalue())
    local = load_dataset({"source": str(mixed_csv), "label": "answer"})
    for key in ("t/table.csv", "t/table.parquet"):
        remote = load_dataset({"source": f"s3://rungflow-data-8/{key}", "label": "answer"})
        assert remote.fingerprint == local.fingerprint
        np.testing.assert_array_equal(remote.X_valid, local.X_valid)
    with pytest.raises(DataError, match="no such object in bucket 'rungflow-data-8'"):
        load_dataset({"source": "s3://rungflow-data-8/missing.csv", "label": "answer"})


def test_trainable_options_report_bad_data_by_field() -> None:
    with pytest.raises(ValidationError, match="data.label is required"):
        get_trainable_class("hgb")({"data": {"source": "x.csv"}})
    with pytest.raises(TrainableError, match=r"trainable.options.data.source = .*file does not exist"):
        get_trainable_class("hgb")({"data": {"source": "/nonexistent/x.csv", "label": "y"}}).train(TrainRequest("t", {}, 10))


# --- scikit-learn and torch families ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hgb", "random_forest", "linear", "torch_mlp"])
@pytest.mark.parametrize("data", [BC, DIABETES], ids=["classification", "regression"])
def test_family_trains_resumes_and_round_trips(kind, data, tmp_path) -> None:
    cls = get_trainable_class(kind)
    trainable = cls({"data": data})
    lo = cls.default_budget[0]
    config = trainable.default_space().sample(np.random.default_rng(3))
    if kind == "torch_mlp":
        config.update(lr=3e-3, hidden_units=32, batch_size=32, dropout=0.0)
    first = trainable.train(TrainRequest("t1", config, lo, seed=5))
    resumed = trainable.train(TrainRequest("t1", config, 3 * lo, checkpoint=first.checkpoint, seed=5))
    scratch = trainable.train(TrainRequest("t1", config, 3 * lo, seed=5))
    assert resumed.score == scratch.score and math.isfinite(resumed.score)
    assert resumed.budget_reached == 3 * lo
    if kind != "linear":  # linear refits on a larger share of rows; the others continue
        assert resumed.budget_trained == 2 * lo
    key = "val_accuracy" if data is BC else "val_r2"
    assert resumed.metrics[key] == resumed.score
    assert resumed.score > (0.85 if data is BC else 0.0)
    # The model fit_model returns is the one the trial scored, and survives a save/load unchanged.
    model = fit_model(kind, {"data": data}, config, 3 * lo, seed=trainable.seed_for(5, "t1"))
    assert model.metrics["val_score"] == scratch.score and model.family == kind
    loaded = load_model(save_model(model, tmp_path / "m"))
    ds = load_dataset(data)
    np.testing.assert_array_equal(loaded.predict(ds.X_valid), model.predict(ds.X_valid))
    if data is BC:
        np.testing.assert_array_equal(loaded.predict_proba(ds.X_valid), model.predict_proba(ds.X_valid))
        assert set(loaded.predict(ds.X_valid)) <= {0, 1}
    else:
        with pytest.raises(ModelError, match="regression"):
            loaded.predict_proba(ds.X_valid)


def test_loading_refuses_untrusted_objects_and_damaged_dirs(tmp_path) -> None:
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    model = fit_model("linear", {"data": BC}, {"C": 1.0}, 100)
    path = save_model(model, tmp_path / "m")
    (path / "model.skops").write_bytes(sio.dumps(FunctionTransformer(func=os.system)))
    with pytest.raises(ModelError, match=r"outside the trusted list \['posix.system'\]"):
        load_model(path)
    with pytest.raises(ModelError, match="holds no saved model"):
        load_model(tmp_path / "empty")
    (path / "model.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(path)


def test_a_saved_mlp_loads_in_a_process_that_never_imported_its_family(tmp_path) -> None:
    import json
    import subprocess
    import sys

    config = {"lr": 3e-3, "hidden_units": 16, "num_layers": 1, "batch_size": 32, "dropout": 0.0, "weight_decay": 1e-4}
    model = fit_model("torch_mlp", {"data": BC}, config, 1)
    path = save_model(model, tmp_path / "mlp")
    expected = model.predict(load_dataset(BC).X_valid).tolist()
    # The model module names no family: the manifest's family is looked up among the trainables, and
    # importing it registers the torch backend.
    code = (
        "import json, sys\n"
        "from rungflow.tasks.data import load_dataset\n"
        "from rungflow.tasks.models import BACKENDS, load_model\n"
        "assert 'torch' not in BACKENDS and 'rungflow.tasks.trainables.torch_mlp' not in sys.modules\n"
        f"model = load_model({str(path)!r})\n"
        f"print(json.dumps(model.predict(load_dataset({BC!r}).X_valid).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == expected


def test_a_backend_no_family_provides_is_one_line(tmp_path) -> None:
    import json

    path = save_model(fit_model("linear", {"data": BC}, {"C": 1.0}, 100), tmp_path / "m")
    manifest = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**manifest, "backend": "onnx", "family": "nope"}))
    with pytest.raises(ModelError, match=r"backend 'onnx' is not available here \(.*sklearn.*\); install its extra"):
        load_model(path)


def test_torch_mlp_keeps_the_bundled_shorthand_and_rejects_both_sources() -> None:
    legacy = get_trainable_class("torch_mlp")({"dataset": "iris"})
    assert legacy.data_spec().source == "sklearn:iris" and legacy.data_spec().validation_fraction == 0.25
    with pytest.raises(ValidationError, match="either data"):
        get_trainable_class("torch_mlp")({"dataset": "iris", "data": BC})


# --- AutoML families in worker interpreters (AutoGluon: this one; auto-sklearn: its own) ------------------------------------------------------


@pytest.mark.skipif(not AUTOGLUON.available(), reason=AUTOGLUON.missing_reason())
def test_autogluon_fits_in_seconds_keeps_its_leaderboard_and_round_trips(tmp_path) -> None:
    import json

    # The trial path (regression): the leaderboard is the checkpoint, its scores are in the metrics.
    trainable = get_trainable_class("autogluon")({"data": DIABETES, "hyperparameters": {"GBM": {}, "RF": {}}})
    out = trainable.train(TrainRequest("ag", {}, 3))
    assert out.score > 0.0 and out.budget_reached == 3 and out.metrics["val_r2"] == out.score
    board = json.loads(out.checkpoint)
    assert board["time_limit"] == 3 and board["leaderboard"] and out.metrics["ag_models"] >= 1
    assert any(k.startswith("ag_score_val/") for k in out.metrics)
    # The model path (classification): saved as AutoGluon's own directory, predictions unchanged after loading.
    model = fit_model("autogluon", {"data": BC, "hyperparameters": {"GBM": {}}}, {}, 3)
    assert model.metrics["val_accuracy"] > 0.85 and model.leaderboard
    loaded = load_model(save_model(model, tmp_path / "ag"))
    ds = load_dataset(BC)
    np.testing.assert_allclose(loaded.predict_proba(ds.X_valid), model.predict_proba(ds.X_valid))
    assert loaded.family == "autogluon" and loaded.leaderboard == model.leaderboard


@pytest.mark.skipif(not AUTOSKLEARN.available(), reason=AUTOSKLEARN.missing_reason())
def test_autosklearn_fits_in_its_own_environment_and_round_trips(tmp_path) -> None:
    model = fit_model("autosklearn", {"data": BC}, {}, 45)
    assert model.metrics["val_accuracy"] > 0.85
    loaded = load_model(save_model(model, tmp_path / "askl"))
    ds = load_dataset(BC)
    np.testing.assert_array_equal(loaded.predict(ds.X_valid), model.predict(ds.X_valid))


def test_missing_automl_environment_fails_the_trial_with_the_build_command(tmp_path) -> None:
    trainable = get_trainable_class("autosklearn")({"data": BC, "env": str(tmp_path / "none")})
    with pytest.raises(TrainableError, match=r"auto-sklearn environment not built at .*none; run .*autosklearn-env.sh"):
        trainable.train(TrainRequest("a", {}, 30))


# --- mixed ----------------------------------------------------------------------------------------


def test_mixed_dispatches_on_family_with_scaled_budgets() -> None:
    assert {"hgb", "random_forest", "linear", "autogluon", "autosklearn", "mixed"} <= set(known_kinds())
    mixed = get_trainable_class("mixed")({"data": BC, "families": {"hgb": {}, "linear": {"C": {"type": "float", "low": 0.1, "high": 10}}}})
    space = mixed.default_space()
    assert space.names[0] == "family" and "hgb.learning_rate" in space.names and space["linear.C"].high == 10
    assert space["hgb.learning_rate"].when == (("family", ("hgb",)),)
    out = mixed.train(TrainRequest("m", {"family": "hgb", "hgb.learning_rate": 0.1}, 2))
    assert out.metrics["family_budget"] == 20 and out.budget_reached == 2
    more = mixed.train(TrainRequest("m", {"family": "hgb", "hgb.learning_rate": 0.1}, 6, checkpoint=out.checkpoint))
    assert more.budget_trained == 4 and more.metrics["family_budget"] == 60
    with pytest.raises(TrainableError, match="not among trainable.options.families"):
        mixed.train(TrainRequest("m", {"family": "random_forest"}, 2))
    with pytest.raises(ValidationError, match="unknown families"):
        get_trainable_class("mixed")({"data": BC, "families": ["gbdt"]})
