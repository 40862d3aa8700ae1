"""A weighted ensemble of a sweep's trials: selected on their kept validation predictions, refitted, saved as one model.

The selection is :func:`budgets.ensemble.select_ensemble` (pure); here are its edges: reading the trials'
validation predictions from the checkpoint store, refitting the chosen trials (each from scratch at the budget it
reached, with its trial's seed, so each member is the model its trial scored) and saving them as one
:class:`~tasks.models.EnsembleModel`, which saves, loads and predicts like any other model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rungflow.tasks.models import EnsembleModel, save_model, score_predictions

__all__ = ["build_ensemble", "JUDGED_ON"]

JUDGED_ON = ("the validation rows the ensemble was selected on, so its figure is optimistic (as AutoGluon's "
             "weighted ensemble's validation score is); rows it never saw tell how it does on new data")


def _candidates(result: Mapping[str, Any], mode: str, limit: int) -> list[dict[str, Any]]:
    """Each trial at the highest budget it completed, ranked as the leaderboard ranks (budget, then score)."""
    by_trial: dict[str, dict[str, Any]] = {}
    for event in result.get("events") or []:
        if event.get("status") != "completed" or event.get("score") is None:
            continue
        kept = by_trial.get(event["trial_id"])
        if kept is None or event["budget"] >= kept["budget"]:
            by_trial[event["trial_id"]] = event
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted(by_trial.values(), key=lambda e: (-e["budget"], sign * e["score"], e["trial_id"]))
    return ranked[:limit]


def _beyond_rounding(gain: float, scale: float) -> float:
    from rungflow.budgets.ensemble import TOLERANCE

    return 0.0 if abs(gain) <= TOLERANCE * max(1.0, abs(scale)) else gain


def build_ensemble(config: Any, run_dir: Path, result: Mapping[str, Any], directory: Path, *,
                   device: str = "cpu") -> dict[str, Any]:
    """Select an ensemble over the sweep's trials and, when it beats the best single trial on validation, refit and
    save it to ``directory``.

    Returns what result.json records under ``best_model.ensemble``; ``"saved": True`` when the ensemble was saved
    (then ``"model"`` holds the record of the saved model), False with a ``reason`` when the best single trial
    should be saved instead.
    """
    from rungflow.budgets.ensemble import select_ensemble
    from rungflow.tasks.checkpoints import CorruptCheckpoint, load_validation_predictions, open_store
    from rungflow.tasks.models import fit_model

    settings = config.ensemble
    mode = config.mode()
    trainable = config.trainable_class()(config.trainable.options)
    dataset = trainable.dataset()
    store = open_store(config.storage.checkpoint_location(run_dir))
    rows, predictions = [], []
    for row in _candidates(result, mode, settings.max_candidates):
        try:
            kept = load_validation_predictions(store, row["trial_id"], int(row["rung"]))
        except CorruptCheckpoint:
            kept = None
        if kept is not None and len(kept) == len(dataset.y_valid):
            rows.append(row)
            predictions.append(kept)
    if len(rows) < 2:
        return {"saved": False, "candidates": len(rows),
                "reason": f"{len(rows)} trial(s) kept validation predictions; an ensemble needs two or more"}
    metric = config.metric_name()
    sign = 1.0 if mode == "max" else -1.0

    def score(prediction: np.ndarray) -> float:
        metrics = score_predictions(dataset.task, dataset.y_valid, prediction)
        return sign * metrics.get(metric, metrics["val_score"])

    selection = select_ensemble(predictions, score, size=settings.size, seed=config.search.seed)
    best = 0  # the candidates are ranked as the leaderboard is: the first is the sweep's best trial
    summary: dict[str, Any] = {
        "candidates": len(rows), "rounds": len(selection.trajectory), "metric": metric,
        "val_score": sign * selection.score, "best_single": {"trial_id": rows[best]["trial_id"], "val_score": sign * score(predictions[best])},
        "gain": _beyond_rounding(selection.score - score(predictions[best]), selection.score),
        "members": [{"trial_id": rows[i]["trial_id"], "rung": rows[i]["rung"], "budget": rows[i]["budget"],
                     "family": result.get("trials", {}).get(rows[i]["trial_id"], {}).get("family"),
                     "weight": selection.weights[i], "val_score": rows[i]["score"]} for i in selection.members],
        "judged_on": JUDGED_ON,
    }
    if len(selection.members) < 2 or not summary["gain"] > 0:
        return {**summary, "saved": False,
                "reason": "no weighted ensemble beat the best single trial on validation"}
    started = time.perf_counter()
    members, weights, details, drift = [], [], [], 0.0
    for i in selection.members:
        row = rows[i]
        trial_config = result["trials"][row["trial_id"]]
        model = fit_model(config.trainable.kind, config.trainable.options, trial_config, float(row["budget"]), dataset,
                          device=device, seed=trainable.seed_for(config.search.seed, row["trial_id"]))
        drift = max(drift, float(np.max(np.abs(model.validation_scores(dataset) - predictions[i]))))
        members.append(model)
        weights.append(selection.weights[i])
        details.append({"trial_id": row["trial_id"], "budget": row["budget"]})
    ensemble = EnsembleModel(members, weights, details=details, family="ensemble", encoding=dataset.encoding(),
                             config={"members": [d["trial_id"] for d in details]})
    ensemble.metrics = ensemble.evaluate(dataset)
    path = save_model(ensemble, directory)
    # The refitted members reproduce their trials' predictions (same data, seed, budget); drift says how closely.
    summary.update(saved=True, refit_max_abs_diff=drift)
    return {**summary, "model": {
        "kind": "ensemble", "path": str(path.resolve()), "trial_id": rows[best]["trial_id"], "family": "ensemble",
        "task": ensemble.task, "budget": rows[best]["budget"], "metrics": ensemble.metrics,
        "refit_seconds": time.perf_counter() - started,
    }}
