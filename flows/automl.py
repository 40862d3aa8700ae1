"""``rungflow automl TABLE --label COL`` and ``rungflow.automl(frame_or_path, label=...)``: one call from a table to a model.

Nothing here runs a sweep of its own: the table is checked (:mod:`tasks.table_audit`), an ordinary
:class:`~rungflow.config.SweepConfig` is built around the ``mixed`` trainable, and that config runs as any sweep
does, with the same run directory, leaderboard, plot, Prefect UI, ``result.json`` and saved model. The defaults,
and why each is what it is, are in docs/automl.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rungflow.config import ConfigError, SweepConfig, slug, validate

__all__ = ["automl", "automl_config", "AutoMLPlan", "METRICS", "DEFAULT_TIME_LIMIT", "COST_AWARE", "record_portfolio"]

log = logging.getLogger("rungflow.automl")

# auto-sklearn's default time_left_for_this_task; a time limit is the budget a user sets first.
DEFAULT_TIME_LIMIT = 3600.0
# Hyperband iterations (about 490 trials at eta 3 over 1-27 units): on most tables the time limit or the stop at
# the price ends the run first; a small table that finishes them sooner has been searched enough.
ITERATIONS = 10
# search.cost_aware: off. On the suite's dev tables it ran more trials for fewer GPU-hours but scored no better
# (docs/automl.md, "Cost-aware search").
COST_AWARE: bool | str = False
# Each trial is billed a quarter GPU: four tabular trials share a GPU, and GPU-hour caps and the price read the same
# on a CPU-only machine as on the GPU cluster.
GPUS_PER_TRIAL = 0.25
# --metric: (the metric a trial reports, its mode, the task it belongs to).
METRICS: dict[str, tuple[str, str, str]] = {
    "accuracy": ("val_accuracy", "max", "classification"),
    "log_loss": ("val_log_loss", "min", "classification"),
    "r2": ("val_r2", "max", "regression"),
    "rmse": ("val_rmse", "min", "regression"),
}
SAVED_TABLE = "table.parquet"


@dataclass(frozen=True)
class AutoMLPlan:
    """The sweep config an AutoML call runs, the notes on what was left out of the table, and what the portfolio
    does: ``portfolio`` is the line the summary and ``result.json`` show (started from it, off, or why not)."""

    config: SweepConfig
    notes: tuple[str, ...]
    portfolio: dict[str, Any] = dataclasses.field(default_factory=dict)


def _portfolio_section(portfolio: str | Path | Mapping[str, Any] | None, config: SweepConfig
                       ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the ``history`` section that starts the sweep from the portfolio, or None; what the summary says)."""
    from rungflow.tasks.automl_portfolio import portfolio_in_space, shipped_portfolio

    if portfolio is None or portfolio == "off":
        return None, {"used": False, "line": "portfolio: off; the search started cold"}
    if isinstance(portfolio, Mapping):
        learned = dict(portfolio)
    elif portfolio == "on":
        learned = shipped_portfolio()
    else:
        path = Path(str(portfolio))
        try:
            learned = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--portfolio {str(portfolio)!r}: not a readable portfolio file ({type(exc).__name__}); "
                              "use on, off, or a JSON file that python -m bench automl-portfolio wrote") from None
    if not isinstance(learned.get("configs"), list):
        raise ConfigError(f"--portfolio {str(portfolio)!r}: it has no 'configs' list; use on, off, or a JSON file that "
                          "python -m bench automl-portfolio wrote")
    source = str(learned.get("source") or "the given portfolio")
    held = portfolio_in_space(learned, config.search_space())
    if not held:
        return None, {"used": False, "source": source,
                      "line": f"portfolio: none of the {len(learned['configs'])} configurations of {source} is in this "
                              f"search space (families {', '.join(config.search_space()['family'].choices)}); "
                              "the search started cold"}
    section = {"configs": held, "configs_source": source, "portfolio": len(held), "model": "off"}
    left = len(learned["configs"]) - len(held)
    line = (f"portfolio: {len(held)} configurations of {source}" + (f" ({left} of another family left out)" if left else "")
            + ", tried beside the searcher's first draws and judged on this table")
    return section, {"used": True, "source": source, "configs": len(held), "line": line}


def _runtime_section(runtime: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if runtime is None:
        return {"gpus_per_trial": GPUS_PER_TRIAL}
    if isinstance(runtime, Mapping):
        return {"gpus_per_trial": GPUS_PER_TRIAL, **runtime}
    if runtime in ("thread", "ray"):
        return {"kind": runtime, "gpus_per_trial": GPUS_PER_TRIAL}
    if "://" in runtime or ":" in runtime:
        return {"kind": "ray", "address": runtime, "gpus_per_trial": GPUS_PER_TRIAL}
    raise ConfigError(f"--runtime {runtime!r}: use thread (in this process), ray (local Ray) or a Ray cluster's address "
                      "(ray://HOST:10001 or HOST:6379)")


def automl_config(frame_or_path: Any, label: str, *, time_limit: float | None = DEFAULT_TIME_LIMIT,
                  max_gpu_hours: float | None = None, max_cost: float | None = None,
                  price_per_gpu_hour: float | None = None, min_gain_per_gpu_hour: float | None = None,
                  metric: str | None = None, families: Sequence[str] | None = None,
                  runtime: str | Mapping[str, Any] | None = None, out: str | Path | None = None, seed: int = 0,
                  name: str | None = None, cost_aware: bool | str = COST_AWARE,
                  portfolio: str | Path | Mapping[str, Any] | None = "off") -> AutoMLPlan:
    """Check the table and build the sweep config; raises :class:`ConfigError` (one line) before anything is spent.

    A DataFrame is saved as Parquet in the run directory, so the sweep's trials (and a resume) read it from there.
    """
    import pandas as pd

    from rungflow.tasks.data import DataError, DataSpec, load_dataset, read_table
    from rungflow.tasks.table_audit import audit_table

    if not isinstance(label, str) or not label:
        raise ConfigError("label: name the column to predict, e.g. rungflow.automl(table, label='target')")
    if max_cost is not None and not price_per_gpu_hour:
        raise ConfigError(f"--max-cost {max_cost:g}: money is GPU-hours x price, and no price is set; add "
                          "--price-per-gpu-hour (e.g. 2.5), or cap GPU-hours with --max-gpu-hours")
    if metric is not None and metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: use one of {', '.join(METRICS)} (default: accuracy for classes, r2 for numbers)")
    frame = frame_or_path if isinstance(frame_or_path, pd.DataFrame) else None
    source = "the DataFrame" if frame is not None else str(frame_or_path)
    default_name = f"automl-{slug(Path(source.rstrip('/')).stem) if frame is None else 'frame'}"
    run_dir = Path(out) if out is not None else Path("runs") / slug(name or default_name)
    try:
        if frame is None:
            frame = read_table(source)
        audit = audit_table(frame, label, source=source)
    except DataError as exc:
        raise ConfigError(str(exc).replace("data.source = ", "TABLE ")) from None
    if metric is not None and METRICS[metric][2] != audit.task:
        others = [m for m, (_, _, task) in METRICS.items() if task == audit.task]
        raise ConfigError(f"--metric {metric}: {label!r} is a {audit.task} label, and {metric} scores "
                          f"{METRICS[metric][2]}; use {' or '.join(others)}")
    if isinstance(frame_or_path, pd.DataFrame):
        source = str((run_dir / SAVED_TABLE).resolve())
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            frame_or_path.to_parquet(source, index=False)
        except (ValueError, TypeError, ImportError) as exc:  # pyarrow refuses mixed-type object columns
            raise ConfigError(f"the DataFrame cannot be saved as Parquet for the trials to read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}); give each column one type, e.g. df[col].astype(str)") from None
    data = {"source": source, "label": label, "seed": seed, "drop": list(audit.dropped)}
    score_name, mode = (METRICS[metric][0], METRICS[metric][1]) if metric else ("val_score", "max")
    options: dict[str, Any] = {"data": data, "score": score_name}
    if families is not None:
        options["families"] = list(families)
    budget = {"deadline": time_limit, "max_gpu_hours": max_gpu_hours, "max_cost": max_cost,
              "price_per_gpu_hour": price_per_gpu_hour or 0.0, "min_gain_per_gpu_hour": min_gain_per_gpu_hour}
    section = {
        "name": name or default_name,
        "trainable": {"kind": "mixed", "options": options},
        "metric": {"name": score_name, "mode": mode},
        "search": {"seed": seed, "cost_aware": cost_aware},
        "scheduler": {"kind": "hyperband", "iterations": ITERATIONS},
        "budget": {k: v for k, v in budget.items() if v is not None},
        "runtime": _runtime_section(runtime),
        "storage": {"run_dir": str(run_dir)},
        "ensemble": {},
    }
    config = validate(section)
    history, portfolio_shown = _portfolio_section(portfolio, config)
    if history is not None:
        config = validate({**section, "history": history})
    try:  # the split too, before spending: a class too rare to stratify fails here, not in every trial
        load_dataset(DataSpec.parse(data))
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    return AutoMLPlan(config, tuple(audit.notes()), portfolio_shown)


def automl(frame_or_path: Any, label: str, *, time_limit: float | None = DEFAULT_TIME_LIMIT,
           max_gpu_hours: float | None = None, max_cost: float | None = None, price_per_gpu_hour: float | None = None,
           min_gain_per_gpu_hour: float | None = None, metric: str | None = None, families: Sequence[str] | None = None,
           runtime: str | Mapping[str, Any] | None = None, out: str | Path | None = None, seed: int = 0,
           name: str | None = None, cost_aware: bool | str = COST_AWARE,
           portfolio: str | Path | Mapping[str, Any] | None = "off"):
    """The best model for ``label`` in a table (a DataFrame, or a CSV/Parquet path or s3:// URL); blocks until done.

    ``time_limit`` seconds is the sweep's deadline; ``max_gpu_hours`` / ``max_cost`` cap the spend;
    ``min_gain_per_gpu_hour`` stops once another GPU-hour buys less than that (metric units). ``metric``: accuracy or
    log_loss (classes), r2 or rmse (numbers). ``families``: the ``mixed`` families to search (default: its own
    default list). ``runtime``: "thread", "ray", a Ray address, or the runtime section as a dict. ``cost_aware``:
    ``search.cost_aware`` (true, false or auto; the default and why in docs/automl.md). ``portfolio``: "off" (the
    default) starts cold, "on" from the configurations learned across tables that ship with rungflow, or a portfolio JSON
    file (or its dict); it runs beside the searcher and is dropped where this table disagrees. Returns the same
    :class:`~rungflow.flows.api.SweepResult` as :func:`rungflow.sweep`; ``rungflow.load_model(result.run_dir)`` is
    the saved model (an ensemble of trials when one beat the best single trial on validation).
    """
    from rungflow.flows.api import SweepResult
    from rungflow.flows.sweep import check_resumable, run_sweep

    plan = automl_config(frame_or_path, label, time_limit=time_limit, max_gpu_hours=max_gpu_hours, max_cost=max_cost,
                         price_per_gpu_hour=price_per_gpu_hour, min_gain_per_gpu_hour=min_gain_per_gpu_hour,
                         metric=metric, families=families, runtime=runtime, out=out, seed=seed, name=name,
                         cost_aware=cost_aware, portfolio=portfolio)
    for note in plan.notes:
        log.warning("%s", note)
    log.info("%s", plan.portfolio["line"])
    run_dir = plan.config.run_dir()
    if (run_dir / "config.json").is_file():
        check_resumable(run_dir / "config.json", plan.config)
    result = run_sweep(plan.config, run_dir)
    record_portfolio(run_dir, plan.portfolio)
    result["portfolio"] = plan.portfolio
    return SweepResult(result, run_dir, None)


def record_portfolio(run_dir: Path, portfolio: Mapping[str, Any]) -> None:
    """``result.json``'s ``portfolio``: whether the run started from the learned portfolio, and if not why (when it
    did, its verdict is in ``history.prior``)."""
    from rungflow.results import write_json_atomic

    path = run_dir / "result.json"
    if path.is_file():
        write_json_atomic(path, {**json.loads(path.read_text(encoding="utf-8")), "portfolio": dict(portfolio)})
