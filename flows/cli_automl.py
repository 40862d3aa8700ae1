"""``rungflow automl`` (a table to a model, as an ordinary sweep) and ``rungflow predict`` (the saved model on new rows)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rungflow.flows.cli_common import CLIError, console, err_console

__all__ = ["cmd_automl", "cmd_predict", "add_automl_parsers", "prediction_frame", "check_predict_columns"]


def add_automl_parsers(sub: Any) -> None:
    from rungflow.flows.automl import DEFAULT_TIME_LIMIT, METRICS

    p = sub.add_parser("automl", help="find the best model for a table's label column, under a time limit and a budget")
    p.add_argument("table", help="a .csv or .parquet file, local or s3://bucket/key")
    p.add_argument("--label", required=True, help="the column to predict")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                   help=f"wall-clock deadline of the search (default {DEFAULT_TIME_LIMIT:g})")
    p.add_argument("--max-gpu-hours", type=float, help="cap on GPU-hours trained")
    p.add_argument("--max-cost", type=float, help="cap on money (needs --price-per-gpu-hour)")
    p.add_argument("--price-per-gpu-hour", type=float, help="money per GPU-hour")
    p.add_argument("--min-gain-per-gpu-hour", type=float, metavar="GAIN",
                   help="stop once another GPU-hour buys less than GAIN of the metric")
    p.add_argument("--metric", choices=list(METRICS), help="default: accuracy for classes, r2 for numbers")
    p.add_argument("--families", help="comma-separated model families (default: the mixed trainable's defaults)")
    p.add_argument("--runtime", help="thread, ray (default: local Ray) or a Ray cluster's address")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/automl-<table>)")
    p.add_argument("--seed", type=int, default=0, help="seeds the search and the validation split")
    p.add_argument("--cost-aware", choices=("true", "false", "auto"), default=None,
                   help="search.cost_aware: rank proposals by expected gain per predicted GPU-second "
                        "(default false, measured in docs/automl.md)")
    p.add_argument("--portfolio", default="off", metavar="on|off|FILE",
                   help="off (default, measured in docs/automl.md): start cold; on: start from configurations learned "
                        "across tables, run beside the searcher and dropped where this table disagrees; or a "
                        "portfolio JSON file")
    p.set_defaults(func=cmd_automl)

    p = sub.add_parser("predict", help="predict a table's rows with a run's saved model")
    p.add_argument("run_dir", help="a run directory (or a model directory) with a saved model")
    p.add_argument("table", help="a .csv or .parquet file, local or s3://bucket/key, with the training table's columns")
    p.add_argument("--out", default="predictions.csv", metavar="PREDICTIONS.csv",
                   help="where to write the predictions (default predictions.csv)")
    p.set_defaults(func=cmd_predict)


def cmd_automl(args: argparse.Namespace) -> int:
    from rungflow.config import ConfigError
    from rungflow.flows.automl import automl_config, record_portfolio
    from rungflow.flows.cli_run import _check_resumable, _run

    families = None
    if args.families is not None:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
    try:
        plan = automl_config(args.table, args.label, time_limit=args.time_limit, max_gpu_hours=args.max_gpu_hours,
                             max_cost=args.max_cost, price_per_gpu_hour=args.price_per_gpu_hour,
                             min_gain_per_gpu_hour=args.min_gain_per_gpu_hour, metric=args.metric, families=families,
                             runtime=args.runtime, out=args.out, seed=args.seed, portfolio=args.portfolio,
                             **({} if args.cost_aware is None else {"cost_aware": _cost_aware(args.cost_aware)}))
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    for note in plan.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    console.print(plan.portfolio["line"], highlight=False, soft_wrap=True, markup=False)
    run_dir = plan.config.run_dir()
    if (run_dir / "ledger.jsonl").exists():
        _check_resumable(run_dir, plan.config)
        console.print(f"{run_dir} already holds this run's ledger: resuming it (finished trials are not rerun)")
    code = _run(plan.config)
    record_portfolio(run_dir, plan.portfolio)
    console.print(f"predict new rows: rungflow predict {run_dir} TABLE --out predictions.csv")
    return code


def _cost_aware(value: str) -> bool | str:
    return {"true": True, "false": False}.get(value, value)


def check_predict_columns(model: Any, columns: list[str]) -> None:
    """Refuse a table whose columns are not the training table's: the missing and the unknown ones, by name."""
    encoding = model.encoding
    known = set(model.feature_names) | {encoding.get("label")} | set(encoding.get("dropped") or ())
    missing = [c for c in model.feature_names if c not in columns]
    extra = [c for c in columns if c not in known]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if extra:
            parts.append(f"not in the training table: {_names(extra)}")
        raise CLIError(f"the table's columns do not match the training table's ({'; '.join(parts)}); "
                       "give the columns the model was trained on (the label column may be there or not)")


def _names(columns: list[str]) -> str:
    return ", ".join(repr(c) for c in columns[:8]) + (f" and {len(columns) - 8} more" if len(columns) > 8 else "")


def prediction_frame(model: Any, frame: Any) -> Any:
    """The predictions as a table: the label column, then one ``proba_<class>`` column per class."""
    import pandas as pd

    label = model.encoding.get("label") or "prediction"
    out = pd.DataFrame({label: model.predict(frame)})
    if model.task == "classification":
        proba = model.predict_proba(frame)
        for j, cls in enumerate(model.classes or []):
            out[f"proba_{cls}"] = proba[:, j]
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from rungflow.tasks.data import DataError, read_table
    from rungflow.tasks.models import ModelError, load_model

    try:
        model = load_model(args.run_dir)
    except ModelError as exc:
        raise CLIError(str(exc)) from None
    try:
        frame = read_table(args.table)
    except DataError as exc:
        raise CLIError(str(exc).replace("data.source = ", "TABLE ")) from None
    check_predict_columns(model, [str(c) for c in frame.columns])
    predictions = prediction_frame(model, frame)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out, index=False)
    console.print(f"wrote {len(predictions)} predictions of {predictions.columns[0]!r} to {out}", highlight=False)
    return 0
