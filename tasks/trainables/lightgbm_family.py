"""LightGBM as a family: ``lightgbm.train`` grows a booster by boosting rounds, continued with ``init_model=``.

Categorical columns go in as LightGBM's native categoricals (``categorical_feature``). A trial that holds
a GPU uses it with ``device_type="cuda"`` (builds from source only) or ``"gpu"`` (OpenCL: the PyPI wheel
has it, and needs an OpenCL driver on the machine), whichever a one-off probe finds working. Checkpoints and saved models are LightGBM's own text
model format. A resumed trial keeps its first trees bit for bit; with bagging, the rounds it adds draw
other rows than an unbroken run would (LightGBM restarts its random stream on continuation), so the two
score alike, not identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rungflow.budgets.space import IntParam, SearchSpace
from rungflow.tasks.data import Dataset
from rungflow.tasks.trainables import boosting
from rungflow.tasks.trainables.base import TrainableError, register

__all__ = ["LightGBMTrainable", "LightGBMModel"]


class LightGBMModel(boosting.BoosterModel):
    backend = "lightgbm"
    model_file = "model.txt"
    model_name = "a LightGBM model"

    def _predict(self, x: np.ndarray) -> Any:
        return self.booster.predict(np.asarray(x, dtype=np.float64))

    @classmethod
    def _read_booster(cls, path: Path) -> Any:
        import lightgbm as lgb

        try:
            return lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise cls._not_a_model(path, exc) from None


@lru_cache(maxsize=1)
def _gpu_device() -> tuple[str | None, str]:
    """(the device_type that trains here, or None; why not). LightGBM has no call that says how it was
    built, so a few rounds on 25 rows try each, as AutoGluon does."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    rows, label = rng.random((25, 2)), rng.integers(0, 2, 25)
    reasons = []
    for device in ("cuda", "gpu"):
        try:
            lgb.train({"device_type": device, "verbose": -1}, lgb.Dataset(rows, label=label), num_boost_round=2)
            return device, ""
        except lgb.basic.LightGBMError as exc:
            reasons.append(f"{device}: {boosting.first_line(exc)}")
    return None, "this lightgbm build has no GPU support (" + "; ".join(reasons) + ")"


@register
class LightGBMTrainable(boosting.BoostingTrainable):
    """LightGBM (leaf-wise trees); budget = boosting rounds, continued with ``init_model``."""

    kind: ClassVar[str] = "lightgbm"
    knobs: ClassVar[Mapping[str, tuple[Any, Any]]] = {
        "learning_rate": (0.1, float), "num_leaves": (31, int), "min_child_samples": (20, int),
        "colsample_bytree": (1.0, float), "subsample": (1.0, float), "reg_lambda": (0.0, float), "reg_alpha": (0.0, float),
    }
    fractions: ClassVar[tuple[str, ...]] = ("colsample_bytree", "subsample")

    def default_space(self) -> SearchSpace:
        return SearchSpace((
            boosting.LEARNING_RATE, IntParam("num_leaves", 4, 128, log=True), IntParam("min_child_samples", 2, 64, log=True),
            boosting.column_subsample("colsample_bytree"), boosting.ROW_SUBSAMPLE, boosting.L2_PENALTY, boosting.L1_PENALTY,
        ))

    def gpu_unavailable(self) -> str | None:
        device, reason = _gpu_device()
        return None if device else reason

    def grow(self, config: Mapping[str, Any], dataset: Dataset, settings: boosting.BoostSettings,
             checkpoint: bytes | None) -> boosting.Grown:
        import lightgbm as lgb

        knobs = self.settings(config)
        params: dict[str, Any] = {
            "learning_rate": knobs["learning_rate"], "num_leaves": knobs["num_leaves"],
            "min_data_in_leaf": knobs["min_child_samples"], "feature_fraction": knobs["colsample_bytree"],
            "bagging_fraction": knobs["subsample"], "bagging_freq": 1 if knobs["subsample"] < 1.0 else 0,
            "lambda_l2": knobs["reg_lambda"], "lambda_l1": knobs["reg_alpha"],
            "device_type": _gpu_device()[0] if settings.on_gpu else "cpu",
            "num_threads": settings.threads, "seed": settings.seed,
            # Repeatable fits, so a refitted winner is the model its trial scored.
            "deterministic": True, "force_row_wise": True, "verbose": -1,
        }
        params["objective"] = boosting.task_objective(dataset, "regression", "binary", "multiclass")
        if params["objective"] == "multiclass":
            params["num_class"] = dataset.n_classes
        booster = None
        if checkpoint is not None:
            try:
                booster = lgb.Booster(model_str=checkpoint.decode())
            except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
                raise TrainableError(f"lightgbm: cannot resume from checkpoint ({boosting.first_line(exc)})") from None
        start = 0 if booster is None else booster.current_iteration()
        if booster is None or settings.target_rounds > start:
            categorical = boosting.categorical_columns(dataset.feature_names, dataset.categories)
            train = lgb.Dataset(np.asarray(dataset.X_train, dtype=np.float64), label=dataset.y_train,
                                categorical_feature=categorical or "auto",
                                free_raw_data=False)
            try:
                booster = lgb.train(params, train, num_boost_round=settings.target_rounds - start, init_model=booster)
            except lgb.basic.LightGBMError as exc:
                raise TrainableError(f"lightgbm: training failed with {dict(config)} ({boosting.first_line(exc)})") from None
        model = LightGBMModel(booster, family=self.kind, encoding=dataset.encoding(), config=dict(config),
                              budget=float(booster.current_iteration()))
        return boosting.Grown(model, start, booster.current_iteration(), booster.model_to_string().encode())
