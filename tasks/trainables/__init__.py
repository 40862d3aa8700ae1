"""Trainables: one model family per module, all behind :class:`~tasks.trainables.base.Trainable`.

A config names a trainable by ``kind`` only. The kind is looked up among the built-in families and
the installed packages' ``rungflow.trainables`` entry points (``name = "package.module:Class"`` in
the package's own metadata); a config can never name a module or an import string, so a sweep
config from an untrusted source cannot make rungflow import or run code that is not installed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from importlib.util import find_spec

from rungflow.tasks.trainables.base import TRAINABLES, Trainable, TrainableError, TrainOutcome, TrainRequest

# kind -> module; imported on first use so a sweep of one family never imports another's heavy deps.
_MODULES = {
    "torch_mlp": "rungflow.tasks.trainables.torch_mlp",
    "yahpo_lcbench": "rungflow.tasks.trainables.yahpo_lcbench",
    "noop": "rungflow.tasks.trainables.noop",
    "hgb": "rungflow.tasks.trainables.sklearn_models",
    "random_forest": "rungflow.tasks.trainables.sklearn_models",
    "linear": "rungflow.tasks.trainables.sklearn_models",
    "autogluon": "rungflow.tasks.trainables.autogluon",
    "autosklearn": "rungflow.tasks.trainables.autosklearn",
    "xgboost": "rungflow.tasks.trainables.xgboost_family",
    "lightgbm": "rungflow.tasks.trainables.lightgbm_family",
    "catboost": "rungflow.tasks.trainables.catboost_family",
    "mixed": "rungflow.tasks.trainables.mixed",
    "function": "rungflow.tasks.trainables.function",
    "raytune_function": "rungflow.tasks.trainables.raytune_function",
    "optuna_objective": "rungflow.tasks.trainables.optuna_objective",
}

# kind -> (module it cannot run without, the extra that installs it): checked before the family's module is
# imported, so a missing extra is one line naming the install, not an ImportError traceback mid-sweep.
_EXTRAS = {
    "torch_mlp": ("torch", "torch"),
    "yahpo_lcbench": ("onnxruntime", "lcbench"),
    "xgboost": ("xgboost", "boost"),
    "lightgbm": ("lightgbm", "boost"),
    "catboost": ("catboost", "boost"),
}

ENTRY_POINT_GROUP = "rungflow.trainables"

__all__ = ["get_trainable_class", "known_kinds", "missing_extra", "Trainable", "TrainRequest", "TrainOutcome", "TrainableError",
           "ENTRY_POINT_GROUP"]


# Before the single rungflow namespace these were top-level packages; old paths get a pointer to the new ones.
_MOVED_PACKAGES = ("tasks", "flows", "budgets", "deployments")


def moved_module_hint(name: str) -> str | None:
    """For a pre-namespace module path (``tasks.trainables.noop``...), the sentence naming where it lives now."""
    root = name.split(".")[0].split(":")[0]
    if root not in _MOVED_PACKAGES:
        return None
    kind = next((k for k, module in _MODULES.items() if name.split(":")[0].startswith(module.removeprefix("rungflow."))), None)
    hint = f"{name!r} is an old module path: rungflow's modules now live under rungflow. (e.g. 'rungflow.{name}')"
    return hint + (f"; in a config, name the family instead: kind: {kind}" if kind else "")


def _plugins() -> dict[str, object]:
    # Built-in names win: an installed package cannot shadow noop or torch_mlp.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _MODULES}


def missing_extra(kind: str) -> str | None:
    """The extra to install before the built-in ``kind`` can run; None when nothing is missing."""
    module, extra = _EXTRAS.get(kind, (None, None))
    return extra if module is not None and find_spec(module) is None else None


def known_kinds() -> list[str]:
    return sorted(set(_MODULES) | set(_plugins()))


def get_trainable_class(kind: str) -> type[Trainable]:
    if kind in _MODULES:
        extra = missing_extra(kind)
        if extra is not None:
            raise TrainableError(f"trainable.kind={kind} needs {_EXTRAS[kind][0]}, which is not installed; "
                                 f"pip install 'rungflow[{extra}]'")
        import_module(_MODULES[kind])
        return TRAINABLES[kind]
    if kind in TRAINABLES:
        return TRAINABLES[kind]
    plugin = _plugins().get(kind)
    if plugin is None:
        raise KeyError(kind)
    try:
        cls = plugin.load()  # type: ignore[attr-defined]
    except ModuleNotFoundError as exc:
        hint = moved_module_hint(exc.name or "")
        if hint is None:
            raise
        raise TrainableError(f"entry point {ENTRY_POINT_GROUP}:{kind} = {plugin.value}: {hint}") from None  # type: ignore[attr-defined]
    if not (isinstance(cls, type) and issubclass(cls, Trainable)):
        raise TrainableError(f"entry point {ENTRY_POINT_GROUP}:{kind} = {plugin.value} is not a Trainable subclass; "  # type: ignore[attr-defined]
                             "fix the package that registers it")
    TRAINABLES[kind] = cls
    return cls
