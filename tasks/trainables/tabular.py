"""The shared shape of tabular model families: data from ``options.data``, a fit that also yields a model.

A family implements :meth:`TabularTrainable.fit_to_budget` once; :meth:`~TabularTrainable.train`
(the sweep's call, with checkpoints) and :meth:`~TabularTrainable.fit` (one model from scratch, for
``fit_model`` and the saved winner) are both built on it, so the model a sweep saves is the model
its trials scored.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from rungflow.tasks.data import DataError, Dataset, DataSpec, load_dataset
from rungflow.tasks.models import FittedModel, score_predictions
from rungflow.tasks.trainables.base import Trainable, TrainableError, TrainableOptions, TrainOutcome, TrainRequest

__all__ = ["TabularOptions", "TabularTrainable", "FamilyFit", "trial_seed", "trial_threads"]



class TabularOptions(TrainableOptions):
    """``data``: the table, label, task and split (see :class:`tasks.data.DataSpec`); ``score``: the validation
    metric a trial reports as its score (pair it with the sweep's ``metric``, e.g. val_log_loss with mode min)."""

    data: DataSpec
    score: Literal["val_score", "val_accuracy", "val_log_loss", "val_r2", "val_rmse"] = "val_score"


def trial_seed(seed: int, trial_id: str) -> int:
    """A stable 31-bit seed per (sweep seed, trial): scikit-learn's random_state takes at most 2**32 - 1."""
    digest = hashlib.blake2b(repr((seed, trial_id)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**31 - 1)


# The trial's CPU share, for families with their own thread pools (boosting libraries). A context variable
# because trials of the thread runtime share one trainable instance, each in its own thread.
_TRIAL_THREADS: ContextVar[int] = ContextVar("rungflow_trial_threads", default=1)


def trial_threads() -> int:
    """Threads the running trial may use: its whole CPUs, at least one (one outside a trial)."""
    return _TRIAL_THREADS.get()


@contextmanager
def _cpu_share(cpus: float) -> Iterator[None]:
    token = _TRIAL_THREADS.set(max(1, int(cpus)))
    try:
        yield
    finally:
        _TRIAL_THREADS.reset(token)


@dataclass
class FamilyFit:
    """What one family's fit returns: the model, how far it got, and what to resume from next time."""

    model: FittedModel
    budget_reached: float
    budget_trained: float
    checkpoint: bytes | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def outcome(self, metrics: Mapping[str, float], validation_predictions: Any = None, score: str = "val_score") -> TrainOutcome:
        """The trial's report of this fit, scored by ``metrics[score]``."""
        if score not in metrics:
            raise TrainableError(f"trainable.options.score = {score}: not a metric of this task ({', '.join(sorted(metrics))}); "
                                 "use val_score, or one the task reports")
        return TrainOutcome(score=metrics[score], budget_reached=self.budget_reached, budget_trained=self.budget_trained,
                            checkpoint=self.checkpoint, metrics=metrics, validation_predictions=validation_predictions)


class TabularTrainable(Trainable):
    """A model family on a tabular dataset; the score is ``val_score`` (accuracy, or R² for regression)."""

    metric: ClassVar[str] = "val_score"
    Options: ClassVar[type[TrainableOptions]] = TabularOptions

    def data_spec(self) -> DataSpec:
        return self.options.data  # type: ignore[attr-defined]

    def dataset(self) -> Dataset:
        try:
            return load_dataset(self.data_spec())
        except DataError as exc:
            raise TrainableError(f"trainable.options.{exc}") from None

    @abstractmethod
    def fit_to_budget(self, config: Mapping[str, Any], budget: float, dataset: Dataset, *, device: str, seed: int,
                      checkpoint: bytes | None = None) -> FamilyFit:
        """Train ``config`` up to ``budget`` (continuing from ``checkpoint`` when given); never evaluates."""

    def train(self, request: TrainRequest) -> TrainOutcome:
        dataset = self.dataset()
        with _one_thread(), _cpu_share(request.cpus):
            fit = self.fit_to_budget(request.config, request.budget, dataset, device=request.device,
                                     seed=self.seed_for(request.seed, request.trial_id), checkpoint=request.checkpoint)
            predictions = fit.model.validation_scores(dataset)
            metrics = {**score_predictions(dataset.task, dataset.y_valid, predictions), **fit.metrics}
        self.discard(fit.model)
        return fit.outcome(metrics, predictions, getattr(self.options, "score", "val_score"))

    def seed_for(self, seed: int, trial_id: str) -> int:
        """The seed a trial trains with; ``fit(seed=seed_for(...))`` refits exactly the trial's model."""
        return trial_seed(seed, trial_id)

    def discard(self, model: FittedModel) -> None:
        """Release what a trial's model holds outside memory (files) once it is scored."""

    def fit(self, config: Mapping[str, Any], budget: float, dataset: Dataset, *, device: str = "cpu", seed: int = 0,
            cpus: float = 1.0) -> FittedModel:
        """One model from scratch at ``budget``; its ``metrics`` are the validation metrics."""
        with _one_thread(), _cpu_share(cpus):
            fit = self.fit_to_budget(config, budget, dataset, device=device, seed=seed)
            fit.model.metrics = {**fit.model.evaluate(dataset), **fit.metrics}
        fit.model.budget = fit.budget_reached
        return fit.model


def _one_thread():
    """One BLAS/OpenMP thread per trial: trials already fill the cores, and HGB's OpenMP threads spin
    hard on a loaded machine (a 4 s fit took 30 s with the cores shared)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def number(config: Mapping[str, Any], key: str, default: float, kind: str, cast=float) -> Any:
    """``config[key]`` (or the default) as a number, with an error naming the family and key."""
    value = config.get(key, default)
    if value is None:
        return None
    try:
        return cast(round(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        raise TrainableError(f"{kind}: config value {key}={value!r} must be a number") from None
