"""What the gradient-boosting libraries' families share: the budget is boosting rounds, grown on the checkpoint.

XGBoost, LightGBM and CatBoost each add trees to a model they are handed, so a promoted trial continues
from its checkpoint and trains only the rounds its new rung adds. Each library's family
(``xgboost_family``, ``lightgbm_family``, ``catboost_family``) says how it grows a model, how it checks for
a GPU and how its model is saved; this module runs the trial's side of it: the rounds, the trial's
threads, and the GPU with its CPU fallback. :class:`BoosterModel` is the fitted model they share: a booster
that scores, saves and loads in its library's own file format.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from rungflow.budgets.space import FloatParam, SearchSpace
from rungflow.tasks.data import Dataset
from rungflow.tasks.models import FittedModel, ModelError, _kwargs_of
from rungflow.tasks.trainables.base import TrainableError
from rungflow.tasks.trainables.tabular import FamilyFit, TabularTrainable, number, trial_threads

__all__ = ["BoostingTrainable", "BoosterModel", "Grown", "BoostSettings", "categorical_columns", "categorical_frame", "read_settings",
           "binary_as_two_columns", "first_line"]

log = logging.getLogger("rungflow.trainables.boosting")


@dataclass(frozen=True)
class BoostSettings:
    """How one trial grows its model, besides its config: where, with how many threads, from which seed."""

    target_rounds: int
    seed: int
    threads: int
    on_gpu: bool


class BoosterModel(FittedModel):
    """A library's booster as a fitted model, saved in the library's own file format as ``model_file``.

    Subclasses implement :meth:`_predict` and :meth:`_read_booster`.
    """

    model_file: ClassVar[str]
    # How a load error names what the file should have held, article included: "an XGBoost model".
    model_name: ClassVar[str]

    def __init__(self, booster: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.booster = booster

    @abstractmethod
    def _predict(self, x: np.ndarray) -> Any:
        """The booster's output: class probabilities, or P(class 1) under a binary objective, or predictions."""

    @classmethod
    @abstractmethod
    def _read_booster(cls, path: Path) -> Any:
        """The booster saved at ``path``; :meth:`_not_a_model` for a file the library cannot read."""

    def _scores(self, x: np.ndarray) -> np.ndarray:
        out = self._predict(x)
        if self.task == "classification" and np.ndim(out) == 1:
            return binary_as_two_columns(out)
        return np.asarray(out, dtype=np.float64)

    def _save_files(self, directory: Path) -> None:
        self.booster.save_model(str(directory / self.model_file))

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> BoosterModel:
        return cls(cls._read_booster(directory / cls.model_file), **_kwargs_of(manifest))

    @classmethod
    def _not_a_model(cls, path: Path, exc: BaseException) -> ModelError:
        return ModelError(f"{path}: not {cls.model_name} ({first_line(exc)}); save it again")


@dataclass
class Grown:
    """A library's model after growing: its rounds before and after, and the bytes to continue from."""

    model: FittedModel
    start_rounds: int
    rounds: int
    checkpoint: bytes


class BoostingTrainable(TabularTrainable):
    """A boosting library as a family; subclasses implement :meth:`grow`, :meth:`gpu_unavailable` and the space.

    ``knobs`` maps each config key the family reads to (default, int or float); ``fractions`` are the keys
    that must lie in (0, 1].
    """

    knobs: ClassVar[Mapping[str, tuple[Any, Callable[[Any], Any]]]]
    fractions: ClassVar[tuple[str, ...]] = ()

    budget_unit: ClassVar[str] = "boosting rounds"
    default_budget: ClassVar[tuple[float, float]] = (10, 270)
    resumable: ClassVar[bool] = True
    # The libraries apply a new learning rate to the trees they add; the tree shape parameters are part
    # of what the checkpoint was grown with, so population-based training leaves them alone.
    mutable_params: ClassVar[frozenset[str] | None] = frozenset({"learning_rate"})

    @abstractmethod
    def grow(self, config: Mapping[str, Any], dataset: Dataset, settings: BoostSettings, checkpoint: bytes | None) -> Grown:
        """Grow the model in ``checkpoint`` (or a new one) to ``settings.target_rounds``; never fewer rounds than it has."""

    @abstractmethod
    def gpu_unavailable(self) -> str | None:
        """Why this library cannot train on the GPU the trial holds (no GPU, or a build without one); None if it can."""

    def settings(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config's knobs as numbers, defaults filled in; a one-line error for a bad or unknown one."""
        return read_settings(config, self.kind, self.knobs, self.fractions)

    def check_space(self, space: SearchSpace) -> None:
        unknown = [name for name in space.names if name not in self.knobs]
        if unknown:
            raise ValueError(f"space.{unknown[0]}: {self.kind} has no such parameter; use some of {', '.join(self.knobs)}")

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        settings = BoostSettings(target_rounds=max(int(round(budget)), 1), seed=seed, threads=trial_threads(),
                                 on_gpu=self._on_gpu(device))
        grown = self.grow(config, dataset, settings, checkpoint)
        metrics = {"boosting_rounds": float(grown.rounds), "on_gpu": float(settings.on_gpu)}
        return FamilyFit(grown.model, float(grown.rounds), float(grown.rounds - grown.start_rounds), grown.checkpoint, metrics)

    def _on_gpu(self, device: str) -> bool:
        if not device.startswith("cuda"):
            return False
        reason = self.gpu_unavailable()
        if reason is not None:
            log.warning("%s: the trial holds %s, but %s; training on CPU", self.kind, device, reason)
            return False
        return True


# The ranges AutoGluon's and FLAML's spaces give every gradient-boosting library, narrowed to what a few hundred rounds
# can use; each family adds its own tree-shape knobs between them.
LEARNING_RATE = FloatParam("learning_rate", 0.01, 0.3, log=True)
ROW_SUBSAMPLE = FloatParam("subsample", 0.5, 1.0)
L2_PENALTY = FloatParam("reg_lambda", 1e-3, 100.0, log=True)
L1_PENALTY = FloatParam("reg_alpha", 1e-3, 10.0, log=True)


def column_subsample(name: str) -> FloatParam:
    return FloatParam(name, 0.5, 1.0)


def task_objective(dataset: Dataset, regression: str, binary: str, multiclass: str) -> str:
    """The library's name for the loss of this dataset's task."""
    if dataset.task == "regression":
        return regression
    return binary if dataset.n_classes == 2 else multiclass


def read_settings(config: Mapping[str, Any], kind: str, defaults: Mapping[str, tuple[Any, Callable[[Any], Any]]],
                  fractions: tuple[str, ...] = ()) -> dict[str, Any]:
    """The family's knobs from ``config`` (defaults for those a space leaves out), with one-line errors.

    ``defaults`` maps each knob to (default, int or float); ``fractions`` must lie in (0, 1], and a
    learning rate must be positive, as every library needs.
    """
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise TrainableError(f"{kind}: unknown config keys {unknown}; this family takes {', '.join(defaults)}")
    values = {key: number(config, key, default, kind, cast) for key, (default, cast) in defaults.items()}
    for key in fractions:
        if not 0.0 < values[key] <= 1.0:
            raise TrainableError(f"{kind}: config {key}={values[key]} must be in (0, 1]")
    if "learning_rate" in values and not values["learning_rate"] > 0:
        raise TrainableError(f"{kind}: config learning_rate={values['learning_rate']} must be positive")
    return values


def categorical_columns(feature_names: list[str] | tuple[str, ...], categories: Mapping[str, Any]) -> list[int]:
    """Indices of the columns the dataset encoded as category codes (passed to the libraries as categorical)."""
    return [i for i, name in enumerate(feature_names) if name in categories]


def categorical_frame(x: np.ndarray, feature_names: list[str] | tuple[str, ...], categories: Mapping[str, Any]) -> pd.DataFrame:
    """``x`` as a frame whose categorical columns are integer codes, -1 for missing or unseen (CatBoost takes
    categories as integers or strings, never NaN)."""
    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=list(feature_names))
    for index in categorical_columns(feature_names, categories):
        column = frame.iloc[:, index]
        frame.isetitem(index, np.where(np.isnan(column), -1, column).astype(np.int64))
    return frame


def binary_as_two_columns(p: np.ndarray) -> np.ndarray:
    """P(class 1) as the (n, 2) probabilities every family's classifier returns."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    return np.column_stack([1.0 - p, p])


def first_line(exc: BaseException) -> str:
    """A library error's first line: enough to name the cause in a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
