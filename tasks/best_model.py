"""After a sweep: refit the winning configuration (or, with ``ensemble:``, the ensemble of trials that beats it on
validation) and save it to the run directory's ``best_model/``.

The winner is refitted from scratch at the budget it won at, with the seed its trial used, so the
saved model is the one the sweep scored (checkpoints hold training state, not a servable model, and
AutoGluon trials keep only their leaderboards). Only tabular families produce a model; for the
others this step does nothing. A failure here is recorded in ``result.json``, never raised: the
sweep's results are already written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from rungflow.config import SweepConfig

__all__ = ["save_best_model", "BEST_MODEL_DIR"]

BEST_MODEL_DIR = "best_model"
log = logging.getLogger("rungflow.best_model")


def refit_best(config: SweepConfig, run_dir: Path, result: Mapping[str, Any]) -> dict[str, Any] | None:
    """Refit and save the winner, or the ensemble that beats it; returns what result.json records (None: nothing to save)."""
    from rungflow.tasks.models import fit_model, save_model
    from rungflow.tasks.trainables.tabular import TabularTrainable

    best = result.get("best") or {}
    if not best.get("trial_id") or not issubclass(config.trainable_class(), TabularTrainable):
        return None
    started = time.perf_counter()
    ensemble: dict[str, Any] | None = None
    try:
        device = _refit_device(config)
        if config.ensemble is not None:
            ensemble = _try_ensemble(config, run_dir, result, device)
            if ensemble.get("saved"):
                return {**ensemble.pop("model"), "ensemble": ensemble}
        trainable = config.trainable_class()(config.trainable.options)
        model = fit_model(config.trainable.kind, config.trainable.options, best["config"], float(best["budget"]),
                          device=device, seed=trainable.seed_for(config.search.seed, best["trial_id"]))
        path = save_model(model, run_dir / BEST_MODEL_DIR)
    except Exception as exc:  # the sweep's results stand; say why there is no model
        log.warning("could not save the best model of %s: %s", best.get("trial_id"), exc)
        return {"error": f"{type(exc).__name__}: {exc}", "trial_id": best.get("trial_id")}
    saved = {
        "kind": "single",
        "path": str(path.resolve()),
        "trial_id": best["trial_id"],
        "family": model.family,
        "task": model.task,
        "budget": best["budget"],
        "metrics": model.metrics,
        "refit_seconds": time.perf_counter() - started,
    }
    return saved if ensemble is None else {**saved, "ensemble": ensemble}


def _refit_device(config: SweepConfig) -> str:
    if config.runtime.gpus_per_trial > 0:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def _try_ensemble(config: SweepConfig, run_dir: Path, result: Mapping[str, Any], device: str) -> dict[str, Any]:
    """The ensemble's record; a failure to build one costs the sweep its ensemble, never its single best model."""
    from rungflow.tasks.ensemble_model import build_ensemble

    try:
        return build_ensemble(config, run_dir, result, run_dir / BEST_MODEL_DIR, device=device)
    except Exception as exc:
        log.warning("could not build an ensemble: %s: %s", type(exc).__name__, exc)
        return {"saved": False, "reason": f"{type(exc).__name__}: {exc}"}


@task(name="save-best-model", cache_policy=NO_CACHE, persist_result=False, retries=0)
def save_best_model(config: SweepConfig, run_dir: str, result: dict[str, Any]) -> dict[str, Any]:
    """Refit the winner into ``run_dir/best_model`` and record it in ``result.json``; returns the updated result."""
    from rungflow.results import write_json_atomic

    saved = refit_best(config, Path(run_dir), result)
    if saved is None:
        return result
    result = {**result, "best_model": saved}
    write_json_atomic(Path(run_dir) / "result.json", result)
    return result
