"""rungflow: budget-capped AutoML sweeps as Prefect flows on Ray.

The public entry points: load and validate a sweep config, run it, read its result back.

Attributes load lazily (PEP 562), so ``import rungflow.budgets.rungs`` costs the standard library and
numpy only, and Prefect, Ray and torch load when a sweep actually runs.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# Prefect's SDK prints a telemetry notice on its first import in a terminal of a machine where it never ran, and
# sends onboarding events; only DO_NOT_TRACK (or a CI variable) turns that off. Its embedded server's analytics
# would, offline, log a failed heartbeat. Set here, before any rungflow module can import Prefect, so a user's first
# sweep is as quiet as their hundredth; a user's own setting of either variable wins.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# public name -> (module, attribute in it)
_LAZY: dict[str, tuple[str, str]] = {
    "ConfigError": ("rungflow.config", "ConfigError"),
    "SweepConfig": ("rungflow.config", "SweepConfig"),
    "load_config": ("rungflow.config", "load_config"),
    "load_result": ("rungflow.results", "load_result"),
    "run_sweep": ("rungflow.flows.sweep", "run_sweep"),
    "sweep": ("rungflow.flows.api", "sweep"),
    "automl": ("rungflow.flows.automl", "automl"),
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
