"""``rungflow automl`` / ``rungflow.automl`` / ``rungflow predict`` on a real table, the greedy ensemble, and bad input.

Real runs: scikit-learn's breast_cancer written to CSV and Parquet, real training on the thread runtime, a real
Prefect server, a few seconds of time limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rungflow
from rungflow.budgets.ensemble import select_ensemble
from rungflow.config import ConfigError
from rungflow.flows.automl import automl_config
from rungflow.flows.cli import main

FAMILIES = "hgb,random_forest,linear"


def _table() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    return frame


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one error line of a CLI call that must refuse before spending anything."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err, err
    return " ".join(err.split())


@pytest.fixture(scope="module")
def csv_run(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real ``rungflow automl`` run from a CSV with an identifier column the run must leave out."""
    root = tmp_path_factory.mktemp("automl")
    frame = _table()
    frame["patient"] = [f"p{i:05d}" for i in range(len(frame))]
    frame.to_csv(root / "train.csv", index=False)
    frame.to_parquet(root / "train.parquet", index=False)
    code = main(["automl", str(root / "train.csv"), "--label", "diagnosis", "--time-limit", "5", "--runtime", "thread",
                 "--families", FAMILIES, "--out", str(root / "run"), "--seed", "1"])
    assert code == 0
    return {"root": root, "run": root / "run", "frame": frame}


def test_cli_automl_then_predict(csv_run: dict, capsys: pytest.CaptureFixture[str]) -> None:
    run, root, frame = csv_run["run"], csv_run["root"], csv_run["frame"]
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    # An ordinary sweep: mixed families, Hyperband, the time limit as its deadline, the same run directory.
    assert config["trainable"]["kind"] == "mixed" and config["scheduler"]["kind"] == "hyperband"
    assert config["budget"]["deadline"] == 5 and config["trainable"]["options"]["data"]["drop"] == ["patient"]
    assert (run / "ledger.jsonl").is_file() and (run / "anytime.png").is_file()
    assert result["best"]["score"] > 0.85 and result["stop_reason"] in ("deadline", "schedule_complete")
    saved = result["best_model"]
    assert saved["kind"] in ("ensemble", "single") and (saved["kind"] == "ensemble") == saved["ensemble"]["saved"]

    out = root / "predictions.csv"
    assert main(["predict", str(run), str(root / "train.parquet"), "--out", str(out)]) == 0
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["diagnosis", "proba_benign", "proba_malignant"]
    assert len(predictions) == len(frame)
    assert np.allclose(predictions[["proba_benign", "proba_malignant"]].sum(axis=1), 1.0)
    assert (predictions["diagnosis"] == frame["diagnosis"]).mean() > 0.9
    capsys.readouterr()

    # A predict table whose columns are not the training table's: both kinds named, nothing written.
    frame.drop(columns=["mean radius"]).assign(extra=1).to_csv(root / "bad.csv", index=False)
    line = _error(capsys, "predict", str(run), str(root / "bad.csv"), "--out", str(root / "bad-predictions.csv"))
    assert "missing 'mean radius'" in line and "not in the training table: 'extra'" in line
    assert not (root / "bad-predictions.csv").exists()


def test_trials_keep_validation_predictions_and_load_model_reads_a_run_dir(csv_run: dict) -> None:
    from rungflow.tasks.checkpoints import load_validation_predictions, open_store
    from rungflow.tasks.data import load_dataset

    run = csv_run["run"]
    result = json.loads((run / "result.json").read_text())
    best = result["best"]
    kept = load_validation_predictions(open_store(run / "checkpoints"), best["trial_id"], best["rung"])
    config = json.loads((run / "config.json").read_text())
    dataset = load_dataset(config["trainable"]["options"]["data"])
    assert kept.shape == (len(dataset.y_valid), 2)
    model = rungflow.load_model(run)  # the run directory, not its best_model/
    assert model.feature_names == list(dataset.feature_names) and "patient" not in model.feature_names
    if result["best_model"]["kind"] == "single":
        # The kept predictions are the ones the trial scored: the refitted winner predicts them again.
        assert np.allclose(model.validation_scores(dataset), kept, atol=1e-9)
    else:
        ensemble = result["best_model"]["ensemble"]
        assert ensemble["gain"] > 0 and len(ensemble["members"]) >= 2
        assert ensemble["refit_max_abs_diff"] < 1e-6
        assert model.metrics["val_score"] == pytest.approx(ensemble["val_score"])


def test_python_automl_on_a_dataframe(prefect_server: str, tmp_path: Path) -> None:
    frame = _table()
    result = rungflow.automl(frame, label="diagnosis", time_limit=4, runtime="thread", families=["hgb", "linear"],
                             out=tmp_path / "run", metric="log_loss")
    assert isinstance(result, rungflow.SweepResult) and result.run_dir == tmp_path / "run"
    assert result.metric.name == "val_log_loss" and result.metric.mode == "min"
    scored = next(e for e in result.events if e["trial_id"] == result.best.trial_id and e["rung"] == result.best.rung)
    assert result.best.score == scored["metrics"]["val_log_loss"]  # trials report the metric asked for
    assert (tmp_path / "run" / "table.parquet").is_file()
    model = rungflow.load_model(result.run_dir)
    assert (model.predict(frame.drop(columns=["diagnosis"])) == frame["diagnosis"]).mean() > 0.9
    assert "ensemble" in result.best_model.raw


def test_greedy_ensemble_beats_its_best_member_on_a_hand_made_case() -> None:
    # Three classifiers, each wrong on a different row; any two averaged are right on all three.
    y = np.zeros(3, dtype=int)

    def proba(first: list[float]) -> np.ndarray:
        return np.stack([first, 1 - np.asarray(first)], axis=1)

    candidates = [proba([0.4, 0.9, 0.9]), proba([0.9, 0.4, 0.9]), proba([0.9, 0.9, 0.4])]
    selection = select_ensemble(candidates, lambda p: float((p.argmax(axis=1) == y).mean()), size=25, seed=0)
    assert selection.best_single_score == pytest.approx(2 / 3) and selection.score == 1.0
    assert selection.gain == pytest.approx(1 / 3) and len(selection.members) == 2
    assert sum(selection.weights) == pytest.approx(1.0)
    # The best prefix is kept: rounds that could not improve on 1.0 are not added.
    assert len(selection.trajectory) == 2
    # With one candidate clearly best and the others only worse, the ensemble is that one alone.
    alone = select_ensemble([proba([0.9, 0.9, 0.9]), proba([0.1, 0.1, 0.1])], lambda p: -float(np.abs(p[:, 0] - 1).mean()))
    assert alone.members == (0,) and alone.gain == 0.0
    with pytest.raises(ValueError, match="size"):
        select_ensemble(candidates, lambda p: 0.0, size=0)


def test_an_ensemble_model_saves_loads_and_predicts_like_any_model(tmp_path: Path) -> None:
    from rungflow.tasks.data import load_dataset
    from rungflow.tasks.models import EnsembleModel, fit_model, save_model

    options = {"data": {"source": "sklearn:wine"}}
    dataset = load_dataset(options["data"])
    hgb = fit_model("hgb", options, {"learning_rate": 0.1}, 20, dataset)
    linear = fit_model("linear", options, {"C": 1.0}, 100, dataset)
    ensemble = EnsembleModel([hgb, linear], [3, 1], family="ensemble", encoding=dataset.encoding())
    save_model(ensemble, tmp_path / "model")
    loaded = rungflow.load_model(tmp_path / "model")
    assert isinstance(loaded, EnsembleModel) and loaded.weights == [0.75, 0.25]
    expected = 0.75 * hgb.predict_proba(dataset.X_valid) + 0.25 * linear.predict_proba(dataset.X_valid)
    assert np.allclose(loaded.predict_proba(dataset.X_valid), expected)
    assert list(loaded.predict(dataset.X_valid)) == list(np.asarray(dataset.classes, dtype=object)[expected.argmax(axis=1)])


@pytest.fixture
def table() -> pd.DataFrame:
    return _table()


def test_bad_input_is_one_line_before_anything_is_spent(table: pd.DataFrame, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    out = str(tmp_path / "run")
    line = _error(capsys, "automl", str(path), "--label", "Diagnosis", "--out", out)
    assert "--label 'Diagnosis': no such column" in line and "did you mean 'diagnosis'" in line

    table.assign(diagnosis="benign").to_csv(path, index=False)
    line = _error(capsys, "automl", str(path), "--label", "diagnosis", "--out", out)
    assert "one class ('benign')" in line and "two or more" in line

    table.head(30).to_csv(path, index=False)
    line = _error(capsys, "automl", str(path), "--label", "diagnosis", "--out", out)
    assert "30 labelled rows" in line and "needs at least 50" in line and "add rows" in line

    table.to_csv(path, index=False)
    line = _error(capsys, "automl", str(path), "--label", "diagnosis", "--metric", "rmse", "--out", out)
    assert "--metric rmse" in line and "use accuracy or log_loss" in line
    line = _error(capsys, "automl", str(path), "--label", "diagnosis", "--max-cost", "5", "--out", out)
    assert "--price-per-gpu-hour" in line
    line = _error(capsys, "automl", str(tmp_path / "missing.csv"), "--label", "diagnosis", "--out", out)
    assert "file does not exist" in line
    line = _error(capsys, "automl", str(path), "--label", "diagnosis", "--families", "hgb,xgb_typo", "--out", out)
    assert "xgb_typo" in line
    assert not (tmp_path / "run" / "ledger.jsonl").exists()  # nothing ran, nothing was billed


def test_unusable_columns_are_left_out_with_a_reason(table: pd.DataFrame, tmp_path: Path) -> None:
    n = len(table)
    table = table.assign(
        empty=np.nan,
        admitted=pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        notes=[f"patient {i} was seen by the clinic on a weekday" for i in range(n)],
        record=[f"r-{i:06d}" for i in range(n)],
        ward=["north", "south", "east"] * (n // 3) + ["north"] * (n % 3),
    )
    plan = automl_config(table, "diagnosis", out=tmp_path / "run", runtime="thread")
    dropped = plan.config.trainable.options["data"]["drop"]
    assert dropped == ["empty", "admitted", "notes", "record"]  # the small categorical 'ward' stays
    notes = " ".join(plan.notes)
    assert "empty in every row" in notes and "dates" in notes and "free text" in notes and "identifier" in notes
    with pytest.raises(ConfigError, match="no column besides 'diagnosis'"):
        automl_config(table[["diagnosis", "empty", "record"]], "diagnosis", out=tmp_path / "run2")
