"""The ``rungflow`` command line: plan, sweep, report.

Bad input ends with one line on stderr naming the field, the value and the fix, exit status 2,
and no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rungflow.flows.prefect_server import SERVER_LOG, PrefectAPIDown, check_prefect_api, ensure_prefect_api, stop_prefect_server

console = Console()
err_console = Console(stderr=True)

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class APILostError(CLIError):
    """The Prefect API died mid-sweep: one line, then exit without waiting on Prefect's event queue.

    At exit Prefect would try to ship each queued event to the dead API, ~7 s apiece (minutes in all);
    everything worth keeping is already fsynced in the run directory.
    """


def packaged_example(path: str) -> Path | None:
    """The example config shipped inside the package for ``examples/NAME.yaml`` (or ``NAME``), where no such file is
    here: after ``pip install rungflow`` the README's ``rungflow sweep examples/digits.yaml`` still works."""
    if Path(path).exists():
        return None
    from importlib.resources import files

    name = Path(path).name if Path(path).suffix else f"{Path(path).name}.yaml"
    parts = Path(path).parts
    relative = Path(*parts[parts.index("examples") + 1:]) if "examples" in parts else Path(name)
    candidate = Path(str(files("rungflow.examples"))) / relative
    return candidate if candidate.is_file() else None


def _load(path: str, overrides: Sequence[str]):
    from rungflow.config import ConfigError, load_config

    example = packaged_example(path)
    if example is not None:
        err_console.print(f"{path} is not here: using the example shipped with rungflow, {example}", highlight=False)
        path = str(example)
    try:
        return load_config(path, list(overrides))
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}") from None


# --- plan ---------------------------------------------------------------------------------------------
def plan_rows(config) -> tuple[list[dict[str, Any]], float, float | None]:
    """Rows of (bracket, rung, budget, trials, units) and the total units and predicted GPU-hours."""
    import numpy as np

    from rungflow.budgets.schedulers import make_scheduler

    lo, hi = config.budget_range()
    scheduler = make_scheduler(config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                               integer=config.trainable_class().integer_budget, iterations=config.scheduler.iterations,
                               num_trials=config.search.num_trials, mode=config.mode(), **config.scheduler_options())
    brackets = list(scheduler.brackets)
    trainable = config.trainable_class()(config.trainable.options)
    rng = np.random.default_rng(config.search.seed)
    space = config.search_space()
    estimates = [trainable.estimate_gpu_seconds(space.sample(rng), 0, hi) for _ in range(16)]
    per_unit = None
    if all(e is not None for e in estimates):
        per_unit = float(np.mean(estimates)) / hi / 3600.0  # GPU-hours per budget unit
    # A rung's new trials: a bracket's first rung starts them all, except under PBT, whose gates start clones.
    clones = scheduler.planned_clones() if hasattr(scheduler, "planned_clones") else None
    rows = []
    for b in brackets:
        previous = 0.0
        for r in b.rungs:
            units = r.num_trials * (r.budget - previous)
            new = clones[r.index] if clones is not None else (r.num_trials if r.index == 0 else 0)
            rows.append({"bracket": b.index, "rung": r.index, "budget": r.budget, "trials": r.num_trials,
                         "new_trials": new, "units": units, "gpu_hours": None if per_unit is None else units * per_unit})
            previous = r.budget
    total_units = sum(r["units"] for r in rows)
    return rows, total_units, None if per_unit is None else total_units * per_unit


def _plan_simulated(config, args: argparse.Namespace) -> int:
    """The real driver on ``--workers`` simulated GPUs: sync Hyperband and ASHA side by side, or one ``--json`` object."""
    from rungflow.flows.plan_sim import (
        PlanError,
        compare,
        describe,
        driver_costs_for,
        durations_for,
        simulate,
    )

    try:
        if args.workers < 1:
            raise PlanError(f"--workers: {args.workers} must be at least 1")
        durations, source = durations_for(config, args.costs_from, args.seconds_per_unit)
        costs = driver_costs_for(args.costs_from, stage_seconds=args.stage_seconds,
                                 dispatch_seconds=args.dispatch_seconds, setup_seconds=args.setup_seconds)
        stage, dispatch, setup = costs.stage_seconds, costs.dispatch_seconds, costs.setup_seconds
        if args.json:
            print(json.dumps(simulate(config, workers=args.workers, durations=durations, stage_seconds=stage,
                                      dispatch_seconds=dispatch, setup_seconds=setup)))
            return 0
        results = compare(config, workers=args.workers, durations=durations, stage_seconds=stage, dispatch_seconds=dispatch,
                          setup_seconds=setup)
    except PlanError as exc:
        raise CLIError(str(exc)) from None
    console.print(f"simulated: {config.name} on {args.workers} GPUs ({config.runtime.gpus_per_trial:g} per trial), "
                  f"durations from {source}, {stage:.2f} s per synchronous stage ({costs.stage_source}), {dispatch:.3f} s "
                  f"to dispatch a trial ({costs.dispatch_source})", highlight=False)
    for result in results.values():
        console.print(describe(result), highlight=False)
    return 0


def _preflight(config) -> None:
    """The trainable's data is there: a missing dataset fails now, in one line, not as a sweep of failed trials."""
    from rungflow.tasks.trainables import TrainableError

    try:
        config.trainable_class()(config.trainable.options).check()
    except TrainableError as exc:
        raise CLIError(str(exc) if config.trainable.kind == "function" else f"data error: {exc}") from None


def cmd_plan(args: argparse.Namespace) -> int:
    config = _load(args.config, args.set)
    _preflight(config)
    if args.simulate:
        return _plan_simulated(config, args)
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
    trials = sum(r["new_trials"] for r in rows)
    started = sum(r["new_trials"] for r in rows if r["rung"] == 0)
    cloned = f" ({started} + {trials - started} clones)" if trials > started else ""
    console.print(f"{brackets} brackets, {trials} trials{cloned}, {total_units:g} {unit} in all")
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
class _HideAPILoss(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and _api_lost(record.exc_info[1]))


def _api_lost(exc: BaseException) -> bool:
    """The sweep failed because the Prefect API went away (ours or Prefect's own call noticed first)."""
    import httpx

    from rungflow.tasks.artifacts import PrefectAPIUnreachable

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (PrefectAPIUnreachable, httpx.ConnectError, httpx.ConnectTimeout)):
            return True
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def leaderboard_table(result: dict[str, Any], limit: int = 10) -> Table:
    metric = result.get("metric", {})
    # The config column only where it fits; in a narrow terminal the best config is printed in full below.
    wide = console.width >= 120
    table = Table(title=f"leaderboard: {result.get('name')} ({metric.get('name')}, {metric.get('mode')})")
    rows = result.get("leaderboard", [])[:limit]
    # A training function's own metrics get a column; a family's bookkeeping metrics (surrogate time...) do not.
    show_metrics = wide and result.get("trainable") == "function" and any(row.get("metrics") for row in rows)
    columns = (["rank", "trial", "bracket", "budget", "score", "GPU-hours", "status"] + (["config"] if wide else [])
               + (["metrics"] if show_metrics else []))
    for col in columns:
        table.add_column(col, justify="left" if col in ("config", "status") else "right", no_wrap=col != "config")
    for row in rows:
        cells = [str(row["rank"]), row["trial_id"], str(row["bracket"]), f"{row['budget']:g}",
                 "-" if row["score"] is None else f"{row['score']:.4f}", f"{row['gpu_hours']:.3g}", row["status"]]
        if wide:
            cells.append(" ".join(f"{k}={_fmt(v)}" for k, v in row.get("config", {}).items()))
        if show_metrics:
            cells.append(" ".join(f"{k}={_fmt(v)}" for k, v in (row.get("metrics") or {}).items()))
        table.add_row(*cells)
    return table


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_lines(result: dict[str, Any]) -> list[str]:
    ledger = result["ledger"]
    lines = [
        f"status: {result['status']}; stop reason: {result['stop_reason']} ({result.get('stop_detail', '')})",
        f"spent: {ledger['gpu_hours']:.4g} GPU-hours, {ledger.get('cpu_hours', 0.0):.4g} CPU-hours, cost {ledger['cost']:.4g}",
        trial_counts_line(ledger),
    ]
    best = result.get("best")
    if best:
        lines.append(f"best: {best['trial_id']} score {best['score']:.4f} at budget {best['budget']:g}; config "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in best["config"].items()))
        stretches = best.get("hyperparameter_schedule") or []
        if len(stretches) > 1:  # a population-based-training winner: the schedule its lineage trained with
            changed = [k for k in stretches[0]["config"] if len({repr(s["config"].get(k)) for s in stretches}) > 1]
            lines.append("hyperparameter schedule of the winner: " + "; ".join(
                f"{s['from_budget']:g}-{s['to_budget']:g} {s['trial_id']} "
                + ", ".join(f"{k}={_fmt(s['config'].get(k))}" for k in changed) for s in stretches))
    saved = result.get("best_model")
    if saved and saved.get("path"):
        lines.append(f"best model: {saved['family']} saved to {saved['path']} "
                     f"(val_score {saved['metrics'].get('val_score', float('nan')):.4f}); load it with rungflow.load_model(RUN_DIR)")
    elif saved and saved.get("error"):
        lines.append(f"best model: not saved ({saved['error']})")
    if result.get("runtime", {}).get("note"):
        lines.append(f"note: {result['runtime']['note']}")
    return lines


def trial_counts_line(ledger: dict[str, Any]) -> str:
    """``17 trials: 5 reached the full budget, 12 stopped by the gate, 0 failed``: every trial counted once."""
    outcome = ledger.get("trials_by_outcome")
    if outcome is None:  # a result.json written before trials were counted by outcome
        return (f"{ledger['trials_started']} trials: {ledger['trials_completed']} reached the full budget, "
                f"{ledger['trials_failed']} failed")
    parts = [f"{outcome['full_budget']} reached the full budget", f"{outcome['stopped_by_gate']} stopped by the gate",
             f"{outcome['failed']} failed"]
    if outcome["unfinished"]:
        parts.append(f"{outcome['unfinished']} unfinished when the sweep stopped")
    return f"{ledger['trials_started']} trials: " + ", ".join(parts)


class _Progress:
    """One line that updates in place: the stage running, planned units done, spend against the caps, best so far.

    Units advance by each stage's planned increment (a trainable that retrains from scratch at every rung
    still only moves the schedule on by the rung's increment), so the count ends at the plan's total.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f} units"),
                                 TextColumn("{task.fields[spend]}"), TextColumn("{task.fields[best]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = None
        self.name = "sweep"
        self.caps: dict[str, float | None] = {}
        self.mode = "max"
        self.best: float | None = None
        self.reached: dict[str, float] = {}
        self.cpu_hours = 0.0

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "planned":
            self.name = data.get("name", "sweep")
            self.caps = {"gpu_hours": data.get("max_gpu_hours"), "cost": data.get("max_cost"),
                         "cpu_hours": data.get("max_cpu_hours")}
            self.mode = data.get("mode") or "max"
            self.progress.start()
            _route_prefect_console(self.progress.console)
            self.task = self.progress.add_task(self.name, total=data["units"], spend="", best="")
        elif kind == "result" and self.task is not None:
            record = data["record"]
            increment = max(0.0, record.budget - self.reached.get(record.trial_id, 0.0))
            self.reached[record.trial_id] = max(record.budget, self.reached.get(record.trial_id, 0.0))
            if record.ok and record.score is not None and math.isfinite(record.score):
                better = self.best is None or (record.score > self.best if self.mode == "max" else record.score < self.best)
                self.best = record.score if better else self.best
            self.cpu_hours += record.cpu_hours
            self.progress.update(self.task, advance=increment, description=f"{self.name} · bracket {record.bracket} rung {record.rung}",
                                 spend=self._spend(data), best="" if self.best is None else f"best {self.best:.4g}")
        elif kind == "decision" and data["decision"]["action"] == "stop":
            self.progress.console.print(f"[yellow]budget controller: stop ({data['decision']['reason']}): "
                                        f"{data['decision']['detail']}")
        elif kind == "done":
            result = data.get("result") or {}
            if self.task is not None and result.get("stop_reason") == "schedule_complete":
                # ASHA's plan is an estimate of how its rungs fill; a finished schedule is all of it.
                done = self.progress.tasks[0].completed
                self.progress.update(self.task, total=done, description=f"{self.name} · done")
            self.stop()

    def _spend(self, data: dict[str, Any]) -> str:
        gpu_cap, cost_cap = self.caps.get("gpu_hours"), self.caps.get("cost")
        gpu = f"{data['gpu_hours']:.3g}" + (f"/{gpu_cap:g}" if gpu_cap else "") + " GPU-h"
        cost = f"${data['cost']:.2f}" + (f"/{cost_cap:g}" if cost_cap else "")
        cpu_cap = self.caps.get("cpu_hours")
        cpu = f" · {self.cpu_hours:.3g}/{cpu_cap:g} CPU-h" if cpu_cap else ""
        return f"{gpu}{cpu} · {cost}"

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()
            _route_prefect_console(None)
            self.task = None


_prefect_consoles: dict[int, Any] = {}


def _route_prefect_console(target: Console | None) -> None:
    """Print Prefect's console log lines through ``target`` (the live progress display) so they land above the
    bar instead of inside it; ``None`` gives each handler its own console back."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, PrefectConsoleHandler):
            if target is not None:
                _prefect_consoles.setdefault(id(handler), handler.console)
                handler.console = target
            elif id(handler) in _prefect_consoles:
                handler.console = _prefect_consoles.pop(id(handler))


def quiet_prefect_console(verbose: bool) -> None:
    """The console shows Prefect's warnings and errors only; its INFO lines still reach the API (the UI) and the
    run directory's log file. ``-v`` brings them back. Must run before Prefect configures logging."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "WARNING")


def log_to_run_dir(run_dir: Path) -> logging.Handler:
    """Every Prefect log line of this sweep at INFO and above, in ``RUN_DIR/sweep.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "sweep.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    from prefect.logging.formatters import PrefectFormatter

    handler.setFormatter(PrefectFormatter(
        format="%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
        flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
        task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s"))
    logging.getLogger("prefect").addHandler(handler)
    return handler


def cmd_sweep(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.out:
        overrides.append(f"storage.run_dir={args.out}")
    config = _load(args.config, overrides)
    run_dir = config.run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise CLIError(f"run directory {str(run_dir)!r} is a file; pass a directory with --out")
    if (run_dir / "ledger.jsonl").exists():
        _check_resumable(run_dir, config)
        console.print(f"{run_dir} already holds this sweep's ledger: resuming it (finished trials are not rerun)")
    return _run(config)


def _check_resumable(run_dir: Path, config) -> None:
    from rungflow.config import ConfigError
    from rungflow.flows.sweep import check_resumable

    if not (run_dir / "config.json").exists():
        return
    try:
        check_resumable(run_dir / "config.json", config)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted sweep from its run directory: its config.json, ledger and checkpoints."""
    import json

    from rungflow.config import RESUMABLE, ConfigError, apply_overrides, validate

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"run directory {str(run_dir)!r} does not exist or is not a directory; pass the directory a sweep "
                       "wrote (rungflow sweep --out DIR)")
    config_path, ledger_path = run_dir / "config.json", run_dir / "ledger.jsonl"
    if not config_path.is_file():
        raise CLIError(f"{config_path} does not exist; is {str(run_dir)!r} a rungflow run directory (rungflow sweep --out ...)?")
    if not ledger_path.is_file():
        raise CLIError(f"{ledger_path} does not exist: nothing ran there yet; start the sweep with rungflow sweep")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CLIError(f"{config_path} is not a readable JSON config ({type(exc).__name__}); restore it from the sweep's "
                       "YAML (rungflow sweep CONFIG --out RUN_DIR resumes too)") from None
    if not isinstance(data, dict):
        raise CLIError(f"{config_path} must hold a mapping; restore it from the sweep's YAML")
    for item in args.set:
        key = item.split("=", 1)[0].strip()
        if key.split(".")[0] not in RESUMABLE or "=" not in item:
            if "=" not in item:
                raise CLIError(f"--set {item!r}: expected dotted.key=value, e.g. --set budget.max_gpu_hours=20")
            raise CLIError(f"--set {key}: only budget.*, runtime.*, storage.* and ui.* may change when resuming (the search and the "
                           f"schedule must replay as they ran); start a new sweep with --out NEW_DIR to change {key}")
    try:
        data = apply_overrides(data, list(args.set))
        data.setdefault("storage", {})
        if isinstance(data["storage"], dict):
            data["storage"]["run_dir"] = str(run_dir)
        config = validate(data)
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}") from None
    return _run(config)


def _run(config) -> int:
    _preflight(config)
    if config.run_dir().is_dir():
        # The flow takes this lock for the whole sweep; asking first keeps the refusal to one line.
        from rungflow.config import ConfigError
        from rungflow.flows.sweep import lock_run_dir

        try:
            lock_run_dir(config.run_dir()).close()
        except ConfigError as exc:
            raise CLIError(str(exc)) from None
    # Prefect retries a lost connection about a minute per call (5 retries, exponential backoff); a sweep
    # whose API died would crawl for many minutes before failing. Two retries ride out a blip; a longer
    # outage is the API watch's (tasks/api_watch.py), which skips the calls while the server is down.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
    server = ensure_prefect_api(config.run_dir() / SERVER_LOG)
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    # The flow engine logs a failed run with its traceback; for a lost API the one line below replaces it.
    # (Logger-level filters: Prefect installs its handlers later, when the flow starts.)
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect"):
        logging.getLogger(name).addFilter(_HideAPILoss())
    try:
        try:
            check_prefect_api()
        except PrefectAPIDown as exc:
            raise CLIError(str(exc)) from None
        with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"],
                                         PREFECT_CLIENT_MAX_RETRIES: int(os.environ["PREFECT_CLIENT_MAX_RETRIES"])}):
            return _sweep(config)
    except Exception as exc:
        if isinstance(exc, CLIError) or not _api_lost(exc):
            raise
        # Prefect's log shipper would print each failed batch to stderr from here on; the line below says it all.
        logging.raiseExceptions = False
        run_dir = config.run_dir()
        raise APILostError(f"PREFECT_API_URL={os.environ['PREFECT_API_URL']} stopped answering mid-sweep (a sweep trains "
                       f"through an outage of up to ui.api_outage_seconds={config.ui.api_outage_seconds:g} s); the sweep stopped "
                       f"and {run_dir}/ledger.jsonl and result.json keep every finished trial (`rungflow report {run_dir}`). "
                       f"Restart the Prefect server or point PREFECT_API_URL at a live one, then rerun (`rungflow resume {run_dir}` "
                       "continues from the ledger)") from None
    finally:
        if server is not None:
            stop_prefect_server(server)


def _sweep(config) -> int:
    from rungflow.flows.sweep import run_sweep, set_reporter
    from rungflow.results import plot_anytime

    progress = _Progress()
    set_reporter(progress)
    from rungflow.config import ConfigError

    log_file = log_to_run_dir(config.run_dir())
    try:
        result = run_sweep(config, config.run_dir())
    except ConfigError as exc:  # found once the flow opened the run directory (e.g. another sweep holds it)
        raise CLIError(str(exc)) from None
    finally:
        progress.stop()
        set_reporter(None)
        logging.getLogger("prefect").removeHandler(log_file)
        log_file.close()
    console.print(leaderboard_table(result))
    for line in summary_lines(result):
        console.print(line)
    plot = plot_anytime(result, config.run_dir() / "anytime.png")
    console.print(f"run directory: {config.run_dir()} (result.json, ledger.jsonl, sweep.log, {plot.name})")
    return 0


# --- report -------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from rungflow.results import load_result, plot_anytime

    try:
        result = load_result(args.run_dir)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CLIError(f"{Path(args.run_dir) / 'result.json'} cannot be read ({type(exc).__name__}); a running sweep "
                       "rewrites it after each stage, or `rungflow resume` rebuilds it from the ledger") from None
    console.print(leaderboard_table(result, limit=args.top))
    for line in summary_lines(result):
        console.print(line)
    plot = plot_anytime(result, Path(args.run_dir) / "anytime.png")
    console.print(f"plot: {plot}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) like every other CLI error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        err_console.print(f"[red]error:[/red] {escape(message)}; see `{self.prog} --help`", highlight=False, soft_wrap=True)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rungflow", description="Budget-capped AutoML sweeps as Prefect flows on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print Prefect's INFO log lines (task runs starting and finishing) on the console too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    set_help = "override a config field, e.g. --set scheduler.eta=4 (repeatable)"

    p = sub.add_parser("plan", help="show brackets, rungs, trials and predicted spend before spending anything")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--simulate", action="store_true",
                   help="run the sweep's own driver on a simulated cluster: wall-clock, GPU-hours, cost, utilisation")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="--simulate: GPUs (or CPU workers) in the cluster")
    p.add_argument("--costs-from", metavar="RUN_DIR", help="--simulate: trial durations from a previous run's ledger")
    p.add_argument("--seconds-per-unit", type=float, metavar="S",
                   help="--simulate: trial durations as S seconds per budget unit")
    p.add_argument("--stage-seconds", type=float, metavar="S",
                   help="--simulate: driver seconds between synchronous stages (default: measured in --costs-from, "
                        "else 0.12)")
    p.add_argument("--setup-seconds", type=float, metavar="S",
                   help="--simulate: seconds from the sweep's start to its first trial (default: measured in "
                        "--costs-from, else one stage's charge)")
    p.add_argument("--dispatch-seconds", type=float, metavar="S",
                   help="--simulate: seconds a worker holds each trial before it starts (default: measured in "
                        "--costs-from, else 0)")
    p.add_argument("--json", action="store_true", help="--simulate: print one JSON object")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("sweep", help="run a budget-capped sweep")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("resume", help="continue an interrupted sweep: finished trials are kept, lost work billed once")
    p.add_argument("run_dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="raise a cap or move the runtime, e.g. --set budget.max_gpu_hours=20 (budget.*, runtime.*, storage.* and ui.* only)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("report", help="leaderboard and summary of a finished or running sweep")
    p.add_argument("run_dir")
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: their message is printed already
        return int(exc.code or 0)
    from rungflow.redact import install_log_redaction, redact

    quiet_prefect_console(args.verbose)
    install_log_redaction()
    try:
        return args.func(args)
    except CLIError as exc:
        # Escaped: a message naming an extra ("rungflow[torch]") must not be read as rich markup.
        err_console.print(f"[red]error:[/red] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True, markup=True)
        if isinstance(exc, APILostError):
            _exit_now(2)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished trials are in the run directory's ledger.jsonl")
        return 130


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # a local Ray started by this process must not outlive it
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
