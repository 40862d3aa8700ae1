"""What cost-aware search saves on LCBench: Hyperband + TPE (and BOHB) with and without ``search.cost_aware``.

Protocol (per instance and seed), the efficiency benchmark's:

* baseline: random search, 128 configurations at the full 52 epochs (fifo); its best ``B`` and
  GPU-hours ``G``; target ``B − 0.5`` accuracy points;
* each method runs Hyperband (1..52 epochs, η = 3) with the same search seed under a hard cap of
  ``0.35 · G`` GPU-hours;
* figures from each run's ``result.json``: GPU-hours at which the 52-epoch incumbent first reaches
  the target, the best accuracy at the cap, and the median cost of the configurations the searcher
  proposed (GPU-seconds for the full 52 epochs, from their billed seconds per epoch): what TPE's
  preference for slow small-batch configurations costs.

GPU-hours are the surrogate's predicted training seconds, billed as GPU-seconds, so load on the
machine does not change them; wall-clock is recorded only to show what the benchmark itself took.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    LCBENCH_MAX_EPOCH,
    Point,
    add_lcbench_grid_arguments,
    by_instance,
    first_reach,
    fmt,
    library_versions,
    median,
    peak_rss_mb,
    prefect_api,
    publish,
    wall_and_load,
)
from bench.efficiency import (
    BASELINE_TRIALS,
    CAP_FRACTION,
    TARGET_MARGIN,
    _metrics,
    _run,
    baseline_config,
    capped_config,
)

__all__ = ["METHODS", "run", "add_arguments"]

DEFAULT_INSTANCES: tuple[str, ...] = ("34539", "3945")
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

# method name -> (search algorithm, cost_aware)
METHODS: dict[str, tuple[str, bool]] = {
    "hyperband+tpe": ("tpe", False),
    "hyperband+tpe+cost": ("tpe", True),
    "hyperband+bohb": ("bohb", False),
    "hyperband+bohb+cost": ("bohb", True),
}


@dataclass
class Run:
    instance: str
    seed: int
    method: str
    gpu_hours: float
    best: float | None
    reach_gpu_hours: float | None
    median_full_seconds: float | None  # median over proposed configs of GPU-seconds for 52 epochs
    trials: int
    stop_reason: str | None
    wall_seconds: float


@dataclass
class Cell:
    instance: str
    seed: int
    best_full: float  # B of random-128
    gpu_hours: float  # G of random-128
    target: float
    baseline: Run
    runs: dict[str, Run] = field(default_factory=dict)


def _full_training_seconds(events: Sequence[Mapping[str, Any]]) -> float | None:
    """Median over trials of (billed GPU-seconds per epoch trained) × 52: what each proposal would cost in full."""
    spent: dict[str, float] = {}
    trained: dict[str, float] = {}
    for e in events:
        if (e.get("budget_trained") or 0) > 0:
            spent[e["trial_id"]] = spent.get(e["trial_id"], 0.0) + float(e["gpu_hours"]) * 3600.0
            trained[e["trial_id"]] = trained.get(e["trial_id"], 0.0) + float(e["budget_trained"])
    per_trial = [spent[t] / trained[t] * LCBENCH_MAX_EPOCH for t in spent if trained[t] > 0]
    return statistics.median(per_trial) if per_trial else None


def _as_run(instance: str, seed: int, method: str, result: Mapping[str, Any], wall: float, target: float | None) -> Run:
    m = _metrics(instance, seed, method, result, wall)
    curve = [Point(g, b) for g, b in m.curve]
    return Run(
        instance=instance, seed=seed, method=method, gpu_hours=m.gpu_hours, best=m.best,
        reach_gpu_hours=first_reach(curve, target) if target is not None else None,
        median_full_seconds=_full_training_seconds(result["events"]), trials=len(result["trials"]),
        stop_reason=m.stop_reason, wall_seconds=wall,
    )


def run_cell(instance: str, seed: int, out: Path, *, runtime: Mapping[str, Any], methods: Sequence[str],
             iterations: int) -> Cell:
    runs = out / "runs" / instance / f"seed{seed}"
    result, wall = _run(baseline_config(instance, seed, runtime), runs / "random128")
    base = _as_run(instance, seed, "random-128", result, wall, None)
    if base.best is None or base.gpu_hours <= 0:
        raise RuntimeError(f"baseline {instance}/seed {seed} produced no full-budget result; see {runs / 'random128'}")
    target = base.best - TARGET_MARGIN
    base.reach_gpu_hours = _as_run(instance, seed, "random-128", result, wall, target).reach_gpu_hours
    cell = Cell(instance, seed, base.best, base.gpu_hours, target, base)
    print(f"  {instance} seed {seed} random-128: B={base.best:.3f} G={base.gpu_hours:.3f} GPU-h, median full "
          f"training {fmt(base.median_full_seconds, '.0f')} s ({wall:.1f} s)", flush=True)
    for name in methods:
        algorithm, cost_aware = METHODS[name]
        cfg = capped_config(name, instance, seed, kind="hyperband", algorithm=algorithm, runtime=runtime,
                            iterations=iterations, max_gpu_hours=CAP_FRACTION * base.gpu_hours)
        cfg["search"]["cost_aware"] = cost_aware
        result, wall = _run(cfg, runs / name.replace("+", "-"))
        r = _as_run(instance, seed, name, result, wall, target)
        cell.runs[name] = r
        reached = f"reached at {r.reach_gpu_hours:.3f} GPU-h" if r.reach_gpu_hours is not None else "not reached"
        print(f"  {instance} seed {seed} {name}: best={fmt(r.best, '.3f')} {reached}, median full training "
              f"{fmt(r.median_full_seconds, '.0f')} s, {r.trials} trials ({wall:.1f} s)", flush=True)
    return cell


def summarize(cells: Sequence[Cell], methods: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for inst, cs in by_instance(cells).items():
        for name in ["random-128", *methods]:
            runs = [c.baseline if name == "random-128" else c.runs[name] for c in cs]
            reach = [r.reach_gpu_hours for r in runs]
            rows.append({
                "instance": inst, "method": name, "runs": len(runs),
                "reached": sum(1 for x in reach if x is not None),
                "median_reach_gpu_hours": median([math.inf if x is None else x for x in reach]),
                "median_reach_fraction": median([math.inf if x is None else x / c.gpu_hours for x, c in zip(reach, cs)]),
                "median_best": median([r.best for r in runs]),
                "median_gap_to_B": median([(r.best if r.best is not None else -math.inf) - c.best_full
                                           for r, c in zip(runs, cs)]),
                "median_full_seconds": median([r.median_full_seconds for r in runs]),
                "median_trials": median([r.trials for r in runs]),
                "median_gpu_hours": median([r.gpu_hours for r in runs]),
            })
    return rows


def markdown(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    lines = [
        "# Cost-aware search on LCBench (YAHPO surrogate)",
        "",
        f"Baseline random-128: {BASELINE_TRIALS} configurations at {LCBENCH_MAX_EPOCH} epochs, best B, GPU-hours G. "
        f"Methods: Hyperband 1..{LCBENCH_MAX_EPOCH} epochs, η=3, capped at {CAP_FRACTION:g}·G. Seeds "
        f"{', '.join(map(str, meta['seeds']))}; medians over seeds.",
        "",
        f"| instance | method | reached B−{TARGET_MARGIN:g} | GPU-h to reach (median, ∞ = not reached) | "
        "fraction of G | best at cap | best − B | median full-training s of proposals | trials |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['method']} | {r['reached']}/{r['runs']} | {fmt(r['median_reach_gpu_hours'], '.3f')} | "
            f"{fmt(r['median_reach_fraction'], '.3f')} | {fmt(r['median_best'])} | {fmt(r['median_gap_to_B'])} | "
            f"{fmt(r['median_full_seconds'], '.0f')} | {fmt(r['median_trials'], '.0f')} |"
        )
    lines += ["", wall_and_load(meta), ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lcbench_grid_arguments(p, DEFAULT_INSTANCES, DEFAULT_SEEDS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=Path, default=Path("bench/out/costaware"))
    p.add_argument("--max-concurrent", type=int, default=2, help="thread runtime slots")
    p.add_argument("--iterations", type=int, default=20, help="Hyperband iterations; large so the GPU-hour cap ends the run")


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runtime = {"kind": "thread", "max_concurrent": args.max_concurrent}
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    cells: list[Cell] = []
    with prefect_api() as startup:
        print(f"costaware: Prefect API up in {startup:.1f} s", flush=True)
        for instance in args.instances:
            for seed in args.seeds:
                cells.append(run_cell(str(instance), seed, out, runtime=runtime, methods=args.methods,
                                      iterations=args.iterations))
    meta = {
        "instances": [str(i) for i in args.instances], "seeds": list(args.seeds), "methods": list(args.methods),
        "iterations": args.iterations, "cap_fraction": CAP_FRACTION, "target_margin": TARGET_MARGIN,
        "wall_seconds": time.perf_counter() - t0, "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()), "peak_rss_mb": peak_rss_mb(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "versions": library_versions(),
    }
    rows = summarize(cells, args.methods)
    data = {"meta": meta, "summary": rows, "cells": [asdict(c) for c in cells]}
    publish(out, data, markdown(rows, meta))
    print(f"costaware: wrote {out / 'results.json'}, {out / 'results.md'}", flush=True)
    return data
