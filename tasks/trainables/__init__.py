"""Trainables: one model family per module, all behind :class:`~tasks.trainables.base.Trainable`."""

from __future__ import annotations

from importlib import import_module

from tasks.trainables.base import TRAINABLES, Trainable, TrainableError, TrainOutcome, TrainRequest

# kind -> module; imported on first use so a sweep of one family never imports another's heavy deps.
_MODULES = {
    "torch_mlp": "tasks.trainables.torch_mlp",
    "yahpo_lcbench": "tasks.trainables.yahpo_lcbench",
    "noop": "tasks.trainables.noop",
    "hgb": "tasks.trainables.sklearn_models",
    "random_forest": "tasks.trainables.sklearn_models",
    "linear": "tasks.trainables.sklearn_models",
    "autogluon": "tasks.trainables.autogluon",
    "autosklearn": "tasks.trainables.autosklearn",
    "mixed": "tasks.trainables.mixed",
}

__all__ = ["get_trainable_class", "known_kinds", "Trainable", "TrainRequest", "TrainOutcome", "TrainableError"]


def known_kinds() -> list[str]:
    return sorted(_MODULES)


def get_trainable_class(kind: str) -> type[Trainable]:
    if kind not in _MODULES:
        raise KeyError(kind)
    import_module(_MODULES[kind])
    return TRAINABLES[kind]
