"""rungflow: budget-capped AutoML sweeps as Prefect flows on Ray.

The public entry points: load and validate a sweep config, run it, read its result back.

Attributes load lazily (PEP 562), so ``import rungflow.budgets.rungs`` costs the standard library and
numpy only, and Prefect, Ray and torch load when a sweep actually runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# public name -> (module, attribute in it)
_LAZY: dict[str, tuple[str, str]] = {
    "ConfigError": ("rungflow.config", "ConfigError"),
    "SweepConfig": ("rungflow.config", "SweepConfig"),
    "load_config": ("rungflow.config", "load_config"),
    "load_result": ("rungflow.results", "load_result"),
    "run_sweep": ("rungflow.flows.sweep", "run_sweep"),
    "sweep": ("rungflow.flows.api", "sweep"),
    "SweepResult": ("rungflow.flows.api", "SweepResult"),
    "Report": ("rungflow.tasks.trainables.function", "Report"),
    "trial_device": ("rungflow.tasks.trainables.function", "trial_device"),
    "load_model": ("rungflow.tasks.models", "load_model"),
    "fit_model": ("rungflow.tasks.models", "fit_model"),
    "load_dataset": ("rungflow.tasks.data", "load_dataset"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'rungflow' has no attribute {name!r}") from None
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
