"""Search efficiency on LCBench: how much of a full-budget random search's GPU-hours rungflow needs.

Protocol (per instance and seed):

* baseline: random search, 128 configurations, each trained to the full 52 epochs (fifo), through
  the same flow users run; its best final accuracy ``B`` and total GPU-hours ``G``;
* target ``B - 0.5`` accuracy points;
* each rungflow method (Hyperband/ASHA with TPE/BOHB, 1..52 epochs, η=3) runs with the same search
  seed under a hard cap of ``0.35 · G`` GPU-hours;
* from each run's ``result.json`` events: the spend at which the full-budget incumbent first
  reaches the target (as a fraction of ``G``), and the incumbent at 5 %, 10 % and 20 % of ``G``.

GPU-hours here are the surrogate's predicted training seconds, billed as GPU-seconds; wall-clock
on this machine is recorded separately (per run) so the cost of the benchmark itself is visible.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    LCBENCH_MAX_EPOCH,
    Point,
    acc_cell,
    add_lcbench_grid_arguments,
    anytime_figure,
    blank_spare_panels,
    by_instance,
    first_reach,
    fmt,
    fresh_dir,
    incumbent_curve,
    label_anytime_panel,
    median,
    median_anytime,
    neg_inf_if_none,
    peak_rss_mb,
    prefect_api,
    publish,
    run_config,
    save_figure,
    value_at,
)

__all__ = ["METHODS", "DEFAULT_INSTANCES", "DEFAULT_SEEDS", "SPEND_FRACTIONS", "run", "add_arguments"]

DEFAULT_INSTANCES: tuple[str, ...] = ("3945", "7593", "34539", "126025", "126026")
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
BASELINE_TRIALS = 128
TARGET_MARGIN = 0.5  # accuracy points below the baseline's best
CAP_FRACTION = 0.35  # of the baseline's GPU-hours
SPEND_FRACTIONS: tuple[float, ...] = (0.05, 0.10, 0.20)
HEADLINE_FRACTION = 0.10

# method name -> (scheduler kind, search algorithm)
METHODS: dict[str, tuple[str, str]] = {
    "hyperband+tpe": ("hyperband", "tpe"),
    "hyperband+bohb": ("hyperband", "bohb"),
    "asha+tpe": ("asha", "tpe"),
}


@dataclass
class RunMetrics:
    """One sweep's raw numbers; ``curve`` is the full-budget incumbent as (GPU-hours, accuracy) steps."""

    instance: str
    seed: int
    method: str
    wall_seconds: float
    gpu_hours: float
    stop_reason: str | None
    events: int
    full_budget_results: int
    best: float | None
    curve: list[tuple[float, float]]
    reach_gpu_hours: float | None = None
    reach_fraction: float | None = None  # of the baseline's G; None when not reached
    at_fraction: dict[str, float | None] = field(default_factory=dict)  # "0.1" -> incumbent accuracy
    # Against the honest reference: GPU-hours to E[B] − 0.5 as a share of E[G] (None: not reached).
    reach_expected_fraction: float | None = None


@dataclass
class Cell:
    """One (instance, seed): the baseline's numbers and every method's run."""

    instance: str
    seed: int
    baseline: RunMetrics
    best_full: float  # B
    gpu_hours: float  # G
    target: float
    methods: dict[str, RunMetrics] = field(default_factory=dict)
    # The honest reference (bench.search_sim.reference): E[best] and E[GPU-hours] of random-128.
    expected_best: float | None = None
    expected_gpu_hours: float | None = None


def honest_reference(instance: str) -> tuple[float, float]:
    """(E[B], E[G]) of random-128: the mean over draws of 128 from a 4,096-configuration pool at 52 epochs."""
    from bench.search_sim import reference

    ref = reference(str(instance))
    return ref.expected_best, ref.expected_gpu_hours


def lcbench_trainable(instance: str) -> dict[str, Any]:
    return {"kind": "yahpo_lcbench", "options": {"instance": instance}}


def baseline_config(instance: str, seed: int, runtime: Mapping[str, Any]) -> dict[str, Any]:
    """random-128: the full-budget random search whose best B and GPU-hours G set the target and the cap."""
    return run_config(
        f"bench-random128-{instance}-s{seed}", trainable=lcbench_trainable(instance), algorithm="random", seed=seed,
        scheduler={"kind": "fifo", "min_budget": LCBENCH_MAX_EPOCH, "max_budget": LCBENCH_MAX_EPOCH},
        runtime=runtime, num_trials=BASELINE_TRIALS,
    )


def capped_config(name: str, instance: str, seed: int, *, kind: str, algorithm: str, runtime: Mapping[str, Any],
                  iterations: int, max_gpu_hours: float) -> dict[str, Any]:
    """A method's sweep: 1..52 epochs, η = 3, under the cap; ``iterations`` is large so the cap ends it."""
    return run_config(
        f"bench-{name.replace('+', '-')}-{instance}-s{seed}", trainable=lcbench_trainable(instance),
        algorithm=algorithm, seed=seed,
        scheduler={"kind": kind, "min_budget": 1, "max_budget": LCBENCH_MAX_EPOCH, "eta": 3, "iterations": iterations},
        runtime=runtime, max_gpu_hours=max_gpu_hours,
    )


def _run(cfg: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], float]:
    from rungflow.config import validate
    from rungflow.flows.sweep import run_sweep

    t0 = time.perf_counter()
    result = run_sweep(validate(cfg), fresh_dir(run_dir))
    wall = time.perf_counter() - t0
    # Thousands of tiny checkpoint files per run are of no use once the run is over; result.json,
    # ledger.jsonl and config.json stay for inspection.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result, wall


def _metrics(instance: str, seed: int, method: str, result: Mapping[str, Any], wall: float) -> RunMetrics:
    events = result["events"]
    curve = incumbent_curve(events, LCBENCH_MAX_EPOCH, mode=result["metric"]["mode"])
    return RunMetrics(
        instance=instance, seed=seed, method=method, wall_seconds=wall,
        gpu_hours=float(result["ledger"]["gpu_hours"]), stop_reason=result.get("stop_reason"), events=len(events),
        full_budget_results=sum(1 for e in events if e["status"] == "completed" and e["budget"] == LCBENCH_MAX_EPOCH),
        best=curve[-1].best if curve else None, curve=[(p.gpu_hours, p.best) for p in curve],
    )


def _score_against(m: RunMetrics, G: float, target: float, expected: tuple[float, float] | None = None) -> None:
    """Fill the target and equal-spend figures of ``m`` relative to the baseline's G and target, and
    with ``expected`` = (E[B], E[G]) the share of E[G] it took to reach E[B] − 0.5."""
    curve = [Point(g, b) for g, b in m.curve]
    if expected is not None:
        reach_e = first_reach(curve, expected[0] - TARGET_MARGIN)
        m.reach_expected_fraction = None if reach_e is None else reach_e / expected[1]
    reach = first_reach(curve, target)
    m.reach_gpu_hours = reach
    m.reach_fraction = None if reach is None else reach / G
    m.at_fraction = {str(f): value_at(curve, f * G) for f in SPEND_FRACTIONS}


def run_cell(instance: str, seed: int, out: Path, *, runtime: Mapping[str, Any], methods: Sequence[str],
             iterations: int, log: Callable[[str], None] = print) -> Cell:
    runs = out / "runs" / instance / f"seed{seed}"
    result, wall = _run(baseline_config(instance, seed, runtime), runs / "random128")
    base = _metrics(instance, seed, "random-128", result, wall)
    if base.best is None or base.gpu_hours <= 0:
        raise RuntimeError(f"baseline {instance}/seed {seed} produced no full-budget result; see {runs / 'random128'}")
    G, B = base.gpu_hours, base.best
    cell = Cell(instance, seed, base, B, G, B - TARGET_MARGIN)
    expected = honest_reference(instance)
    cell.expected_best, cell.expected_gpu_hours = expected
    _score_against(base, G, cell.target, expected)
    log(f"  {instance} seed {seed} random-128: B={B:.3f} G={G:.3f} GPU-h ({wall:.1f} s); E[B]={expected[0]:.3f} "
        f"E[G]={expected[1]:.3f}")
    for name in methods:
        kind, algorithm = METHODS[name]
        cfg = capped_config(name, instance, seed, kind=kind, algorithm=algorithm, runtime=runtime,
                            iterations=iterations, max_gpu_hours=CAP_FRACTION * G)
        result, wall = _run(cfg, runs / name.replace("+", "-"))
        m = _metrics(instance, seed, name, result, wall)
        _score_against(m, G, cell.target, expected)
        cell.methods[name] = m
        reached = f"reached at {m.reach_fraction:.3f} G" if m.reach_fraction is not None else "not reached"
        log(f"  {instance} seed {seed} {name}: best={fmt(m.best, '.3f')} {reached}, spent {m.gpu_hours / G:.3f} G, "
            f"stop={m.stop_reason} ({wall:.1f} s, {m.events} events)")
    return cell


# --- summary ------------------------------------------------------------------------------------------
def summarize(cells: Sequence[Cell], methods: Sequence[str]) -> dict[str, Any]:
    """Per-instance and overall medians; every figure is computed from the raw runs in ``cells``."""
    groups = by_instance(cells)
    key = str(HEADLINE_FRACTION)
    baseline_rows = []
    for inst, cs in groups.items():
        baseline_rows.append({
            "instance": inst, "seeds": len(cs),
            "median_best": median([c.best_full for c in cs]),
            "expected_best": median([c.expected_best for c in cs]),
            "expected_gpu_hours": median([c.expected_gpu_hours for c in cs]),
            "median_gpu_hours": median([c.gpu_hours for c in cs]),
            "median_wall_seconds": median([c.baseline.wall_seconds for c in cs]),
            "median_reach_fraction": median([c.baseline.reach_fraction for c in cs]),
            "median_at": {str(f): median([neg_inf_if_none(c.baseline.at_fraction[str(f)]) for c in cs])
                          for f in SPEND_FRACTIONS},
        })
    method_rows = []
    for scope in [*groups, "all"]:
        cs = [c for c in cells if scope in ("all", c.instance)]
        for name in ["random-128", *methods]:
            runs = [c.baseline if name == "random-128" else c.methods[name] for c in cs]
            fractions = [r.reach_fraction for r in runs]
            method_rows.append({
                "instance": scope, "method": name, "runs": len(runs),
                "reached": sum(1 for f in fractions if f is not None),
                "reached_expected": sum(1 for r in runs if r.reach_expected_fraction is not None),
                "median_fraction_expected": median([math.inf if r.reach_expected_fraction is None else r.reach_expected_fraction
                                                    for r in runs]),
                "median_fraction_reached": median([f for f in fractions if f is not None]),
                "median_fraction_inf": median([math.inf if f is None else f for f in fractions]),
                "median_at": {str(f): median([neg_inf_if_none(r.at_fraction[str(f)]) for r in runs])
                              for f in SPEND_FRACTIONS},
                "median_gap_at_headline": median([neg_inf_if_none(r.at_fraction[key]) - c.best_full
                                                  for r, c in zip(runs, cs)]),
                "stopped_by_cap": sum(1 for r in runs if r.stop_reason == "max_gpu_hours"),
                "median_spent_fraction": median([r.gpu_hours / c.gpu_hours for r, c in zip(runs, cs)]),
                "median_wall_seconds": median([r.wall_seconds for r in runs]),
                "total_wall_seconds": sum(r.wall_seconds for r in runs),
                "max_wall_seconds": max(r.wall_seconds for r in runs),
            })
    return {"baseline": baseline_rows, "methods": method_rows}


def markdown(summary: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    pct = [f"{int(round(f * 100))}%" for f in SPEND_FRACTIONS]
    lines = [
        "# rungflow search efficiency on LCBench (YAHPO surrogate)",
        "",
        f"Baseline: random search, {BASELINE_TRIALS} configurations at {LCBENCH_MAX_EPOCH} epochs (fifo), best final "
        f"accuracy B and GPU-hours G. Target: B − {TARGET_MARGIN} points. Methods: min_budget 1, max_budget "
        f"{LCBENCH_MAX_EPOCH}, η=3, capped at {CAP_FRACTION:g}·G GPU-hours. Incumbent = best accuracy among results "
        f"at {LCBENCH_MAX_EPOCH} epochs. Seeds: {', '.join(map(str, meta['seeds']))}; runtime: {meta['runtime']}.",
        "",
        "## Baseline (random-128) per instance (medians over seeds)",
        "",
        "E[B], E[G]: the honest reference, the expected best and GPU-hours of 128 random 52-epoch configurations "
        "(the mean over draws from a 4,096-configuration pool, bench/search_sim.py); B, G: this seed's one draw.",
        "",
        "| instance | E[B] (%) | E[G] (GPU-h) | one draw B (%) | G (GPU-h) | wall (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in summary["baseline"]:
        lines.append(f"| {r['instance']} | {fmt(r.get('expected_best'))} | {fmt(r.get('expected_gpu_hours'), '.3f')} | "
                     f"{fmt(r['median_best'])} | {fmt(r['median_gpu_hours'], '.3f')} | {fmt(r['median_wall_seconds'], '.1f')} |")
    lines += [
        "",
        "## Methods",
        "",
        "fraction = GPU-hours at which the incumbent first reaches the target, divided by G (median over seeds; "
        "'reached' takes only runs that reached it, '∞' counts an unreached run as infinite). "
        f"Accuracy at {'/'.join(pct)} of G: median incumbent after that much spend ('none yet': no "
        f"{LCBENCH_MAX_EPOCH}-epoch result by then; n/a in the overall rows, where datasets would be pooled). "
        f"Δ@{int(HEADLINE_FRACTION * 100)}%: median of incumbent − B over runs (accuracy points). "
        "random-128 is the baseline's own anytime curve (uncapped, so it always reaches its target).",
        "",
        "*reached E[B]−0.5*, *to E[B]−0.5 (·E[G])*: the same against the honest reference (∞: not reached); "
        "the other columns judge against this seed's one draw B.",
        "",
        "| instance | method | reached E[B]−0.5 | to E[B]−0.5 (·E[G]) | reached B−0.5 | median fraction (reached) | median fraction (∞) | "
        + " | ".join(f"acc @{p} G" for p in pct)
        + f" | Δ@{int(HEADLINE_FRACTION * 100)}% vs B | stopped by cap | spent (·G) | wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(pct) + "---:|---:|---:|---:|",
    ]
    for r in summary["methods"]:
        inst = "**all**" if r["instance"] == "all" else r["instance"]
        # Accuracies of different datasets do not pool; the overall row keeps only Δ vs B, which does.
        accs = " | ".join("n/a" if r["instance"] == "all" else acc_cell(r["median_at"][str(f)]) for f in SPEND_FRACTIONS)
        lines.append(
            f"| {inst} | {r['method']} | {r.get('reached_expected', '-')}/{r['runs']} | "
            f"{fmt(r.get('median_fraction_expected'), '.3f')} | {r['reached']}/{r['runs']} | {fmt(r['median_fraction_reached'], '.3f')} | "
            f"{fmt(r['median_fraction_inf'], '.3f')} | {accs} | {acc_cell(r['median_gap_at_headline'])} | "
            f"{r['stopped_by_cap']}/{r['runs']} | {fmt(r['median_spent_fraction'], '.3f')} | "
            f"{fmt(r['median_wall_seconds'], '.1f')} |"
        )
    per_method = ", ".join(f"{r['method']} {r['total_wall_seconds']:.0f} s (max {r['max_wall_seconds']:.0f} s)"
                           for r in summary["methods"] if r["instance"] == "all")
    lines += [
        "",
        f"Wall time by method, summed over runs: {per_method}.",
        "",
        f"Total wall time: {meta['wall_seconds']:.0f} s (Prefect server start-up {meta['prefect_startup_seconds']:.1f} s); "
        f"peak RSS {meta['peak_rss_mb']:.0f} MB; 1-min load average {meta['loadavg_before'][0]:.2f} before, "
        f"{meta['loadavg_after'][0]:.2f} after; {meta['machine']}.",
        "",
    ]
    return "\n".join(lines)


def plot(cells: Sequence[Cell], methods: Sequence[str], path: Path) -> Path:
    """Median anytime curves per instance, spend as a fraction of each seed's G (so seeds align)."""
    import numpy as np

    groups = by_instance(cells)
    plt, fig, axes = anytime_figure(list(groups))
    grid = np.geomspace(0.01, 1.0, 400)
    colors = {"random-128": "#718096", "hyperband+tpe": "#2b6cb0", "hyperband+bohb": "#c05621", "asha+tpe": "#2f855a"}
    for ax, (inst, cs) in zip(axes.flat, groups.items()):
        lows: list[float] = []
        highs: list[float] = []  # methods can beat B, so the top is whatever was plotted
        for name in ["random-128", *methods]:
            runs = [c.baseline if name == "random-128" else c.methods[name] for c in cs]
            xs_ok, ys_ok = median_anytime(list(zip(runs, cs)), grid)
            if xs_ok:
                ax.step(xs_ok, ys_ok, where="post", color=colors.get(name), label=name,
                        linestyle="--" if name == "random-128" else "-")
                lows.append(float(np.percentile(ys_ok, 10)))
                highs.append(max(ys_ok))
        target = median([c.target for c in cs])
        ax.axhline(target, color="#c53030", linewidth=0.8, linestyle=":", label="target (median B − 0.5)")
        ax.axvline(CAP_FRACTION, color="#4a5568", linewidth=0.8, linestyle="-.", label=f"cap ({CAP_FRACTION:g}·G)")
        top = max([c.best_full for c in cs] + highs)
        if lows and target is not None:
            ax.set_ylim(min(min(lows), target) - 0.5, top + 0.5)
        label_anytime_panel(ax, inst, len(cs), xmin=0.01)
    spare = blank_spare_panels(axes, len(groups))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if spare:  # an empty panel holds the legend, so no curve is hidden under it
        spare[0].legend(handles, labels, loc="center", fontsize=10)
        fig.tight_layout()
    else:
        ncol = min(len(labels), 3)
        fig.tight_layout(rect=(0, 0.05 * math.ceil(len(labels) / ncol), 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9)
    return save_figure(plt, fig, path)


# --- command ------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lcbench_grid_arguments(p, DEFAULT_INSTANCES, DEFAULT_SEEDS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=Path, default=Path("bench/out/efficiency"))
    p.add_argument("--max-concurrent", type=int, default=2, help="thread runtime slots")
    p.add_argument("--iterations", type=int, default=20,
                   help="Hyperband iterations (ASHA: as many trials); large so the GPU-hour cap ends the run")
    p.add_argument("--render-only", action="store_true",
                   help="rebuild results.md, results.json's summary and the plot from OUT/results.json; run nothing")


def load_cells(path: Path) -> tuple[list[Cell], dict[str, Any]]:
    """Cells and meta back from a results.json, to re-render tables and plot without re-running."""
    import json

    data = json.loads(path.read_text())

    def metrics(d: Mapping[str, Any]) -> RunMetrics:
        return RunMetrics(**{**d, "curve": [tuple(p) for p in d["curve"]]})

    cells = [
        Cell(c["instance"], c["seed"], metrics(c["baseline"]), c["best_full"], c["gpu_hours"], c["target"],
             {k: metrics(v) for k, v in c["methods"].items()}, c.get("expected_best"), c.get("expected_gpu_hours"))
        for c in data["cells"]
    ]
    return cells, data["meta"]


def _write_outputs(out: Path, cells: Sequence[Cell], meta: Mapping[str, Any]) -> dict[str, Any]:
    summary = summarize(cells, meta["methods"])
    data = {"meta": dict(meta), "summary": summary, "cells": [asdict(c) for c in cells]}
    publish(out, data, markdown(summary, meta))
    png = plot(cells, meta["methods"], out / "anytime.png")
    print(f"efficiency: wrote {out / 'results.json'}, {out / 'results.md'}, {png}", flush=True)
    return data


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        cells, meta = load_cells(out / "results.json")
        return _write_outputs(out, cells, meta)
    runtime = {"kind": "thread", "max_concurrent": args.max_concurrent}
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    cells: list[Cell] = []
    with prefect_api() as startup:
        print(f"efficiency: Prefect API up in {startup:.1f} s; {len(args.instances)} instances x {len(args.seeds)} seeds "
              f"x (random-128 + {len(args.methods)} methods)", flush=True)
        for instance in args.instances:
            for seed in args.seeds:
                cells.append(run_cell(str(instance), seed, out, runtime=runtime, methods=args.methods,
                                      iterations=args.iterations, log=lambda s: print(s, flush=True)))
    wall = time.perf_counter() - t0
    meta = {
        "instances": [str(i) for i in args.instances], "seeds": list(args.seeds), "methods": list(args.methods),
        "runtime": f"thread, max_concurrent {args.max_concurrent}", "iterations": args.iterations,
        "baseline_trials": BASELINE_TRIALS, "target_margin": TARGET_MARGIN, "cap_fraction": CAP_FRACTION,
        "spend_fractions": list(SPEND_FRACTIONS), "wall_seconds": wall, "prefect_startup_seconds": startup,
        # Other processes on the machine share the cores; the load average says how much they did.
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        "peak_rss_mb": peak_rss_mb(), "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
    }
    return _write_outputs(out, cells, meta)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
