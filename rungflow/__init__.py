"""rungflow: budget-capped AutoML sweeps as Prefect flows on Ray.

The public entry points: load and validate a sweep config, run it, read its result back.
"""

from __future__ import annotations

from rungflow.config import ConfigError, SweepConfig, load_config
from rungflow.results import load_result

__all__ = ["ConfigError", "SweepConfig", "load_config", "load_result", "run_sweep"]


def run_sweep(config: SweepConfig, run_dir=None):
    """Run ``config`` as a Prefect flow (imported lazily: Prefect and Ray load only when a sweep runs)."""
    from flows.sweep import run_sweep as _run

    return _run(config, run_dir)
