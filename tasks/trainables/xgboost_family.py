"""XGBoost as a family: ``xgboost.train`` grows a booster by boosting rounds, continued with ``xgb_model=``.

Categorical columns go in as XGBoost's native categoricals (``enable_categorical``), missing values as
missing. The trial's GPU is used with ``device="cuda"`` (the PyPI wheel carries CUDA). Checkpoints and
saved models are XGBoost's own UBJSON model format. A resumed trial keeps its first trees bit for bit;
with row or column subsampling, the rounds it adds draw other samples than an unbroken run would
(XGBoost restarts its random stream on continuation), so the two score alike, not identically.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rungflow.budgets.space import FloatParam, IntParam, SearchSpace
from rungflow.tasks.data import Dataset
from rungflow.tasks.trainables import boosting
from rungflow.tasks.trainables.base import TrainableError, register

__all__ = ["XGBoostTrainable", "XGBoostModel"]


def _feature_types(feature_names: list[str] | tuple[str, ...], categories: Mapping[str, Any]) -> list[str]:
    categorical = set(boosting.categorical_columns(feature_names, categories))
    return ["c" if i in categorical else "q" for i in range(len(feature_names))]


def _matrix(x: np.ndarray, feature_names: list[str] | tuple[str, ...], categories: Mapping[str, Any], label: Any = None) -> Any:
    import xgboost as xgb

    types = _feature_types(feature_names, categories)
    return xgb.DMatrix(np.asarray(x, dtype=np.float64), label=label, feature_types=types, enable_categorical="c" in types,
                       missing=np.nan)


class XGBoostModel(boosting.BoosterModel):
    backend = "xgboost"
    model_file = "model.ubj"
    model_name = "an XGBoost model"

    def _predict(self, x: np.ndarray) -> Any:
        return self.booster.predict(_matrix(x, self.feature_names, self.encoding.get("categories", {})))

    @classmethod
    def _read_booster(cls, path: Path) -> Any:
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            raise cls._not_a_model(path, exc) from None
        # A model trained on a GPU predicts on whatever this machine has.
        booster.set_param({"device": "cpu"})
        return booster


@lru_cache(maxsize=1)
def _gpu_unavailable() -> str | None:
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA"):
        return "this xgboost build has no CUDA (install the xgboost wheel, not xgboost-cpu)"
    # XGBoost does not fail without a visible GPU: it warns and trains on the CPU. One round on two rows
    # tells, by the device the learner settled on.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = xgb.train({"device": "cuda", "verbosity": 0}, xgb.DMatrix(np.zeros((2, 1)), label=[0.0, 1.0]), 1)
        device = json.loads(probe.save_config())["learner"]["generic_param"]["device"]
    except xgb.core.XGBoostError as exc:
        return f"xgboost cannot use it ({boosting.first_line(exc)})"
    return None if str(device).startswith("cuda") else "xgboost sees no GPU"


@register
class XGBoostTrainable(boosting.BoostingTrainable):
    """XGBoost (``hist`` trees); budget = boosting rounds, continued with ``xgb_model``."""

    kind: ClassVar[str] = "xgboost"
    knobs: ClassVar[Mapping[str, tuple[Any, Any]]] = {
        "learning_rate": (0.1, float), "max_depth": (6, int), "min_child_weight": (1.0, float),
        "subsample": (1.0, float), "colsample_bytree": (1.0, float), "reg_lambda": (1.0, float), "reg_alpha": (0.0, float),
    }
    fractions: ClassVar[tuple[str, ...]] = ("subsample", "colsample_bytree")

    def default_space(self) -> SearchSpace:
        return SearchSpace((
            boosting.LEARNING_RATE, IntParam("max_depth", 2, 10), FloatParam("min_child_weight", 0.01, 32.0, log=True),
            boosting.ROW_SUBSAMPLE, boosting.column_subsample("colsample_bytree"), boosting.L2_PENALTY, boosting.L1_PENALTY,
        ))

    def gpu_unavailable(self) -> str | None:
        return _gpu_unavailable()

    def grow(self, config: Mapping[str, Any], dataset: Dataset, settings: boosting.BoostSettings,
             checkpoint: bytes | None) -> boosting.Grown:
        import xgboost as xgb

        knobs = self.settings(config)
        params: dict[str, Any] = {
            "eta": knobs["learning_rate"], "max_depth": knobs["max_depth"], "min_child_weight": knobs["min_child_weight"],
            "subsample": knobs["subsample"], "colsample_bytree": knobs["colsample_bytree"],
            "lambda": knobs["reg_lambda"], "alpha": knobs["reg_alpha"],
            "tree_method": "hist", "device": "cuda" if settings.on_gpu else "cpu",
            "nthread": settings.threads, "seed": settings.seed, "verbosity": 0,
        }
        params["objective"] = boosting.task_objective(dataset, "reg:squarederror", "binary:logistic", "multi:softprob")
        if params["objective"] == "multi:softprob":
            params["num_class"] = dataset.n_classes
        booster = None
        if checkpoint is not None:
            booster = xgb.Booster()
            try:
                booster.load_model(bytearray(checkpoint))
            except xgb.core.XGBoostError as exc:
                raise TrainableError(f"xgboost: cannot resume from checkpoint ({boosting.first_line(exc)})") from None
        start = 0 if booster is None else booster.num_boosted_rounds()
        if booster is None or settings.target_rounds > start:
            train = _matrix(dataset.X_train, dataset.feature_names, dataset.categories, label=dataset.y_train)
            try:
                booster = xgb.train(params, train, num_boost_round=settings.target_rounds - start, xgb_model=booster)
            except xgb.core.XGBoostError as exc:
                raise TrainableError(f"xgboost: training failed with {dict(config)} ({boosting.first_line(exc)})") from None
        saved = bytes(booster.save_raw("ubj"))
        booster.set_param({"device": "cpu"})  # the model scores the validation rows wherever it was trained
        model = XGBoostModel(booster, family=self.kind, encoding=dataset.encoding(), config=dict(config),
                             budget=float(booster.num_boosted_rounds()))
        return boosting.Grown(model, start, booster.num_boosted_rounds(), saved)
