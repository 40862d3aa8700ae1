"""Trainables: one model family per module, all behind :class:`~tasks.trainables.base.Trainable`.

A config names a trainable by ``kind`` only. The kind is looked up among the built-in families and
the installed packages' ``rungflow.trainables`` entry points (``name = "package.module:Class"`` in
the package's own metadata); a config can never name a module or an import string, so a sweep
config from an untrusted source cannot make rungflow import or run code that is not installed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

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

ENTRY_POINT_GROUP = "rungflow.trainables"

__all__ = ["get_trainable_class", "known_kinds", "Trainable", "TrainRequest", "TrainOutcome", "TrainableError",
           "ENTRY_POINT_GROUP"]


def _plugins() -> dict[str, object]:
    # Built-in names win: an installed package cannot shadow noop or torch_mlp.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _MODULES}


def known_kinds() -> list[str]:
    return sorted(set(_MODULES) | set(_plugins()))


def get_trainable_class(kind: str) -> type[Trainable]:
    if kind in _MODULES:
        import_module(_MODULES[kind])
        return TRAINABLES[kind]
    if kind in TRAINABLES:
        return TRAINABLES[kind]
    plugin = _plugins().get(kind)
    if plugin is None:
        raise KeyError(kind)
    cls = plugin.load()  # type: ignore[attr-defined]
    if not (isinstance(cls, type) and issubclass(cls, Trainable)):
        raise TrainableError(f"entry point {ENTRY_POINT_GROUP}:{kind} = {plugin.value} is not a Trainable subclass; "  # type: ignore[attr-defined]
                             "fix the package that registers it")
    TRAINABLES[kind] = cls
    return cls
