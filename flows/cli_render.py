"""A sweep's result on the terminal: the leaderboard, the summary lines, and ``rungflow report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from rungflow.flows.cli_common import CLIError, console
from rungflow.results import ensemble_line, history_line


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
        spent_line(ledger),
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
    if result.get("history"):
        lines.append(history_line(result["history"]))
    saved = result.get("best_model")
    if saved and saved.get("path"):
        lines.append(f"best model: {saved['family']} saved to {saved['path']} "
                     f"(val_score {saved['metrics'].get('val_score', float('nan')):.4f}); load it with rungflow.load_model(RUN_DIR)")
    elif saved and saved.get("error"):
        lines.append(f"best model: not saved ({saved['error']})")
    if saved and saved.get("ensemble"):
        lines.append(ensemble_line(saved["ensemble"]))
    if result.get("runtime", {}).get("note"):
        lines.append(f"note: {result['runtime']['note']}")
    return lines


def spent_line(ledger: dict[str, Any]) -> str:
    """What the trials trained and what their workers held (busy or idle), and which of the two the caps read."""
    line = f"spent: {ledger['gpu_hours']:.4g} GPU-hours trained, {ledger.get('cpu_hours', 0.0):.4g} CPU-hours, cost {ledger['cost']:.4g}"
    if "gpu_hours_held" not in ledger:  # a run from before workers' holds were kept
        return line
    billed = " (billed: budget.bill=held)" if ledger.get("bill") == "held" else ""
    return (f"{line}; held {ledger['gpu_hours_held']:.4g} GPU-hours by {ledger.get('workers_held', 0)} workers, "
            f"cost {ledger.get('cost_held', 0.0):.4g}{billed}")


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

