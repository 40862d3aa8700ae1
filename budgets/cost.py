"""What a configuration costs: GPU-seconds per budget unit, learned from the sweep's own spend.

The cost-aware searchers (``search.cost_aware``) rank candidate configurations by expected
improvement per expected GPU-second, so they need a prediction of each candidate's cost before it
runs. The model is a ridge regression of log(GPU-seconds per budget unit) on the configuration
encoded in the unit cube (log-scaled where the parameter is log-scaled, one-hot for categories):

* log cost, because costs are positive and multiplicative in the usual drivers (batch size, width,
  depth each scale time by a factor), which makes them additive and the fit robust to the few very
  slow configurations that dominate a linear-scale fit;
* linear in the encoded parameters, because it needs only a handful of points per parameter to
  find which ones matter (k-NN in 7 dimensions needs far more), extrapolates smoothly to corners not
  yet tried, and cannot overfit wildly with a small ridge penalty;
* before ``min_points`` distinct configurations have a cost, the geometric mean cost (every
  candidate equally expensive, so the searcher ranks by improvement alone).

Pure numpy; the same observations give the same predictions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rungflow.budgets.space import SearchSpace

__all__ = ["CostModel", "encode"]


def encode(space: SearchSpace, config: Mapping[str, Any]) -> np.ndarray:
    """The config as features in [0, 1]: numeric parameters scaled to their range, categories one-hot."""
    features: list[float] = []
    for param in space.params:
        value = config.get(param.name)
        choices = getattr(param, "choices", None)
        if choices is not None:
            features.extend(1.0 if value == choice else 0.0 for choice in choices)
            continue
        low, high, log = float(param.low), float(param.high), bool(getattr(param, "log", False))
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            features.append(0.5)  # absent (an inactive conditional parameter): the middle
            continue
        x = float(value)
        if log:
            low, high, x = math.log(low), math.log(high), math.log(max(x, low))
        features.append(0.0 if high <= low else min(1.0, max(0.0, (x - low) / (high - low))))
    return np.asarray(features, dtype=float)


class CostModel:
    """GPU-seconds per budget unit as a function of the configuration; see the module docstring."""

    def __init__(self, space: SearchSpace, *, min_points: int | None = None, ridge: float = 1e-2) -> None:
        self.space = space
        # One point per parameter plus one is what a linear fit needs to be determined at all.
        self.min_points = min_points if min_points is not None else len(space) + 2
        self.ridge = ridge
        self.points = 0
        self._coef: np.ndarray | None = None
        self._mean_log = 0.0

    def fit(self, observations: Iterable[tuple[Mapping[str, Any], float]]) -> CostModel:
        """Fit on (config, GPU-seconds per unit) pairs; non-positive or non-finite costs are skipped.

        Repeated results of one configuration (its rungs) are averaged in log space first, so a
        trial promoted through many rungs does not outweigh the others.
        """
        by_config: dict[tuple, tuple[Mapping[str, Any], list[float]]] = {}
        for config, cost in observations:
            if cost is None or not math.isfinite(cost) or cost <= 0:
                continue
            key = tuple(sorted((k, repr(v)) for k, v in config.items()))
            by_config.setdefault(key, (config, []))[1].append(math.log(cost))
        self.points = len(by_config)
        self._coef = None
        if not by_config:
            self._mean_log = 0.0
            return self
        y = np.array([float(np.mean(logs)) for _, logs in by_config.values()])
        self._mean_log = float(y.mean())
        if self.points < self.min_points:
            return self
        x = np.stack([encode(self.space, config) for config, _ in by_config.values()])
        x = np.hstack([x, np.ones((len(x), 1))])
        penalty = self.ridge * np.eye(x.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        self._coef = np.linalg.solve(x.T @ x + penalty, x.T @ y)
        return self

    @property
    def fitted(self) -> bool:
        return self._coef is not None

    def predict_log(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """log(GPU-seconds per budget unit) per config (the geometric mean before the model is fitted)."""
        if self._coef is None:
            return np.full(len(configs), self._mean_log)
        x = np.stack([encode(self.space, c) for c in configs]) if configs else np.zeros((0, len(self._coef) - 1))
        return np.hstack([x, np.ones((len(x), 1))]) @ self._coef

    def predict(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.exp(self.predict_log(configs))
