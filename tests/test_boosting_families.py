"""XGBoost, LightGBM and CatBoost as families: rounds as the budget, resumed from checkpoints, on the trial's share.

Real libraries on real tables (scikit-learn's bundled ones and a small CSV with a string column), a few dozen
rounds each; the sweep runs on the thread runtime against the real Prefect server.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rungflow
from rungflow.config import validate
from rungflow.flows.sweep import run_sweep
from rungflow.tasks.data import load_dataset
from rungflow.tasks.models import ModelError, fit_model, load_model, save_model
from rungflow.tasks.trainables import TrainableError, TrainRequest, get_trainable_class
from tests.conftest import colour_table, sweep_config

KINDS = ("xgboost", "lightgbm", "catboost")
TABLES = {"binary": {"source": "sklearn:breast_cancer"}, "multiclass": {"source": "sklearn:wine"},
          "regression": {"source": "sklearn:diabetes"}}
# Each library's own model file: never a pickle.
MODEL_FILES = {"xgboost": "model.ubj", "lightgbm": "model.txt", "catboost": "model.cbm"}
# Sampling knobs set below 1, so the tolerance below is exercised where the library restarts its random stream.
SAMPLED = {
    "xgboost": {"learning_rate": 0.1, "max_depth": 4, "subsample": 0.7, "colsample_bytree": 0.7},
    "lightgbm": {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 5, "subsample": 0.7, "colsample_bytree": 0.7},
    "catboost": {"learning_rate": 0.1, "depth": 4, "subsample": 0.7, "colsample_bylevel": 0.7},
}
UNSAMPLED = {kind: {k: v for k, v in config.items() if k in ("learning_rate", "max_depth", "num_leaves", "min_child_samples", "depth")}
             for kind, config in SAMPLED.items()}


def _first_rounds(model, x: np.ndarray, rounds: int) -> np.ndarray:
    """The model's raw output from its first ``rounds`` rounds only, in each library's own terms."""
    if model.family == "xgboost":
        import xgboost as xgb

        types = ["c" if n in model.encoding["categories"] else "q" for n in model.feature_names]
        return model.booster.predict(xgb.DMatrix(x, feature_types=types, enable_categorical=True), iteration_range=(0, rounds),
                                     output_margin=True)
    if model.family == "lightgbm":
        return model.booster.predict(x, num_iteration=rounds, raw_score=True)
    from rungflow.tasks.trainables.catboost_family import _pool

    return model.booster.predict(_pool(x, model.feature_names, model.encoding["categories"]), ntree_end=rounds,
                                 prediction_type="RawFormulaVal")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", list(TABLES))
def test_a_resumed_trial_adds_exactly_the_missing_rounds_and_scores_like_a_scratch_run(kind, task) -> None:
    trainable = get_trainable_class(kind)({"data": TABLES[task]})
    ds = load_dataset(TABLES[task])
    for config in (UNSAMPLED[kind], SAMPLED[kind]):
        first = trainable.fit_to_budget(config, 20, ds, device="cpu", seed=5)
        resumed = trainable.fit_to_budget(config, 60, ds, device="cpu", seed=5, checkpoint=first.checkpoint)
        scratch = trainable.fit_to_budget(config, 60, ds, device="cpu", seed=5)
        assert (first.budget_reached, resumed.budget_reached, resumed.budget_trained) == (20, 60, 40)
        assert resumed.metrics["boosting_rounds"] == 60
        # Continued, not retrained: the checkpoint's 20 rounds are the resumed model's first 20, bit for bit.
        x = np.asarray(ds.X_valid)
        np.testing.assert_array_equal(_first_rounds(resumed.model, x, 20), _first_rounds(first.model, x, 20))
        got, want = resumed.model.evaluate(ds)["val_score"], scratch.model.evaluate(ds)["val_score"]
        if kind == "catboost" or config is UNSAMPLED[kind]:
            # CatBoost's snapshot carries its random stream; without sampling the others draw nothing.
            np.testing.assert_array_equal(resumed.model.validation_scores(ds), scratch.model.validation_scores(ds))
        else:
            assert abs(got - want) <= (0.03 if task != "regression" else 0.05), (got, want)
        assert got > {"binary": 0.9, "multiclass": 0.85, "regression": 0.15}[task]
    # The sweep's call: the rounds it trained are what it reports.
    out = trainable.train(TrainRequest("t", SAMPLED[kind], 20, seed=5))
    more = trainable.train(TrainRequest("t", SAMPLED[kind], 60, checkpoint=out.checkpoint, seed=5))
    assert (more.budget_reached, more.budget_trained) == (60, 40)
    again = trainable.train(TrainRequest("t", SAMPLED[kind], 60, checkpoint=more.checkpoint, seed=5))
    assert again.budget_trained == 0 and again.score == more.score


@pytest.mark.parametrize("kind", KINDS)
def test_saved_models_load_back_in_the_library_format(kind, tmp_path) -> None:
    for task in ("multiclass", "regression"):
        model = fit_model(kind, {"data": TABLES[task]}, SAMPLED[kind], 30)
        path = save_model(model, tmp_path / task)
        assert (path / MODEL_FILES[kind]).is_file() and not list(path.glob("*.pkl"))
        loaded = load_model(path)
        ds = load_dataset(TABLES[task])
        np.testing.assert_allclose(loaded.validation_scores(ds), model.validation_scores(ds), rtol=1e-6)
        assert loaded.family == kind and loaded.budget == 30 and loaded.metrics == model.metrics
        if task == "multiclass":
            frame = pd.DataFrame(ds.X_valid, columns=list(ds.feature_names))
            assert set(loaded.predict(frame)) <= {0, 1, 2} and loaded.predict_proba(frame).shape == (len(frame), 3)
    (path / MODEL_FILES[kind]).write_text("damaged")
    with pytest.raises(ModelError, match=rf"{MODEL_FILES[kind]}: not an? [A-Za-z]+ model \(.+\); save it again$"):
        load_model(path)


@pytest.fixture
def coloured_csv(tmp_path) -> Path:
    """A label that needs a string column: yes when the colour is red XOR x > 0.3."""
    return colour_table(tmp_path / "table.csv", rows=400)


@pytest.mark.parametrize("kind", KINDS)
def test_string_columns_reach_the_library_as_native_categoricals(kind, coloured_csv) -> None:
    data = {"source": str(coloured_csv), "label": "answer"}
    model = fit_model(kind, {"data": data}, {"learning_rate": 0.3}, 40)
    if kind == "xgboost":
        assert model.booster.feature_types == ["q", "c", "q"]
    elif kind == "lightgbm":
        infos = model.booster.dump_model()["feature_infos"]  # a categorical feature lists its categories
        assert [bool(infos[f"Column_{i}"]["values"]) for i in range(3)] == [False, True, False]
    else:
        assert model.booster.get_cat_feature_indices() == [1]
    assert model.metrics["val_accuracy"] > 0.9
    # Raw rows in: a colour never seen in training counts as missing, not as an error.
    rows = pd.DataFrame({"x": [1.0, -1.0, 0.5], "colour": ["red", "blue", "purple"], "z": [1, 2, 3]})
    assert list(model.predict(rows)[:2]) == ["no", "no"] and model.predict_proba(rows).shape == (3, 2)


def test_catboost_continues_across_the_length_where_it_picks_cheaper_settings(coloured_csv) -> None:
    # Below a few hundred iterations CatBoost picks one leaf-estimation step and no feature combinations, and it
    # refuses a snapshot whose settings differ: a rung of 90 rounds promoted to 270 once failed in every automl sweep.
    trainable = get_trainable_class("catboost")({"data": {"source": str(coloured_csv), "label": "answer"}})
    config = {"learning_rate": 0.08, "depth": 6, "subsample": 0.55, "colsample_bylevel": 0.85}
    short = trainable.train(TrainRequest("c", config, 90, seed=0))
    grown = trainable.train(TrainRequest("c", config, 270, checkpoint=short.checkpoint, seed=0))
    assert grown.budget_reached == 270 and grown.budget_trained == 180
    assert grown.score == trainable.train(TrainRequest("c", config, 270, seed=0)).score


@pytest.mark.parametrize("kind", KINDS)
def test_a_trial_holding_a_gpu_this_library_cannot_use_trains_on_cpu_with_one_line(kind, caplog) -> None:
    trainable = get_trainable_class(kind)({"data": TABLES["binary"]})
    with caplog.at_level(logging.WARNING, logger="rungflow.trainables.boosting"):
        out = trainable.train(TrainRequest("g", UNSAMPLED[kind], 20, device="cuda", seed=1))
    lines = [r.getMessage() for r in caplog.records if r.name == "rungflow.trainables.boosting"]
    assert len(lines) == 1 and lines[0].startswith(f"{kind}: the trial holds cuda, but ") and lines[0].endswith("training on CPU")
    assert out.metrics["on_gpu"] == 0.0
    assert out.score == trainable.train(TrainRequest("g", UNSAMPLED[kind], 20, seed=1)).score


@pytest.mark.parametrize("kind", KINDS)
def test_the_library_runs_on_the_trials_cpu_share(kind) -> None:
    trainable = get_trainable_class(kind)({"data": TABLES["binary"]})
    ds = load_dataset(TABLES["binary"])
    for cpus, threads in ((2, 2), (0.5, 1)):
        booster = trainable.fit(UNSAMPLED[kind], 10, ds, cpus=cpus).booster
        if kind == "xgboost":
            used = int(json.loads(booster.save_config())["learner"]["generic_param"]["nthread"])
        elif kind == "lightgbm":
            used = booster.params["num_threads"]
        else:
            used = booster.get_params()["thread_count"]
        assert used == threads


@pytest.mark.parametrize(
    ("kind", "config", "match"),
    [
        ("xgboost", {"subsample": 1.5}, r"xgboost: config subsample=1.5 must be in \(0, 1\]"),
        ("lightgbm", {"learning_rate": 0}, r"lightgbm: config learning_rate=0.0 must be positive"),
        ("catboost", {"max_depth": 4}, r"catboost: unknown config keys \['max_depth'\]; this family takes learning_rate, depth"),
        ("xgboost", {"max_depth": "deep"}, r"xgboost: config value max_depth='deep' must be a number"),
    ],
)
def test_bad_configs_and_checkpoints_are_one_line_errors(kind, config, match) -> None:
    trainable = get_trainable_class(kind)({"data": TABLES["binary"]})
    with pytest.raises(TrainableError, match=match):
        trainable.train(TrainRequest("b", config, 10))
    with pytest.raises(TrainableError, match=f"{kind}: cannot resume from checkpoint"):
        trainable.train(TrainRequest("b", {}, 10, checkpoint=b"not a model"))
    from rungflow.budgets.space import FloatParam, SearchSpace

    with pytest.raises(ValueError, match=rf"space.eta: {kind} has no such parameter; use some of learning_rate"):
        trainable.check_space(SearchSpace((FloatParam("eta", 0.01, 0.3),)))


@pytest.mark.slow
def test_a_mixed_sweep_over_the_three_boosters_continues_promoted_trials(prefect_server: str, tmp_path: Path) -> None:
    cfg = validate(sweep_config(
        tmp_path, name="boosters",
        trainable={"kind": "mixed", "options": {"data": TABLES["multiclass"], "families": list(KINDS)}},
        search={"algorithm": "random", "seed": 2},
        scheduler={"kind": "sha", "min_budget": 1, "max_budget": 9, "eta": 3},
        runtime={"kind": "thread", "max_concurrent": 2, "cpus_per_trial": 1},
    ))
    result = run_sweep(cfg, tmp_path / "run")
    assert result["stop_reason"] == "schedule_complete"
    events = result["events"]
    assert len(events) == 9 + 3 + 1 and all(e["status"] == "completed" for e in events)
    assert {config["family"] for config in result["trials"].values()} == set(KINDS)
    previous = {(e["trial_id"], e["rung"]): e["budget"] for e in events}
    for e in events:
        assert e["metrics"]["family_budget"] == 10 * e["budget"] and e["metrics"]["on_gpu"] == 0.0
        if e["rung"] > 0:  # promoted trials added rounds to their checkpoints
            assert e["budget_trained"] == e["budget"] - previous[(e["trial_id"], e["rung"] - 1)]
    best = result["best"]
    model = rungflow.load_model(tmp_path / "run")
    assert model.family == best["config"]["family"] and model.budget == 9
    # Refitted from scratch: the same model, up to the sampling noise of a resumed xgboost or lightgbm trial.
    assert result["best_model"]["metrics"]["val_score"] == pytest.approx(best["score"], abs=0.03)
