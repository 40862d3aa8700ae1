"""``result.json``, the leaderboard and the anytime plot, built from a sweep's records.

``result.json`` is the machine-readable summary CI pipelines and scripts read; it is rewritten
atomically after each stage, so it is always a complete document, also while the sweep runs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from budgets.ledger import SpendRecord, incumbent_curve
from budgets.schedulers import rank_key

if TYPE_CHECKING:
    from flows.sweep import Sweep

__all__ = ["build_result", "write_json_atomic", "leaderboard", "load_result", "plot_anytime", "events_of"]


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` (credentials redacted) as a complete file: readers never see half of one."""
    from rungflow.redact import redact_json

    data = redact_json(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def events_of(records: Iterable[SpendRecord]) -> list[dict[str, Any]]:
    """One event per trial per rung (and attempt), in the order they were billed."""
    events, cumulative = [], 0.0
    for r in records:
        cumulative += r.gpu_hours
        events.append(
            {
                "trial_id": r.trial_id, "bracket": r.bracket, "rung": r.rung, "budget": r.budget,
                "score": r.score, "status": str(r.status), "gpu_hours": r.gpu_hours, "cost": r.cost,
                "cumulative_gpu_hours": cumulative, "started_at": r.started_at, "finished_at": r.finished_at,
                "budget_trained": r.budget_trained, "wall_seconds": r.wall_seconds,
                "trainable_seconds": r.trainable_seconds, "attempt": r.attempt, "error": r.error, "worker": r.worker,
            }
        )
    return events


def leaderboard(records: Iterable[SpendRecord], trials: Mapping[str, Any], mode: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Trials ranked by highest budget reached, then score there (the same order the gates use)."""
    by_trial: dict[str, dict[str, Any]] = {}
    for r in records:
        row = by_trial.setdefault(r.trial_id, {"trial_id": r.trial_id, "bracket": r.bracket, "gpu_hours": 0.0,
                                                 "budget": 0.0, "rung": -1, "score": None, "status": "running"})
        row["gpu_hours"] += r.gpu_hours
        if r.ok and r.budget >= row["budget"]:
            row.update(budget=r.budget, rung=r.rung, score=r.score, status="ok")
        elif not r.ok and row["score"] is None:
            row.update(status=str(r.status), error=r.error)
    rows = sorted(by_trial.values(), key=lambda x: (-x["budget"], rank_key(x["score"], mode), x["trial_id"]))  # type: ignore[arg-type]
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        row["config"] = trials.get(row["trial_id"], {})
    return rows[:limit] if limit else rows


def build_result(sweep: "Sweep", final: bool = False) -> dict[str, Any]:
    records = sweep.ledger.records
    board = leaderboard(records, sweep.trials, sweep.mode)
    best_row = next((row for row in board if row["score"] is not None), None)
    best = None
    if best_row is not None:
        best = {"trial_id": best_row["trial_id"], "config": best_row["config"], "score": best_row["score"],
                "budget": best_row["budget"], "gpu_hours": best_row["gpu_hours"]}
    curve = incumbent_curve(records, sweep.mode)  # type: ignore[arg-type]
    return {
        "name": sweep.config.name,
        "status": "finished" if final else "running",
        "metric": {"name": sweep.config.metric_name(), "mode": sweep.mode},
        "best": best,
        "ledger": sweep.ledger.summary(sweep.max_budget),
        "stop_reason": sweep.stop_reason,
        "stop_detail": sweep.stop_detail,
        "decisions": sweep.decisions,
        "schedule": sweep.schedule,
        "scheduler": {"kind": sweep.config.scheduler.kind, "min_budget": sweep.min_budget,
                      "max_budget": sweep.max_budget, "eta": sweep.config.scheduler.eta,
                      "iterations": sweep.config.scheduler.iterations},
        "search": {"algorithm": sweep.config.search.algorithm, "seed": sweep.config.search.seed},
        "runtime": {"kind": sweep.config.runtime.kind, "gpus_per_trial": sweep.config.runtime.gpus_per_trial,
                    "note": sweep.runtime_note},
        "trials": sweep.trials,
        "leaderboard": board[:20],
        "anytime": [{"gpu_hours": p.gpu_hours, "budget": p.budget, "best": p.score} for p in curve],
        "events": events_of(records),
        "utilisation": utilisation(records, sweep.slots),
        "started_at": sweep.started_at,
        "elapsed_seconds": (max((r.finished_at for r in records), default=sweep.started_at) - sweep.started_at),
    }


def utilisation(records: list[SpendRecord], slots: int) -> dict[str, Any]:
    """Worker time busy in trials vs available over the sweep: what rung barriers cost in idle slots."""
    if not records:
        return {"slots": slots, "busy_seconds": 0.0, "span_seconds": 0.0, "idle_fraction": None}
    span = max(r.finished_at for r in records) - min(r.started_at for r in records)
    busy = sum(r.wall_seconds for r in records)
    available = max(span, 1e-9) * max(slots, 1)
    return {"slots": slots, "busy_seconds": busy, "span_seconds": span,
            "idle_fraction": max(0.0, 1.0 - busy / available)}


def load_result(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "result.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a rungflow run directory (rungflow sweep --out ...)?")
    return json.loads(path.read_text())


def plot_anytime(result: Mapping[str, Any], path: str | Path) -> Path:
    """Best score (at the highest fidelity reached) against cumulative GPU-hours, stop point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in result.get("anytime", []) if p.get("best") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if points:
        xs = [p["gpu_hours"] for p in points]
        ys = [p["best"] for p in points]
        ax.step(xs, ys, where="post", color="#2b6cb0", label="best score")
        ax.scatter([xs[-1]], [ys[-1]], color="#c53030", zorder=3,
                   label=f"stop: {result.get('stop_reason')}")
    metric = result.get("metric", {})
    ax.set_xlabel("GPU-hours spent")
    ax.set_ylabel(f"best {metric.get('name', 'score')} ({metric.get('mode', 'max')})")
    ax.set_title(f"{result.get('name', 'sweep')}: best score vs GPU-hours")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
