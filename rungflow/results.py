"""``result.json``, the leaderboard and the anytime plot, built from a sweep's records.

``result.json`` is the machine-readable summary CI pipelines and scripts read; it is rewritten
atomically after each stage, so it is always a complete document, also while the sweep runs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rungflow.budgets.ledger import Ledger, SpendRecord, incumbent_curve
from rungflow.budgets.scheduling import Scheduler, rank_key

if TYPE_CHECKING:
    from rungflow.config import SweepConfig

__all__ = ["build_result", "SweepState", "write_json_atomic", "leaderboard", "load_result", "plot_anytime", "anytime_png",
           "events_of", "history_section", "history_line", "planned_rungs", "savings", "counts", "hyperparameter_schedule", "schedule_png", "TOP_N"]

#: Leaderboard rows kept in result.json and shown in the Prefect artifact; the rest are counted, not listed.
TOP_N = 25


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
                "score": r.score, "status": str(r.status), "gpu_hours": r.gpu_hours, "cpu_hours": r.cpu_hours, "cost": r.cost,
                "cumulative_gpu_hours": cumulative, "started_at": r.started_at, "finished_at": r.finished_at,
                "budget_trained": r.budget_trained, "wall_seconds": r.wall_seconds,
                "trainable_seconds": r.trainable_seconds, "attempt": r.attempt, "error": r.error, "worker": r.worker,
                "metrics": dict(r.metrics),
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
            row.update(budget=r.budget, rung=r.rung, score=r.score, status="ok", metrics=dict(r.metrics))
        elif not r.ok and row["score"] is None:
            row.update(status=str(r.status), error=r.error)
    rows = sorted(by_trial.values(), key=lambda x: (-x["budget"], rank_key(x["score"], mode), x["trial_id"]))  # type: ignore[arg-type]
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        row["config"] = trials.get(row["trial_id"], {})
    return rows[:limit] if limit else rows


def planned_rungs(scheduler: Scheduler) -> list[dict[str, Any]]:
    """Every rung the schedule plans, with the budget units it trains (promoted trials resume from checkpoints)."""
    brackets = [(b.index, [(r.index, r.budget, r.num_trials) for r in b.rungs]) for b in scheduler.brackets]
    rows = []
    for bracket, rungs in brackets:
        previous = 0.0
        for rung, budget, trials in rungs:
            rows.append({"bracket": bracket, "rung": rung, "budget": budget, "trials": trials,
                         "units": trials * (budget - previous)})
            previous = budget
    return rows


def savings(plan: list[dict[str, Any]], records: list[SpendRecord], stop_reason: str | None,
            price_per_gpu_hour: float, asynchronous: bool = False) -> dict[str, Any]:
    """What the planned stages the sweep did not run would have cost, at the GPU-hours per budget unit measured.

    A synchronous rung counts as not run when no trial started in it; ASHA's rungs count the trials they
    lacked. A sweep that ran its whole schedule saved nothing.
    """
    ran: dict[tuple[int, int], set[str]] = {}
    for r in records:
        ran.setdefault((r.bracket, r.rung), set()).add(r.trial_id)
    planned_units = sum(row["units"] for row in plan)
    remaining_units, remaining_trial_rungs = 0.0, 0
    if stop_reason not in (None, "schedule_complete"):
        for row in plan:
            started = len(ran.get((row["bracket"], row["rung"]), ()))
            missing = max(0, row["trials"] - started) if asynchronous else (row["trials"] if started == 0 else 0)
            remaining_trial_rungs += missing
            remaining_units += missing * row["units"] / max(row["trials"], 1)
    trained = [r for r in records if r.budget_trained > 0]
    per_unit = (sum(r.gpu_seconds for r in trained) / sum(r.budget_trained for r in trained) / 3600.0) if trained else None
    gpu_hours = None if per_unit is None else remaining_units * per_unit
    return {
        "planned_units": planned_units,
        "remaining_units": remaining_units,
        "remaining_trial_rungs": remaining_trial_rungs,
        "fraction_of_plan": remaining_units / planned_units if planned_units else 0.0,
        "gpu_hours_per_unit": per_unit,
        "gpu_hours": gpu_hours,
        "cost": None if gpu_hours is None else gpu_hours * price_per_gpu_hour,
    }


def counts(board: list[dict[str, Any]]) -> dict[str, Any]:
    """Trials by status and by highest budget reached: what a top-N table leaves out, in a few numbers.

    By budget, not rung index: Hyperband's brackets start at different budgets, so "rung 0" of one
    bracket is "rung 2" of another.
    """
    by_status: dict[str, int] = {}
    by_budget: dict[float, int] = {}
    for row in board:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
        if row["score"] is not None:
            by_budget[row["budget"]] = by_budget.get(row["budget"], 0) + 1
    return {"trials": len(board), "by_status": dict(sorted(by_status.items())),
            "by_budget": {f"{b:g}": n for b, n in sorted(by_budget.items())}}


def hyperparameter_schedule(trial_id: str, trials: Mapping[str, Mapping[str, Any]],
                            lineage: Mapping[str, Mapping[str, Any]], budget: float) -> list[dict[str, Any]]:
    """The configuration ``trial_id`` trained with in each stretch of budget along its lineage, oldest first.

    A population-based-training clone starts at its parent's checkpoint (at ``cloned_at``) with a
    perturbed configuration, so the winner's schedule is its ancestors' configurations, each up to the
    budget where the next generation cloned it. A trial without a parent has one stretch.
    """
    chain, seen = [trial_id], {trial_id}
    while (parent := (lineage.get(chain[-1]) or {}).get("parent")) is not None and parent not in seen:
        chain.append(parent)
        seen.add(parent)
    chain.reverse()
    stretches, start = [], 0.0
    for i, t in enumerate(chain):
        end = float(lineage[chain[i + 1]]["cloned_at"]) if i + 1 < len(chain) else float(budget)
        stretches.append({"trial_id": t, "from_budget": start, "to_budget": end, "config": dict(trials.get(t, {}))})
        start = end
    return stretches


class SweepState(Protocol):
    """What :func:`build_result` reads: the driver's state (:class:`budgets.driver.SweepDriver`) with the
    run's config and runtime. ``flows/sweep.py``'s ``Sweep`` is one; declared here so that this module,
    which the flow and its tasks read, never imports the flow."""

    ledger: Ledger
    trials: dict[str, dict[str, Any]]
    lineage: dict[str, dict[str, Any]]
    mode: str
    scheduler: Scheduler
    config: SweepConfig
    min_budget: float
    max_budget: float
    stop_reason: str | None
    stop_detail: str
    decisions: list[dict[str, Any]]
    schedule: list[dict[str, Any]]
    runtime_note: str
    slots: int
    recorded: Any  # tasks.ui_sync.RecordedTaskRuns, or None where no Prefect flow run records the trials
    started_at: float


def build_result(sweep: SweepState, final: bool = False) -> dict[str, Any]:
    records = sweep.ledger.records
    board = leaderboard(records, sweep.trials, sweep.mode)
    best_row = next((row for row in board if row["score"] is not None), None)
    price = sweep.ledger.price_per_gpu_hour
    best = None
    if best_row is not None:
        best = {"trial_id": best_row["trial_id"], "config": best_row["config"], "score": best_row["score"],
                "budget": best_row["budget"], "rung": best_row["rung"], "bracket": best_row["bracket"],
                "gpu_hours": best_row["gpu_hours"], "cost": best_row["gpu_hours"] * price,
                "parent": (sweep.lineage.get(best_row["trial_id"]) or {}).get("parent"),
                "hyperparameter_schedule": hyperparameter_schedule(best_row["trial_id"], sweep.trials, sweep.lineage,
                                                                   best_row["budget"])}
    curve = incumbent_curve(records, sweep.mode)  # type: ignore[arg-type]
    plan = planned_rungs(sweep.scheduler)
    return {
        "name": sweep.config.name,
        "trainable": sweep.config.trainable.kind,
        "status": "finished" if final else "running",
        "metric": {"name": sweep.config.metric_name(), "mode": sweep.mode},
        "best": best,
        "ledger": {**sweep.ledger.summary(sweep.max_budget), "bill": sweep.config.budget.bill},
        "stop_reason": sweep.stop_reason,
        "stop_detail": sweep.stop_detail,
        "decisions": sweep.decisions,
        "schedule": sweep.schedule,
        "plan": plan,
        "savings": savings(plan, records, sweep.stop_reason, price,
                           asynchronous=not sweep.scheduler.synchronous),
        "counts": counts(board),
        "scheduler": {"kind": sweep.config.scheduler.kind, "min_budget": sweep.min_budget,
                      "max_budget": sweep.max_budget, "eta": sweep.config.scheduler.eta,
                      "iterations": sweep.config.scheduler.iterations},
        "search": {"algorithm": sweep.config.search.algorithm, "seed": sweep.config.search.seed,
                   "cost_aware": sweep.config.search.cost_aware, "cost_aware_reason": sweep.config.search.cost_aware_reason},
        "runtime": {"kind": sweep.config.runtime.kind, "gpus_per_trial": sweep.config.runtime.gpus_per_trial,
                    "note": sweep.runtime_note},
        "budget": {"max_gpu_hours": sweep.config.budget.max_gpu_hours, "max_cost": sweep.config.budget.max_cost,
                   "price_per_gpu_hour": price, "max_cpu_hours": sweep.config.budget.max_cpu_hours,
                   "price_per_cpu_hour": sweep.config.budget.price_per_cpu_hour},
        "trials": sweep.trials,
        # Per trial: the trial it was cloned from (null: the searcher proposed it) and the budget it cloned at.
        "lineage": sweep.lineage,
        "leaderboard": board[:TOP_N],
        "anytime": [{"gpu_hours": p.gpu_hours, "budget": p.budget, "best": p.score} for p in curve],
        "events": events_of(records),
        "utilisation": utilisation(records, sweep.slots),
        # How long the sweep held back new trials for the Prefect API to record finished ones (tasks/ui_sync.py).
        "ui_sync": sweep.recorded.summary() if sweep.recorded is not None else None,
        # The Prefect API outages the sweep trained through (tasks/api_watch.py).
        "prefect_api": watch.summary() if (watch := getattr(sweep, "api_watch", None)) is not None else None,
        "history": history_section(getattr(sweep, "history", None), sweep.trials, records, sweep.mode,
                                   getattr(sweep.searcher, "prior_decision", None), model_prior_report(sweep.searcher)),
        "started_at": sweep.started_at,
        "elapsed_seconds": (max((r.finished_at for r in records), default=sweep.started_at) - sweep.started_at),
    }


def model_prior_report(searcher: Any) -> dict[str, Any] | None:
    """What the history's model prior did (:class:`rungflow.budgets.transfer_prior.TransferPriorSearcher`), wherever
    it sits among the sweep's searcher wrappers; None without one."""
    while searcher is not None:
        if hasattr(searcher, "share_trajectory"):
            return searcher.report()
        searcher = getattr(searcher, "inner", None)
    return None


def history_section(prior: Mapping[str, Any] | None, trials: Mapping[str, Mapping[str, Any]],
                    records: Iterable[SpendRecord], mode: str, decision: Any = None,
                    model_prior: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """What the history's prior contributed: its sources, the portfolio's trials, the incumbents they gave, and
    whether it was kept or dropped and why (``decision``: :class:`rungflow.budgets.prior_guard.PriorDecision`);
    ``model_prior``: the model prior's trials and its last share (:func:`model_prior_report`)."""
    if prior is None:
        return None
    from rungflow.budgets.prior import config_key, incumbent_trials

    portfolio = {config_key(c) for c in prior.get("portfolio", [])}
    taken = [trial_id for trial_id, config in trials.items() if config_key(config) in portfolio]
    incumbents = incumbent_trials(({"trial_id": r.trial_id, "budget": r.budget, "score": r.score if r.ok else None}
                                   for r in records), mode)  # type: ignore[arg-type]
    summary = dict(prior.get("summary") or {})
    return {**summary, "portfolio": prior.get("portfolio", []), "portfolio_trials": taken,
            "incumbents": len(incumbents), "incumbents_from_portfolio": sum(t in taken for t in incumbents),
            "best_from_portfolio": bool(incumbents) and incumbents[-1] in taken,
            "prior": decision.to_json() if decision is not None else None,
            "model_prior_share": dict(model_prior) if model_prior is not None else None}


def ensemble_line(ensemble: dict[str, Any]) -> str:
    """Which model was saved, the ensemble or the best single trial, and by how much the ensemble beat it."""
    if ensemble.get("saved"):
        members = ", ".join(f"{m['trial_id']} ({m.get('family')}) x{m['weight']:.2f}" for m in ensemble["members"])
        return (f"saved the ensemble: {ensemble['metric']} {ensemble['val_score']:.4f} against the best single trial's "
                f"{ensemble['best_single']['val_score']:.4f} ({ensemble['best_single']['trial_id']}), better by "
                f"{ensemble['gain']:.4g} on the validation rows it was selected on (optimistic); members {members}")
    if "best_single" in ensemble:
        return (f"saved the best single trial: no ensemble beat it on validation ({ensemble['metric']} "
                f"{ensemble['best_single']['val_score']:.4f})")
    return f"saved the best single trial: no ensemble ({ensemble.get('reason', 'none built')})"


def history_line(history: dict[str, Any]) -> str:
    """``history: 3 earlier sweeps (96 trials, 1 task); 4 portfolio configs tried beside the searcher's own, 2 of 5 incumbents from them``."""
    tasks = history.get("tasks", 0)
    head = (f"history: {history.get('sweeps', 0)} earlier sweeps ({history.get('trials', 0)} trials, {tasks} "
            f"task{'s' if tasks != 1 else ''})")
    if history.get("configs_source"):
        given = f"{history['configs_source']} ({history.get('configs_in_space', 0)} configs)"
        head = f"history: {given}" if not history.get("sweeps") else f"{head} and {given}"
    taken = len(history.get("portfolio_trials") or [])
    portfolio = (f"{taken} portfolio configs tried beside the searcher's own, {history.get('incumbents_from_portfolio', 0)} of "
                 f"{history.get('incumbents', 0)} incumbents from them"
                 + (", the final best among them" if history.get("best_from_portfolio") else ""))
    model = history.get("model_observations", 0)
    line = f"{head}; {portfolio}; " + (f"the model also fit on {model} earlier results of the same task" if model
                                       else "the model fit on this sweep's results only")
    share = history.get("model_prior_share")
    if share:
        line += (f"; the model of {share['sweeps']} earlier sweeps proposed {share['trials_from_prior']} trials, the "
                 f"searcher {share['trials_from_searcher']}, its share {share['share']:.2f} at the end ({share['reason']})")
    if (history.get("stop") or {}).get("used"):
        line += f"; {history['stop']['why']}"
    verdict = history.get("prior") or {}
    if verdict.get("verdict") == "dropped":
        return f"{line}; the prior was dropped: {verdict['reason']}"
    if verdict.get("verdict") == "kept":
        return f"{line}; the prior was kept: {verdict['reason']}"
    if verdict:
        return f"{line}; the prior was kept, never judged: {verdict['reason']}"
    return line


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


def anytime_figure(result: Mapping[str, Any], figsize: tuple[float, float] = (7, 4), dpi: int = 110):
    """Best score (at the highest fidelity reached) against cumulative GPU-hours, stop point marked.

    A dotted line continues from the stop to where the remaining planned schedule would have ended:
    the GPU-hours the stop rule saved.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in result.get("anytime", []) if p.get("best") is not None]
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    spent = (result.get("ledger") or {}).get("gpu_hours", 0.0)
    if points:
        xs = [p["gpu_hours"] for p in points] + [max(spent, points[-1]["gpu_hours"])]
        ys = [p["best"] for p in points] + [points[-1]["best"]]
        ax.step(xs, ys, where="post", color="#2b6cb0", label="best score")
        finished = result.get("status") == "finished"
        stop = result.get("stop_reason")
        label = f"stop: {stop}" if finished or (stop and stop != "schedule_complete") else "now (running)"
        ax.scatter([xs[-1]], [ys[-1]], color="#c53030", zorder=3, s=40, label=label)
        saved = (result.get("savings") or {}).get("gpu_hours")
        if finished and saved:
            ax.plot([xs[-1], xs[-1] + saved], [ys[-1], ys[-1]], linestyle=":", color="#718096",
                    label=f"not run: {saved:.3g} GPU-hours of planned stages")
    metric = result.get("metric", {})
    ax.set_xlabel("GPU-hours spent")
    ax.set_ylabel(f"best {metric.get('name', 'score')} ({metric.get('mode', 'max')})")
    ax.set_title(f"{result.get('name', 'sweep')}: best score vs GPU-hours")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def plot_anytime(result: Mapping[str, Any], path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig = anytime_figure(result)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def anytime_png(result: Mapping[str, Any]) -> bytes:
    """The anytime plot as a small PNG (~20-40 kB), for embedding in a Prefect markdown artifact."""
    import io

    import matplotlib.pyplot as plt

    fig = anytime_figure(result, figsize=(7, 3.6), dpi=90)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def schedule_png(result: Mapping[str, Any]) -> bytes | None:
    """The winner's hyperparameter schedule as a small PNG: each parameter that changed, against budget.

    None when the winner has no lineage or nothing changed along it (there is no schedule to draw).
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stretches = (result.get("best") or {}).get("hyperparameter_schedule") or []
    changed = [k for k in (stretches[0]["config"] if stretches else {})
               if len({repr(s["config"].get(k)) for s in stretches}) > 1]
    if len(stretches) < 2 or not changed:
        return None
    fig, axes = plt.subplots(len(changed), 1, figsize=(7, 1.6 + 1.3 * len(changed)), dpi=90, sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], changed):
        xs = [s["from_budget"] for s in stretches] + [stretches[-1]["to_budget"]]
        ys = [s["config"][name] for s in stretches] + [stretches[-1]["config"][name]]
        numeric = all(isinstance(y, (int, float)) for y in ys)
        ax.step(xs, ys if numeric else [str(y) for y in ys], where="post", color="#2b6cb0")
        if numeric and all(y > 0 for y in ys) and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("budget")
    axes[0, 0].set_title(f"{result.get('name', 'sweep')}: the winner's hyperparameter schedule")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
