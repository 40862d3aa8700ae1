"""Week-over-week warm start: week 2's GPU-hours to reach week 1's quality, warm vs cold.

Protocol (per seed): week 1 is a cold retrain on the first part of a drifting table; week 2 runs
twice on the second part (shifted rows, a small synthetic drift): once warm-started from week 1's
study (its best configurations trained first at the full budget, all its observations as priors) and once cold (a
fresh registry). Target = week 1's best full-budget validation score − ``tolerance``. Reported:
GPU-hours (billed as the sweep bills: wall-clock × GPUs per trial) and epochs trained until week 2's
full-budget incumbent first reaches the target, and warm ÷ cold. Both week-2 runs of a seed run
back to back in one process, so machine load affects them alike; the epoch count does not depend
on load at all.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.common import first_reach, fmt, incumbent_curve, median, prefect_api, write_json

__all__ = ["add_arguments", "run"]


def make_weeks(out: Path, dataset: str, drift: float, seed: int) -> tuple[Path, Path]:
    """Week 1 = the first half of the shuffled rows; week 2 = the other half, features scaled by (1 + drift) plus noise.

    Disjoint halves: last week's model has never seen this week's held-out rows.
    """
    import numpy as np
    from sklearn import datasets

    frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n = len(frame)
    week1 = frame.iloc[: n // 2].copy()
    week2 = frame.iloc[n // 2:].copy()
    rng = np.random.default_rng(seed + 1000)
    features = [c for c in frame.columns if c != "target"]
    scale = week2[features].std().replace(0, 1.0).to_numpy()
    week2[features] = week2[features] * (1.0 + drift) + rng.normal(0.0, drift, size=(len(week2), len(features))) * scale
    paths = out / f"week1-{seed}.csv", out / f"week2-{seed}.csv"
    week1.to_csv(paths[0], index=False)
    week2.to_csv(paths[1], index=False)
    return paths


def retrain_config(args: argparse.Namespace, source: Path, registry: Path, runs: Path, seed: int, warm: bool) -> dict[str, Any]:
    return {
        "name": "warmstart", "data": {"source": str(source), "label": "target", "seed": 0},
        "registry": str(registry), "run_root": str(runs),
        "warm_start": {"enabled": warm, "top_k": args.top_k},
        "sweep": {
            "trainable": {"kind": "torch_mlp"},
            "search": {"algorithm": args.searcher, "seed": seed},
            "scheduler": {"kind": args.scheduler, "min_budget": 1, "max_budget": args.max_epochs, "eta": 3},
            "budget": {"max_gpu_hours": 10.0, "price_per_gpu_hour": 2.5},
            "runtime": {"kind": "thread", "max_concurrent": args.concurrency, "gpus_per_trial": 1.0},
        },
    }


def reach(events: Sequence[Mapping[str, Any]], full_budget: float, target: float) -> dict[str, Any]:
    """GPU-hours and epochs trained when the full-budget incumbent first reaches ``target``; totals too."""
    curve = incumbent_curve(events, full_budget)
    gpu_hours = first_reach(curve, target)
    epochs, at = 0.0, None
    for e in events:
        epochs += float(e.get("budget_trained") or 0.0)
        if gpu_hours is not None and at is None and e["cumulative_gpu_hours"] >= gpu_hours - 1e-15:
            at = epochs
    return {"gpu_hours": gpu_hours, "epochs": at, "total_gpu_hours": events[-1]["cumulative_gpu_hours"] if events else 0.0,
            "total_epochs": epochs, "final_best": curve[-1].best if curve else None}


def _events(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's billed events in order: the warm rung's (if any), then the sweep's, GPU-hours cumulated across both."""
    events: list[dict[str, Any]] = []
    offset = 0.0
    for run_dir in ((record["warm_start"].get("rung") or {}).get("run_dir"), record["sweep"]["run_dir"]):
        if not run_dir:
            continue
        part = json.loads((Path(run_dir) / "result.json").read_text())["events"]
        events += [{**e, "cumulative_gpu_hours": e["cumulative_gpu_hours"] + offset} for e in part]
        offset += part[-1]["cumulative_gpu_hours"] if part else 0.0
    return events


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from flows.retrain import retrain_flow

    work = args.out / f"seed-{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    week1, week2 = make_weeks(work, args.dataset, args.drift, seed)
    t0 = time.perf_counter()
    first = retrain_flow(retrain_config(args, week1, work / "registry", work / "runs", seed, warm=True))
    week1_events = _events(first)
    week1_best = max(e["score"] for e in week1_events if e["status"] == "completed" and e["budget"] == args.max_epochs)
    target = week1_best - args.tolerance
    shutil.copytree(work / "registry", work / "registry-cold")
    shutil.rmtree(work / "registry-cold" / "models" / "warmstart" / "studies")  # cold: no study to start from
    warm = retrain_flow(retrain_config(args, week2, work / "registry", work / "runs", seed, warm=True), str(week2))
    cold = retrain_flow(retrain_config(args, week2, work / "registry-cold", work / "runs-cold", seed, warm=False), str(week2))
    row = {
        "seed": seed, "week1_best": week1_best, "target": target, "week1_gpu_hours": first["sweep"]["gpu_hours"],
        "warm": reach(_events(warm), args.max_epochs, target), "cold": reach(_events(cold), args.max_epochs, target),
        "warm_start": warm["warm_start"], "wall_seconds": time.perf_counter() - t0,
        "decisions": {"warm": warm["decision"]["reason"], "cold": cold["decision"]["reason"]},
    }
    w, c = row["warm"], row["cold"]
    # Billed GPU-hours follow wall-clock, which machine load moves; the same epochs at one common rate
    # (both week-2 runs' GPU-hours per epoch pooled) show what the search itself saved.
    rate = (w["total_gpu_hours"] + c["total_gpu_hours"]) / max(w["total_epochs"] + c["total_epochs"], 1e-12)
    for side in (w, c):
        side["normalised_gpu_hours"] = None if side["epochs"] is None else side["epochs"] * rate
    # An unreached target costs at least everything the run spent: the ratio is then a bound, flagged.
    row["ratio_gpu_hours"] = _ratio(w["gpu_hours"], c["gpu_hours"], c["total_gpu_hours"])
    row["ratio_epochs"] = _ratio(w["epochs"], c["epochs"], c["total_epochs"])
    row["cold_reached"], row["warm_reached"] = c["gpu_hours"] is not None, w["gpu_hours"] is not None
    print(f"seed {seed}: week-1 best {week1_best:.4f}; warm {fmt(w['gpu_hours'], '.5f')} GPU-h / {fmt(w['epochs'], '.0f')} "
          f"epochs, cold {fmt(c['gpu_hours'], '.5f')} / {fmt(c['epochs'], '.0f')}; ratio {fmt(row['ratio_gpu_hours'], '.3f')}",
          flush=True)
    return row


def _ratio(warm: float | None, cold: float | None, cold_total: float) -> float | None:
    if warm is None:
        return None if cold is None else math.inf  # neither reached: no ratio
    denominator = cold if cold is not None else cold_total
    return warm / denominator if denominator > 0 else None


def markdown(rows: Sequence[Mapping[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| seed | week-1 best | target | warm GPU-h | cold GPU-h | warm ÷ cold (GPU-h) | warm epochs | cold epochs | "
        "warm ÷ cold (epochs) | week-2 final warm | week-2 final cold |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w, c = r["warm"], r["cold"]
        bound = "" if r["cold_reached"] or not r["warm_reached"] else " (≤, cold never reached)"
        lines.append(
            f"| {r['seed']} | {r['week1_best']:.4f} | {r['target']:.4f} | {fmt(w['gpu_hours'], '.5f', 'not reached')} | "
            f"{fmt(c['gpu_hours'], '.5f', 'not reached')} | {fmt(r['ratio_gpu_hours'], '.3f', 'n/a')}{bound} | {fmt(w['epochs'], '.0f')} | "
            f"{fmt(c['epochs'], '.0f')} | {fmt(r['ratio_epochs'], '.3f', 'n/a')} | {fmt(w['final_best'], '.4f')} | {fmt(c['final_best'], '.4f')} |"
        )
    lines.append(f"| **median** | | | | | **{fmt(median([r['ratio_gpu_hours'] for r in rows]), '.3f')}** | | | "
                 f"**{fmt(median([r['ratio_epochs'] for r in rows]), '.3f')}** | | |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "breast_cancer", "wine"])
    p.add_argument("--drift", type=float, default=0.02, help="week 2: features × (1 + drift) + N(0, drift·std)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tolerance", type=float, default=0.01, help="target = week-1 best − tolerance")
    p.add_argument("--searcher", default="tpe", choices=["tpe", "bohb", "random"])
    p.add_argument("--scheduler", default="hyperband", choices=["hyperband", "sha", "asha"])
    p.add_argument("--max-epochs", type=int, default=9)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/out/warmstart"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    with prefect_api():
        rows = [run_seed(args, seed) for seed in args.seeds]
    table = markdown(rows, args)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    write_json(args.out / "warmstart.json", {"rows": rows, "args": meta})
    (args.out / "warmstart.md").write_text(table + "\n")
    print(table)
    return {"rows": rows}
