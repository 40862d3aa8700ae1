"""The trainable contract: train a configuration up to a budget, resuming from a checkpoint.

One module per model family under ``tasks/trainables/``; each registers a subclass of
:class:`Trainable` in :data:`TRAINABLES` under its ``kind``. The sweep flow only ever calls
:meth:`Trainable.train`, inside a train task, on whatever runtime holds the trial.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from rungflow.budgets.space import SearchSpace

__all__ = ["TrainRequest", "TrainOutcome", "Trainable", "TrainableOptions", "TRAINABLES", "register", "TrainableError"]


class TrainableError(RuntimeError):
    """A trainable that cannot run as configured (missing data, bad option); the message names the fix."""


@dataclass(frozen=True)
class TrainRequest:
    """What one train task asks of a trainable.

    ``checkpoint`` is the bytes the same trial returned at its previous rung (None for a fresh trial):
    a promoted trial continues from ``checkpoint`` up to ``budget``, it does not start again.
    """

    trial_id: str
    config: Mapping[str, Any]
    budget: float
    checkpoint: bytes | None = None
    device: str = "cpu"
    seed: int = 0
    #: The CPUs the trial holds; a family with its own thread pool uses this many threads.
    cpus: float = 1.0


@dataclass(frozen=True)
class TrainOutcome:
    """What a trainable reports after reaching ``budget``.

    ``gpu_seconds`` is the trainable's own cost report (a surrogate knows what the real run would
    have cost); None means "bill me wall-clock x GPUs held", which the train task measures.
    ``budget_trained`` is the budget actually spent in this call (e.g. epochs run since the checkpoint).
    ``validation_predictions``: what the scored model predicted on the validation rows (class probabilities or
    numbers), kept beside the checkpoint when the sweep builds an ensemble; None where the trainable has none.
    """

    score: float
    budget_reached: float
    budget_trained: float
    checkpoint: bytes | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    gpu_seconds: float | None = None
    validation_predictions: Any = None


class TrainableOptions(BaseModel):
    """Base of each trainable's options model: unknown options are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Trainable(ABC):
    """A model family that trains to a budget.

    Class attributes describe it to the config layer: ``kind`` is its name in YAML, ``metric`` and
    ``mode`` its default objective, ``budget_unit`` what one budget unit means (e.g. "epochs"),
    ``integer_budget`` whether budgets are rounded to whole units, ``default_budget`` the
    (min, max) range a sweep uses when the config gives none.
    """

    kind: ClassVar[str]
    metric: ClassVar[str]
    mode: ClassVar[Literal["max", "min"]] = "max"
    budget_unit: ClassVar[str] = "epochs"
    integer_budget: ClassVar[bool] = True
    default_budget: ClassVar[tuple[float, float]] = (1, 27)
    Options: ClassVar[type[TrainableOptions]] = TrainableOptions
    #: Whether :meth:`train` continues from a checkpoint it returned (population-based training needs it).
    resumable: ClassVar[bool] = False
    #: Parameters that may change between rungs of one trial, on resume (None: every one). Population-based
    #: training mutates only these; structural ones (layer sizes) would not fit the checkpoint.
    mutable_params: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = self.Options(**dict(options or {}))

    def default_space(self) -> SearchSpace | None:
        """The space searched when the config gives none; None if the family has no sensible default."""
        return None

    def spent_before_sweep(self) -> list[dict[str, Any]]:
        """Runs of the user's code this process made for the sweep before its first trial, each handed out once for
        the ledger to bill: ``{"key", "kind", "runs", "wall_seconds", "started_at"}``. Most trainables make none."""
        return []

    def first_configs(self, first_budget: float) -> list[dict[str, Any]]:
        """Configurations the user's code already ran before the sweep to a first rung of ``first_budget``, proposed
        first: :meth:`train` gives their results back rather than running them again. Most trainables have none."""
        return []

    def check(self) -> None:
        """Raise :class:`TrainableError` naming the fix when data the trainable needs is missing.

        Called before a sweep spends anything, so a wrong path fails in a second, not as a sweep of failed trials.
        """

    def check_space(self, space: SearchSpace) -> None:
        """Raise ValueError (one line naming the parameter and the fix) if ``space`` cannot drive this trainable."""

    def estimate_gpu_seconds(self, config: Mapping[str, Any], budget_from: float, budget_to: float) -> float | None:
        """Predicted cost of training ``config`` from ``budget_from`` to ``budget_to``, for plans; None if unknown."""
        return None

    @abstractmethod
    def train(self, request: TrainRequest) -> TrainOutcome:
        """Train ``request.config`` from ``request.checkpoint`` (or scratch) up to ``request.budget``.

        Called once per trial per rung, in the worker that holds the trial's resources. Raise on
        failure; a NaN or infinite score is recorded as a failed trial by the caller.
        """


TRAINABLES: dict[str, type[Trainable]] = {}


def register(cls: type[Trainable]) -> type[Trainable]:
    TRAINABLES[cls.kind] = cls
    return cls
