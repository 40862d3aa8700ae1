"""rungflow: budget-capped AutoML sweeps as Prefect flows on Ray.

The public entry points: load and validate a sweep config, run it, read its result back.
"""

from __future__ import annotations

from rungflow.config import ConfigError, SweepConfig, load_config
from rungflow.results import load_result

__all__ = ["ConfigError", "SweepConfig", "load_config", "load_result", "run_sweep", "load_model", "fit_model", "load_dataset"]


def run_sweep(config: SweepConfig, run_dir=None):
    """Run ``config`` as a Prefect flow (imported lazily: Prefect and Ray load only when a sweep runs)."""
    from flows.sweep import run_sweep as _run

    return _run(config, run_dir)


def load_model(directory):
    """The model saved by ``save_model`` in ``directory``, or the winner saved in a sweep's run directory."""
    from tasks.models import load_model as _load

    return _load(directory)


def fit_model(trainable_kind, options, config, budget, dataset=None, *, device="cpu", seed=0):
    """Train one configuration from scratch at ``budget``; see :func:`tasks.models.fit_model`."""
    from tasks.models import fit_model as _fit

    return _fit(trainable_kind, options, config, budget, dataset, device=device, seed=seed)


def load_dataset(spec):
    """The split, encoded dataset a ``data:`` block names; see :func:`tasks.data.load_dataset`."""
    from tasks.data import load_dataset as _load

    return _load(spec)
