"""scikit-learn families: histogram gradient boosting, random forest, and logistic/ridge regression.

Budgets are the model's own growth knob, so a promoted trial continues rather than restarts:
boosting iterations (``max_iter`` with ``warm_start``) and trees (``n_estimators`` with
``warm_start``). The linear family has no such knob and takes the percentage of training rows as
its budget, refitting from scratch each rung (it is cheap). Checkpoints are skops bytes.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from rungflow.tasks.data import Dataset
from rungflow.tasks.models import SklearnModel, skops_loads
from rungflow.tasks.trainables.base import TrainableError, register
from rungflow.tasks.trainables.tabular import FamilyFit, TabularTrainable, number

__all__ = ["HGBTrainable", "RandomForestTrainable", "LinearTrainable"]


def _dumps(estimator: Any) -> bytes:
    import skops.io as sio

    return sio.dumps(estimator)


def _resume(checkpoint: bytes | None, kind: str) -> Any:
    if checkpoint is None:
        return None
    try:
        return skops_loads(checkpoint)
    except Exception as exc:
        raise TrainableError(f"{kind}: cannot resume from checkpoint ({type(exc).__name__}: {exc})") from None


def _model(estimator: Any, kind: str, dataset: Dataset, config: Mapping[str, Any], budget: float) -> SklearnModel:
    return SklearnModel(estimator, family=kind, encoding=dataset.encoding(), config=dict(config), budget=budget)


class _WarmStartTrainable(TabularTrainable):
    """A family whose budget is its estimator's size, grown with ``warm_start``: a promoted trial continues."""

    #: The estimator parameter the budget sets.
    size_param: ClassVar[str]

    @abstractmethod
    def _estimator(self, config: Mapping[str, Any], dataset: Dataset, seed: int) -> Any:
        """A fresh estimator with ``warm_start`` on; its size is set before each fit."""

    @abstractmethod
    def _size(self, estimator: Any) -> int:
        """How far ``estimator`` has grown."""

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        target = max(int(round(budget)), 1)
        est = _resume(checkpoint, self.kind)
        start = 0 if est is None else self._size(est)
        if est is None:
            try:
                est = self._estimator(config, dataset, seed)
            except (TypeError, ValueError) as exc:
                raise TrainableError(f"{self.kind}: bad config {dict(config)}: {exc}") from None
        if target > start or start == 0:
            est.set_params(**{self.size_param: max(target, start)})
            est.fit(dataset.X_train, dataset.y_train)
        reached = self._size(est)
        return FamilyFit(_model(est, self.kind, dataset, config, reached), reached, reached - start, _dumps(est))


@register
class HGBTrainable(_WarmStartTrainable):
    """HistGradientBoosting; budget = boosting iterations, continued with ``warm_start``."""

    kind: ClassVar[str] = "hgb"
    budget_unit: ClassVar[str] = "boosting iterations"
    default_budget: ClassVar[tuple[float, float]] = (10, 270)
    size_param = "max_iter"

    def default_space(self) -> SearchSpace:
        return SearchSpace(
            (
                FloatParam("learning_rate", 0.01, 0.5, log=True),
                IntParam("max_leaf_nodes", 4, 128, log=True),
                IntParam("min_samples_leaf", 2, 64, log=True),
                FloatParam("l2_regularization", 1e-6, 10.0, log=True),
                FloatParam("max_features", 0.3, 1.0),
            )
        )

    def _estimator(self, config, dataset, seed):
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        # Columns with few categories go in as native categoricals (HGB allows at most max_bins=255).
        mask = [name in dataset.categories and len(dataset.categories[name]) <= 255 for name in dataset.feature_names]
        cls = HistGradientBoostingClassifier if dataset.task == "classification" else HistGradientBoostingRegressor
        return cls(
            learning_rate=number(config, "learning_rate", 0.1, self.kind),
            max_leaf_nodes=number(config, "max_leaf_nodes", 31, self.kind, int),
            min_samples_leaf=number(config, "min_samples_leaf", 20, self.kind, int),
            l2_regularization=number(config, "l2_regularization", 0.0, self.kind),
            max_features=number(config, "max_features", 1.0, self.kind),
            # Early stopping would end a rung short of its budget and make resumes differ from scratch runs.
            early_stopping=False,
            warm_start=True,
            categorical_features=mask if any(mask) else None,
            random_state=seed,
        )

    def _size(self, estimator):
        return int(estimator.n_iter_)


@register
class RandomForestTrainable(_WarmStartTrainable):
    """Random forest; budget = trees, grown with ``warm_start``."""

    kind: ClassVar[str] = "random_forest"
    budget_unit: ClassVar[str] = "trees"
    default_budget: ClassVar[tuple[float, float]] = (4, 108)
    size_param = "n_estimators"

    def default_space(self) -> SearchSpace:
        return SearchSpace(
            (
                IntParam("max_depth", 2, 32, log=True),
                IntParam("min_samples_leaf", 1, 16, log=True),
                FloatParam("max_features", 0.1, 1.0),
                CategoricalParam("bootstrap", (True, False)),
            )
        )

    def _estimator(self, config, dataset, seed):
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestClassifier if dataset.task == "classification" else RandomForestRegressor
        return cls(
            max_depth=number(config, "max_depth", None, self.kind, int),
            min_samples_leaf=number(config, "min_samples_leaf", 1, self.kind, int),
            max_features=number(config, "max_features", 1.0, self.kind),
            bootstrap=bool(config.get("bootstrap", True)),
            warm_start=True,
            random_state=seed,
            n_jobs=1,  # trials already fill the cores
        )

    def _size(self, estimator):
        return len(estimator.estimators_)


@register
class LinearTrainable(TabularTrainable):
    """Logistic regression (classification) or ridge (regression) after median imputation and scaling.

    Budget = percent of the training rows (a seeded stratified subsample), refitted from scratch.
    """

    kind: ClassVar[str] = "linear"
    budget_unit: ClassVar[str] = "percent of training rows"
    default_budget: ClassVar[tuple[float, float]] = (10, 100)

    def default_space(self) -> SearchSpace:
        return SearchSpace((FloatParam("C", 1e-3, 1e3, log=True),))

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        percent = float(min(max(budget, 1.0), 100.0))
        c = number(config, "C", 1.0, self.kind)
        if not c or c <= 0:
            raise TrainableError(f"{self.kind}: config C={c!r} must be positive")
        x, y = dataset.X_train, dataset.y_train
        if percent < 100:
            stratify = y if dataset.task == "classification" else None
            try:
                x, _, y, _ = train_test_split(x, y, train_size=percent / 100.0, stratify=stratify, random_state=seed)
            except ValueError:  # too few rows per class for a stratified subsample: take the whole set
                x, y = dataset.X_train, dataset.y_train
        if dataset.task == "classification":
            head: Any = LogisticRegression(C=c, max_iter=2000)
            if len(np.unique(y)) < dataset.n_classes:
                x, y = dataset.X_train, dataset.y_train  # every class must be seen, or predict_proba loses a column
        else:
            head = Ridge(alpha=1.0 / c)
        est = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), head)
        est.fit(x, y)
        # A marker, not a resume point: a promoted trial refits (cheap), and the sweep sees a checkpoint.
        marker = json.dumps({"family": self.kind, "percent": percent}).encode()
        return FamilyFit(_model(est, self.kind, dataset, config, percent), percent, percent, marker,
                         {"train_rows": float(len(y))})
