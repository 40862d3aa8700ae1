"""The ``rungflow`` command line: plan, sweep, report.

Bad input ends with one line on stderr naming the field, the value and the fix, exit status 2,
and no traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _load(path: str, overrides: Sequence[str]):
    from rungflow.config import ConfigError, load_config

    try:
        return load_config(path, list(overrides))
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}") from None


# --- plan ---------------------------------------------------------------------------------------------
def plan_rows(config) -> tuple[list[dict[str, Any]], float, float | None]:
    """Rows of (bracket, rung, budget, trials, units) and the total units and predicted GPU-hours."""
    import numpy as np

    from budgets.rungs import BracketPlan, RungPlan
    from budgets.schedulers import ASHAScheduler, make_scheduler

    lo, hi = config.budget_range()
    scheduler = make_scheduler(config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                               integer=config.trainable_class().integer_budget, iterations=config.scheduler.iterations,
                               num_trials=config.search.num_trials, mode=config.mode())
    if isinstance(scheduler, ASHAScheduler):
        # ASHA fills its rungs as one successive-halving bracket of num_trials would, without barriers.
        n, eta = scheduler.num_trials, config.scheduler.eta
        rungs = tuple(RungPlan(k, b, max(1, int(math.floor(n * eta ** (-k) + 1e-9)))) for k, b in enumerate(scheduler.budgets))
        brackets = [BracketPlan(index=0, s=len(rungs) - 1, rungs=rungs)]
    else:
        brackets = list(scheduler.brackets)
    trainable = config.trainable_class()(config.trainable.options)
    rng = np.random.default_rng(config.search.seed)
    space = config.search_space()
    estimates = [trainable.estimate_gpu_seconds(space.sample(rng), 0, hi) for _ in range(16)]
    per_unit = None
    if all(e is not None for e in estimates):
        per_unit = float(np.mean(estimates)) / hi / 3600.0  # GPU-hours per budget unit
    rows = []
    for b in brackets:
        previous = 0.0
        for r in b.rungs:
            units = r.num_trials * (r.budget - previous)
            rows.append({"bracket": b.index, "rung": r.index, "budget": r.budget, "trials": r.num_trials,
                         "units": units, "gpu_hours": None if per_unit is None else units * per_unit})
            previous = r.budget
    total_units = sum(r["units"] for r in rows)
    return rows, total_units, None if per_unit is None else total_units * per_unit


def cmd_plan(args: argparse.Namespace) -> int:
    config = _load(args.config, args.set)
    rows, total_units, total_gpu_hours = plan_rows(config)
    unit = config.trainable_class().budget_unit
    table = Table(title=f"plan: {config.name} ({config.scheduler.kind}, η={config.scheduler.eta:g}, "
                        f"{config.search.algorithm} search, seed {config.search.seed})")
    for col in ("bracket", "rung", f"budget ({unit})", "trials", f"{unit} to train", "GPU-hours"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["bracket"]), str(r["rung"]), f"{r['budget']:g}", str(r["trials"]), f"{r['units']:g}",
                      "?" if r["gpu_hours"] is None else f"{r['gpu_hours']:.4f}")
    console.print(table)
    brackets = len({r["bracket"] for r in rows})
    trials = sum(r["trials"] for r in rows if r["rung"] == 0)
    console.print(f"{brackets} brackets, {trials} trials, {total_units:g} {unit} in all")
    b = config.budget
    price = b.price_per_gpu_hour
    if total_gpu_hours is not None:
        console.print(f"predicted: {total_gpu_hours:.4f} GPU-hours, {total_gpu_hours * price:.2f} at {price:g}/GPU-hour")
        first = sum(r["gpu_hours"] for r in rows if r["bracket"] == rows[0]["bracket"])
        if b.max_gpu_hours is not None and first > b.max_gpu_hours:
            raise CLIError(f"plan refused: the first bracket alone needs {first:.4f} GPU-hours, above budget.max_gpu_hours="
                           f"{b.max_gpu_hours:g}; raise the cap or lower scheduler.max_budget")
        if b.max_cost is not None and first * price > b.max_cost:
            raise CLIError(f"plan refused: the first bracket alone costs {first * price:.2f}, above budget.max_cost="
                           f"{b.max_cost:g}; raise the cap or lower scheduler.max_budget")
    else:
        console.print("predicted GPU-hours: measured from the first rung (the trainable has no cost model)")
    caps = [f"{k}={getattr(b, k)}" for k in ("max_gpu_hours", "max_cost", "deadline", "min_gain_per_gpu_hour")
            if getattr(b, k) is not None]
    console.print("caps: " + (", ".join(caps) if caps else "none"))
    return 0


# --- sweep --------------------------------------------------------------------------------------------
def ensure_prefect_api() -> Any:
    """Use ``PREFECT_API_URL`` if set; otherwise start one embedded server that the flow and its Ray workers share."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = server.api_url
    return server


def check_prefect_api() -> None:
    """Fail fast, naming PREFECT_API_URL, when the configured API does not answer."""
    import httpx

    url = os.environ["PREFECT_API_URL"].rstrip("/")
    try:
        httpx.get(f"{url}/health", timeout=10).raise_for_status()
    except Exception as exc:
        raise CLIError(f"PREFECT_API_URL={url} does not answer ({type(exc).__name__}); start `prefect server start` "
                       "or unset PREFECT_API_URL to use the embedded server") from None


def leaderboard_table(result: dict[str, Any], limit: int = 10) -> Table:
    metric = result.get("metric", {})
    # The config column only where it fits; in a narrow terminal the best config is printed in full below.
    wide = console.width >= 120
    table = Table(title=f"leaderboard: {result.get('name')} ({metric.get('name')}, {metric.get('mode')})")
    columns = ["rank", "trial", "bracket", "budget", "score", "GPU-hours", "status"] + (["config"] if wide else [])
    for col in columns:
        table.add_column(col, justify="left" if col in ("config", "status") else "right", no_wrap=col != "config")
    for row in result.get("leaderboard", [])[:limit]:
        cells = [str(row["rank"]), row["trial_id"], str(row["bracket"]), f"{row['budget']:g}",
                 "-" if row["score"] is None else f"{row['score']:.4f}", f"{row['gpu_hours']:.3g}", row["status"]]
        if wide:
            cells.append(" ".join(f"{k}={_fmt(v)}" for k, v in row.get("config", {}).items()))
        table.add_row(*cells)
    return table


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_lines(result: dict[str, Any]) -> list[str]:
    ledger = result["ledger"]
    lines = [
        f"status: {result['status']}; stop reason: {result['stop_reason']} ({result.get('stop_detail', '')})",
        f"spent: {ledger['gpu_hours']:.4g} GPU-hours, cost {ledger['cost']:.4g}; trials started "
        f"{ledger['trials_started']}, completed {ledger['trials_completed']}, failed {ledger['trials_failed']}",
    ]
    best = result.get("best")
    if best:
        lines.append(f"best: {best['trial_id']} score {best['score']:.4f} at budget {best['budget']:g}; config "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in best["config"].items()))
    saved = result.get("best_model")
    if saved and saved.get("path"):
        lines.append(f"best model: {saved['family']} saved to {saved['path']} "
                     f"(val_score {saved['metrics'].get('val_score', float('nan')):.4f}); load it with rungflow.load_model(RUN_DIR)")
    elif saved and saved.get("error"):
        lines.append(f"best model: not saved ({saved['error']})")
    if result.get("runtime", {}).get("note"):
        lines.append(f"note: {result['runtime']['note']}")
    return lines


class _Progress:
    """A rich progress bar over the budget units the schedule plans to train."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} units"),
                                 TextColumn("{task.fields[spend]}"), TimeElapsedColumn(), console=console, transient=False)
        self.task = None
        self.cap = None

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "planned":
            self.cap = data.get("max_gpu_hours")
            self.progress.start()
            self.task = self.progress.add_task(data.get("name", "sweep"), total=data["units"], spend="")
        elif kind == "result" and self.task is not None:
            record = data["record"]
            cap = f"/{self.cap:g}" if self.cap else ""
            self.progress.update(self.task, advance=record.budget_trained,
                                 spend=f"{data['gpu_hours']:.4f}{cap} GPU-h, {data['cost']:.2f} $")
        elif kind == "decision" and data["decision"]["action"] == "stop":
            self.progress.console.print(f"[yellow]budget controller: stop ({data['decision']['reason']}): "
                                        f"{data['decision']['detail']}")
        elif kind == "done":
            self.stop()

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def cmd_sweep(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.out:
        overrides.append(f"storage.run_dir={args.out}")
    config = _load(args.config, overrides)
    server = ensure_prefect_api()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        check_prefect_api()
        with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
            return _sweep(config)
    finally:
        if server is not None:
            _flush_prefect_logs()
            server.stop()


def _sweep(config) -> int:
    from flows.sweep import run_sweep, set_reporter
    from rungflow.results import plot_anytime

    progress = _Progress()
    set_reporter(progress)
    try:
        result = run_sweep(config, config.run_dir())
    finally:
        progress.stop()
        set_reporter(None)
    console.print(leaderboard_table(result))
    for line in summary_lines(result):
        console.print(line)
    plot = plot_anytime(result, config.run_dir() / "anytime.png")
    console.print(f"run directory: {config.run_dir()} (result.json, ledger.jsonl, {plot.name})")
    return 0


def _flush_prefect_logs() -> None:
    # Logs are shipped to the API in the background; send them before the embedded server goes.
    try:
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
    except Exception:
        pass


# --- report -------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from rungflow.results import load_result, plot_anytime

    try:
        result = load_result(args.run_dir)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    console.print(leaderboard_table(result, limit=args.top))
    for line in summary_lines(result):
        console.print(line)
    plot = plot_anytime(result, Path(args.run_dir) / "anytime.png")
    console.print(f"plot: {plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rungflow", description="Budget-capped AutoML sweeps as Prefect flows on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    set_help = "override a config field, e.g. --set scheduler.eta=4 (repeatable)"

    p = sub.add_parser("plan", help="show brackets, rungs, trials and predicted spend before spending anything")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("sweep", help="run a budget-capped sweep")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="leaderboard and summary of a finished or running sweep")
    p.add_argument("run_dir")
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished trials are in the run directory's ledger.jsonl")
        return 130


if __name__ == "__main__":
    sys.exit(main())
