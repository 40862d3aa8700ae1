"""CatBoost as a family: boosting rounds (``iterations``), continued from CatBoost's training snapshot.

CatBoost offers two ways to continue: ``fit(init_model=...)`` and a training snapshot
(``save_snapshot``). A snapshot holds the training state as well as the trees (the random stream and
the running approximations), so a promoted trial trains only the rounds its rung adds and ends with the
very model an unbroken run of the same rounds would have; ``init_model`` from a saved model draws new
random numbers for the added rounds (up to 0.1 apart in probabilities on wine), and CatBoost refuses it
on GPUs ("Training continuation for GPU is not yet supported"). So the checkpoint is the snapshot,
framed with the rounds it holds.

Categorical columns go in as CatBoost's own categorical features (``cat_features``; integer codes, -1 for
missing). The trial's GPU is used with ``task_type="GPU"`` (the PyPI wheel carries CUDA); on a GPU,
``colsample_bylevel`` is left at 1, as CatBoost supports it only on CPUs. Saved models are CatBoost's
own ``.cbm`` format.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rungflow.budgets.space import FloatParam, IntParam, SearchSpace
from rungflow.tasks.data import Dataset
from rungflow.tasks.trainables import boosting
from rungflow.tasks.trainables.base import TrainableError, register

__all__ = ["CatBoostTrainable", "CatBoostModel"]

# Bumped when the framing changes, so an old checkpoint fails loudly instead of half-loading.
_SNAPSHOT_HEADER = b"rungflow-catboost-snapshot/1\n"


def _pool(x: np.ndarray, feature_names: list[str] | tuple[str, ...], categories: Mapping[str, Any], label: Any = None) -> Any:
    from catboost import Pool

    return Pool(boosting.categorical_frame(x, feature_names, categories), label=label,
                cat_features=boosting.categorical_columns(feature_names, categories) or None)


class CatBoostModel(boosting.BoosterModel):
    backend = "catboost"
    model_file = "model.cbm"  # CatBoost's own format, what save_model writes by default
    model_name = "a CatBoost model"

    def __init__(self, booster: Any, *, threads: int = -1, **kwargs: Any) -> None:
        super().__init__(booster, **kwargs)
        self.threads = threads  # -1: every core (a loaded model); a trial's model scores on the trial's share

    def _predict(self, x: np.ndarray) -> Any:
        pool = _pool(x, self.feature_names, self.encoding.get("categories", {}))
        kind = "Probability" if self.task == "classification" else "RawFormulaVal"
        return self.booster.predict(pool, prediction_type=kind, thread_count=self.threads)

    @classmethod
    def _read_booster(cls, path: Path) -> Any:
        from catboost import CatBoost, CatBoostError

        try:
            return CatBoost().load_model(str(path), format="cbm")
        except CatBoostError as exc:
            raise cls._not_a_model(path, exc) from None


@lru_cache(maxsize=1)
def _gpu_unavailable() -> str | None:
    from catboost.utils import get_gpu_device_count

    return None if get_gpu_device_count() > 0 else "catboost sees no GPU it can use (no device, or a driver older than its CUDA)"


def _frame_snapshot(rounds: int, snapshot: bytes) -> bytes:
    return _SNAPSHOT_HEADER + f"{rounds}\n".encode() + snapshot


def _unframe_snapshot(checkpoint: bytes) -> tuple[int, bytes]:
    if not checkpoint.startswith(_SNAPSHOT_HEADER):
        raise TrainableError("catboost: cannot resume from checkpoint (not a rungflow CatBoost snapshot)")
    count, _, snapshot = checkpoint[len(_SNAPSHOT_HEADER):].partition(b"\n")
    try:
        return int(count), snapshot
    except ValueError:
        raise TrainableError("catboost: cannot resume from checkpoint (damaged header)") from None


@register
class CatBoostTrainable(boosting.BoostingTrainable):
    """CatBoost (symmetric trees); budget = boosting rounds, continued from its training snapshot."""

    kind: ClassVar[str] = "catboost"
    # A snapshot restores the parameters it was taken with, so nothing may change on resume.
    mutable_params: ClassVar[frozenset[str] | None] = frozenset()
    knobs: ClassVar[Mapping[str, tuple[Any, Any]]] = {
        "learning_rate": (0.1, float), "depth": (6, int), "l2_leaf_reg": (3.0, float),
        "subsample": (1.0, float), "colsample_bylevel": (1.0, float),
    }
    fractions: ClassVar[tuple[str, ...]] = ("subsample", "colsample_bylevel")

    def default_space(self) -> SearchSpace:
        # AutoGluon's CatBoost space (learning rate, depth, l2_leaf_reg) with row and column subsampling.
        return SearchSpace((boosting.LEARNING_RATE, IntParam("depth", 3, 8), FloatParam("l2_leaf_reg", 1.0, 20.0, log=True),
                            boosting.ROW_SUBSAMPLE, boosting.column_subsample("colsample_bylevel")))

    def gpu_unavailable(self) -> str | None:
        return _gpu_unavailable()

    def grow(self, config: Mapping[str, Any], dataset: Dataset, settings: boosting.BoostSettings,
             checkpoint: bytes | None) -> boosting.Grown:
        from catboost import CatBoost, CatBoostError

        knobs = self.settings(config)
        start, snapshot = (0, b"") if checkpoint is None else _unframe_snapshot(checkpoint)
        loss = boosting.task_objective(dataset, "RMSE", "Logloss", "MultiClass")
        params: dict[str, Any] = {
            "loss_function": loss, "iterations": max(settings.target_rounds, start),
            # Always explicit: CatBoost otherwise picks a learning rate from the iteration count, which grows per rung.
            "learning_rate": knobs["learning_rate"], "depth": knobs["depth"], "l2_leaf_reg": knobs["l2_leaf_reg"],
            "bootstrap_type": "Bernoulli", "subsample": knobs["subsample"],
            "random_seed": settings.seed, "thread_count": settings.threads,
            "task_type": "GPU" if settings.on_gpu else "CPU", "verbose": False,
            "save_snapshot": True, "snapshot_interval": 10**9,  # one snapshot, when training ends
            # CatBoost picks cheaper settings for short runs (one leaf-estimation step, no feature combinations below a
            # few hundred iterations) and refuses to continue a snapshot whose settings differ: pinned to its own
            # full-length defaults, every rung trains alike and a promotion can cross that length.
            "max_ctr_complexity": 4, "leaf_estimation_iterations": 10 if loss == "Logloss" else 1,
        }
        if not settings.on_gpu:
            params["rsm"] = knobs["colsample_bylevel"]
        train = _pool(dataset.X_train, dataset.feature_names, dataset.categories, label=dataset.y_train)
        with tempfile.TemporaryDirectory(prefix="rungflow-catboost-") as workdir:
            snapshot_file = os.path.join(workdir, "snapshot")
            if checkpoint is not None:
                Path(snapshot_file).write_bytes(snapshot)
            booster = CatBoost({**params, "train_dir": workdir, "snapshot_file": snapshot_file})
            try:
                booster.fit(train)
            except CatBoostError as exc:
                doing = "resuming from checkpoint" if checkpoint is not None else f"training with {dict(config)}"
                raise TrainableError(f"catboost: failed {doing} ({boosting.first_line(exc)})") from None
            snapshot = Path(snapshot_file).read_bytes()
        rounds = int(booster.tree_count_)
        model = CatBoostModel(booster, threads=settings.threads, family=self.kind, encoding=dataset.encoding(),
                              config=dict(config), budget=float(rounds))
        return boosting.Grown(model, start, rounds, _frame_snapshot(rounds, snapshot))
