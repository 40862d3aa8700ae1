"""AutoGluon fit/predict, run in the AutoGluon environment (standard library, numpy, pandas, autogluon only).

Usage: python autogluon_worker.py WORKDIR. Reads WORKDIR/request.json and WORKDIR/data.npz, writes
WORKDIR/result.json and WORKDIR/scores.npy (class probabilities or predictions for ``X_eval``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from worker_protocol import serve

LABEL = "__rungflow_label__"


def frame(x: np.ndarray, request: dict) -> pd.DataFrame:
    df = pd.DataFrame(x, columns=request["feature_names"])
    for col, cats in request.get("categories", {}).items():
        codes = df[col].to_numpy()
        codes = np.where(np.isnan(codes), -1, codes).astype(int)
        df[col] = pd.Categorical.from_codes(codes, categories=[str(c) for c in cats])
    return df


def scores(predictor, df: pd.DataFrame, request: dict) -> np.ndarray:
    if request["task"] == "classification":
        proba = predictor.predict_proba(df, as_multiclass=True)
        # Columns are the integer class indices; one missing from the training split gets probability 0.
        proba = proba.reindex(columns=list(range(request["n_classes"])), fill_value=0.0)
        return proba.to_numpy(dtype=np.float64)
    return predictor.predict(df).to_numpy(dtype=np.float64)


def fit(workdir: Path, request: dict, data) -> dict:
    from autogluon.tabular import TabularPredictor

    train = frame(data["X_train"], request)
    train[LABEL] = data["y_train"] if request["task"] == "regression" else data["y_train"].astype(int)
    if request["task"] == "classification":
        problem = "binary" if request["n_classes"] == 2 else "multiclass"
        metric = "accuracy"
    else:
        problem, metric = "regression", "r2"
    kwargs = {
        "time_limit": float(request["time_limit"]),
        "presets": request.get("presets") or "medium_quality",
        "num_cpus": request.get("num_cpus") or "auto",
        "num_gpus": request.get("num_gpus", 0),
    }
    if request.get("hyperparameters") is not None:
        kwargs["hyperparameters"] = request["hyperparameters"]
    started = time.perf_counter()
    predictor = TabularPredictor(label=LABEL, problem_type=problem, eval_metric=metric, path=str(workdir / "model"),
                                 verbosity=0).fit(train, **kwargs)
    fit_seconds = time.perf_counter() - started
    valid = frame(data["X_eval"], request)
    np.save(workdir / "scores.npy", scores(predictor, valid, request))
    board = predictor.leaderboard(silent=True)
    keep = [c for c in ("model", "score_val", "fit_time", "pred_time_val", "stack_level") if c in board.columns]
    leaderboard = json.loads(board[keep].to_json(orient="records"))
    return {
        "fit_seconds": fit_seconds,
        "best_model": predictor.model_best,
        "n_models": len(leaderboard),
        "leaderboard": leaderboard,
    }


def predict(workdir: Path, request: dict, data) -> dict:
    from autogluon.tabular import TabularPredictor

    # Loaded only from a directory rungflow itself wrote (AutoGluon pickles internally).
    predictor = TabularPredictor.load(request["model_dir"], verbosity=0, require_py_version_match=False)
    np.save(workdir / "scores.npy", scores(predictor, frame(data["X_eval"], request), request))
    return {}


if __name__ == "__main__":
    serve({"fit": fit, "predict": predict})
