"""auto-sklearn fit/predict, run in the auto-sklearn environment (standard library, numpy, auto-sklearn only).

Usage: python autosklearn_worker.py WORKDIR. Reads WORKDIR/request.json and WORKDIR/data.npz, writes
WORKDIR/result.json and WORKDIR/scores.npy (class probabilities or predictions for ``X_eval``); the
fitted ensemble is pickled to WORKDIR/model/autosklearn.pkl. auto-sklearn has no other save format,
so that pickle is only ever read back here, from directories rungflow itself wrote.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
from worker_protocol import serve


def scores(automl, x, request):
    if request["task"] == "classification":
        proba = np.asarray(automl.predict_proba(x), dtype=np.float64)
        # Columns follow the classes seen in training; place them at their integer class index.
        out = np.zeros((len(x), request["n_classes"]))
        classes = getattr(automl, "classes_", None)
        classes = list(range(proba.shape[1])) if classes is None else [int(c) for c in classes]
        out[:, classes] = proba
        return out
    return np.asarray(automl.predict(x), dtype=np.float64)


def fit(workdir, request, data):
    import autosklearn.classification
    import autosklearn.metrics
    import autosklearn.regression

    budget = int(request["time_limit"])
    kwargs = dict(
        time_left_for_this_task=budget,
        # Half the budget per model run: on a loaded machine a third left the first model no time to finish.
        per_run_time_limit=max(10, budget // 2),
        seed=int(request.get("seed", 1)) % (2**31 - 1) or 1,
        n_jobs=1,
        memory_limit=int(request.get("memory_limit_mb") or 3072),
        tmp_folder=str(workdir / "tmp"),
        delete_tmp_folder_after_terminate=True,
    )
    categorical = set(request.get("categories", {}))
    feat_type = ["Categorical" if name in categorical else "Numerical" for name in request["feature_names"]]
    if request["task"] == "classification":
        automl = autosklearn.classification.AutoSklearnClassifier(metric=autosklearn.metrics.accuracy, **kwargs)
        y = data["y_train"].astype(int)
    else:
        automl = autosklearn.regression.AutoSklearnRegressor(metric=autosklearn.metrics.r2, **kwargs)
        y = data["y_train"].astype(np.float64)
    started = time.perf_counter()
    automl.fit(data["X_train"], y, feat_type=feat_type)
    fit_seconds = time.perf_counter() - started
    try:
        board = automl.leaderboard()
        leaderboard = json.loads(board.reset_index().to_json(orient="records"))
    except Exception:  # an ensemble of one model has an empty leaderboard in some versions
        board, leaderboard = None, []
    if board is not None and ("type" not in board or board["type"].isna().all()):
        # Only auto-sklearn's dummy predictor: every real run crashed or ran out of time.
        raise RuntimeError(f"no model finished within time_left_for_this_task={budget} s "
                           f"(per_run_time_limit={kwargs['per_run_time_limit']} s); raise the budget")
    np.save(workdir / "scores.npy", scores(automl, data["X_eval"], request))
    (workdir / "model").mkdir(exist_ok=True)
    with open(workdir / "model" / "autosklearn.pkl", "wb") as fh:
        pickle.dump(automl, fh)
    return {"fit_seconds": fit_seconds, "n_models": len(leaderboard), "leaderboard": leaderboard, "best_model": ""}


def predict(workdir, request, data):
    with open(Path(request["model_dir"]) / "autosklearn.pkl", "rb") as fh:
        automl = pickle.load(fh)  # only from a directory rungflow wrote
    np.save(workdir / "scores.npy", scores(automl, data["X_eval"], request))
    return {}


if __name__ == "__main__":
    serve({"fit": fit, "predict": predict})
