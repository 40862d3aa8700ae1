"""A family whose budget is not epochs: histogram gradient boosting, budget = share of the training rows.

LCBench's fidelity is epochs and a promoted trial resumes. Many real families have neither: a
gradient-boosted model on a table is cheaper on fewer rows, and its "low rung" is a fit on a
subsample that is thrown away when the trial is promoted. Small subsamples favour different
settings (strong regularisation, small leaves) than the full table, so the low rungs can mislead
in their own way.

Here the model is scikit-learn's ``HistGradientBoostingClassifier`` over rungflow's ``hgb`` search
space, trained for real. Budget unit ``u`` = u/27 of the training rows (the first rows of a fixed
permutation, so the subsamples nest), 1..27, η = 3: rungs at 3.7 %, 11 %, 33 % and 100 %. Every rung
refits from scratch and is billed its own fit. The bill is the fit's CPU seconds on one thread
(``time.thread_time`` with OpenMP held to one thread), so it does not depend on what else the machine
runs; a "GPU-hour" here is an hour of that.

The tables are synthetic (``sklearn.datasets.make_classification``), each drawn from its own seed
over ranges of size, informativeness, class separation, label noise, class count and imbalance:
nobody picked a table's shape. :data:`DEV_TABLES` chose nothing either (the searchers' defaults
were chosen on LCBench); :data:`HELDOUT_TABLES` are reported apart all the same.

Results are cached on disk per table (``bench/out/fraction-cache``), so a rerun reuses each fit and
its measured cost; the cache is keyed by the configuration and the budget, not by the method.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TableSpec", "FractionTable", "table", "reference", "DEV_TABLES", "HELDOUT_TABLES", "MAX_UNITS"]

MAX_UNITS = 27  # budget units: u/27 of the training rows
MAX_ITER = 20  # boosting iterations, fixed: the budget is the rows, not the trees
TRAIN_ROWS, VALIDATION_ROWS = 2000, 1500
POOL_SIZE = 256  # full-budget random configurations behind the reference
DEV_TABLES = ("hgb-1", "hgb-2", "hgb-3")
HELDOUT_TABLES = ("hgb-6", "hgb-7", "hgb-8")
CACHE_DIR = Path("bench/out/fraction-cache")


@dataclass(frozen=True)
class TableSpec:
    name: str
    n_features: int
    n_informative: int
    n_classes: int
    class_sep: float
    flip_y: float
    minority_share: float | None  # None: balanced classes
    seed: int

    @classmethod
    def draw(cls, name: str) -> TableSpec:
        """The table named ``hgb-K`` is drawn from seed K: its shape is nobody's choice."""
        suffix = name.removeprefix("hgb-")
        if suffix == name or not suffix.isdigit():
            # An LCBench instance id passed with --family hgb-fraction would otherwise become a table silently.
            raise ValueError(f"table {name!r}: hgb-fraction tables are named hgb-K (e.g. {', '.join(DEV_TABLES)}); "
                             "LCBench instances go with --family lcbench")
        k = int(suffix)
        rng = np.random.default_rng(1_000 + k)
        n_features = int(rng.integers(12, 41))
        n_informative = int(rng.integers(4, max(5, n_features // 2) + 1))
        n_classes = int(rng.choice([2, 2, 3, 4]))
        minority = float(rng.uniform(0.1, 0.4)) if n_classes == 2 and rng.random() < 0.5 else None
        return cls(name, n_features, n_informative, n_classes, float(rng.uniform(0.5, 1.2)),
                   float(rng.uniform(0.0, 0.1)), minority, k)


class FractionTable:
    """One table, its train/validation split, and the cached fits of configurations at budgets."""

    max_budget: float = MAX_UNITS
    resumes = False

    def __init__(self, name: str, *, cache_dir: Path | None = CACHE_DIR) -> None:
        from sklearn.datasets import make_classification

        from rungflow.tasks.trainables.sklearn_models import HGBTrainable

        self.name = name
        self.spec = TableSpec.draw(name)
        sp = self.spec
        weights = None if sp.minority_share is None else [1.0 - sp.minority_share, sp.minority_share]
        x, y = make_classification(
            n_samples=TRAIN_ROWS + VALIDATION_ROWS, n_features=sp.n_features, n_informative=sp.n_informative,
            n_redundant=min(4, sp.n_features - sp.n_informative), n_classes=sp.n_classes, n_clusters_per_class=2,
            class_sep=sp.class_sep, flip_y=sp.flip_y, weights=weights, random_state=sp.seed,
        )
        order = np.random.default_rng(sp.seed).permutation(len(y))  # subsamples are prefixes: they nest
        x, y = x[order], y[order]
        self.x_train, self.y_train = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
        self.x_val, self.y_val = x[TRAIN_ROWS:], y[TRAIN_ROWS:]
        self.space = HGBTrainable({"data": {"source": "sklearn:breast_cancer"}}).default_space()  # the family's space; the data is ours
        self._cache: dict[tuple[Any, ...], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._path = None if cache_dir is None else Path(cache_dir) / f"{name}.jsonl"
        if self._path is not None and self._path.exists():
            for line in self._path.read_text().splitlines():
                row = json.loads(line)
                self._cache[(tuple(map(tuple, row["config"])), int(row["units"]))] = (row["accuracy"], row["seconds"])

    @staticmethod
    def key(config: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(sorted((k, v) for k, v in config.items()))

    def fit(self, config: Mapping[str, Any], units: float) -> tuple[float, float]:
        """(validation accuracy in percent, CPU seconds of the fit) at ``units``/27 of the training rows."""
        u = int(round(units))
        if not 1 <= u <= MAX_UNITS:
            raise ValueError(f"budget {units} outside 1..{MAX_UNITS} units")
        k = (self.key(config), u)
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        rows = max(2 * self.spec.n_classes, int(math.ceil(TRAIN_ROWS * u / MAX_UNITS)))
        with threadpool_limits(1):  # one OpenMP thread, so thread_time is the whole fit's CPU
            t0 = time.thread_time()
            model = HistGradientBoostingClassifier(
                max_iter=MAX_ITER, learning_rate=float(config["learning_rate"]),
                max_leaf_nodes=int(config["max_leaf_nodes"]), min_samples_leaf=int(config["min_samples_leaf"]),
                l2_regularization=float(config["l2_regularization"]), max_features=float(config["max_features"]),
                early_stopping=False, random_state=0,
            ).fit(self.x_train[:rows], self.y_train[:rows])
            accuracy = 100.0 * float(model.score(self.x_val, self.y_val))
            seconds = time.thread_time() - t0
        with self._lock:
            self._cache[k] = (accuracy, seconds)
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a") as f:
                    f.write(json.dumps({"config": [list(p) for p in k[0]], "units": u, "accuracy": accuracy,
                                        "seconds": seconds}) + "\n")
        return accuracy, seconds

    # --- the interface bench.search_sim.simulate trains through -----------------------------------------
    def prefetch(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Nothing to batch: each fit is its own."""

    def train(self, config: Mapping[str, Any], budget: float, state: Any) -> tuple[float, float, Any]:
        """A promoted trial refits on its larger share: billed the whole fit again."""
        accuracy, seconds = self.fit(config, budget)
        return accuracy, seconds, state

    # --- the interface the peers (bench.peers) step through ---------------------------------------------
    def step(self, config: Mapping[str, Any], units: int, time_before: float) -> tuple[float, float, float]:
        accuracy, seconds = self.fit(config, units)
        return accuracy, time_before + seconds, seconds

    def evaluate_full(self, config: Mapping[str, Any] | None) -> float | None:
        return None if config is None else self.fit(config, MAX_UNITS)[0]


@functools.lru_cache(maxsize=16)
def table(name: str) -> FractionTable:
    return FractionTable(name)


def peer_source(name: str) -> FractionTable:
    """For a Ray Tune worker: the same table, without the main process's cache file (one writer)."""
    return FractionTable(name, cache_dir=None)


@functools.lru_cache(maxsize=16)
def reference(name: str, pool: int = POOL_SIZE, k: int = 128) -> Any:
    """E[best of 128 random full-budget configurations] over a pool drawn with a seed of its own."""
    from bench.search_sim import Reference, expected_max_of_k

    t = table(name)
    rng = np.random.default_rng(10_007)
    fits = [t.fit(t.space.sample(rng), MAX_UNITS) for _ in range(pool)]
    acc = np.array([a for a, _ in fits])
    sec = np.array([s for _, s in fits])
    draws = [np.max(rng.choice(acc, size=k, replace=False)) for _ in range(2000)]
    return Reference(name, expected_max_of_k(acc, k), k * float(np.mean(sec)) / 3600.0, float(np.std(draws)),
                     float(acc.max()), pool, tuple(acc.tolist()))
