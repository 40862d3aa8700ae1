"""``python -m bench.scale --fill``: Hyperband + BOHB one bracket at a time against brackets side by side, 1/8/64 GPUs.

Per LCBench instance and seed, the sweep the cluster targets are set on (Hyperband 1..52 epochs, η = 3, BOHB,
``gpus_per_trial`` 0.25, ``--iterations`` Hyperband iterations: 49 trials each) runs through the real driver on
the simulated cluster (:func:`rungflow.flows.plan_sim.simulate`, as ``rungflow plan --simulate``) twice:
``scheduler.max_open_brackets: 1`` (the schedule before brackets ran side by side) and unset (the default); with
``--modes ... asha``, also ASHA with the same searcher and trial count (would a scheduler chosen from the plan do
better on a cluster?).
Durations and scores come from whole learning curves read at once (:class:`bench.search_sim.Curves`, the
surrogate's time made non-decreasing, as the robust bench bills it), which makes a 784-trial sweep a few seconds.

Per run: wall-clock, utilisation, the critical path, speed-up (1 → 8, 8 → 64 GPUs); and quality as the robust bench
judges it, in trial-hours (GPU-hours at one GPU per trial, so E[G] compares): whether a 52-epoch result reached
E[B] − 0.5 and at what share of E[G], the best 52-epoch accuracy within 0.35·E[G] (the robust bench's cap), and the
final best, each against E[B].
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import fmt, median, write_json

__all__ = ["run_one", "summarize", "markdown", "main"]

DEV_INSTANCES = ("3945", "7593", "34539", "126025", "126026")
HELDOUT = ("167149", "168910", "189906", "167168", "189866", "146212")
# name -> (scheduler kind, scheduler.max_open_brackets); "asha" asks whether a plan-chosen asynchronous scheduler
# would serve a cluster better than Hyperband's brackets side by side (same searcher, same trial count).
MODES: dict[str, tuple[str, int | None]] = {"one at a time": ("hyperband", 1), "side by side": ("hyperband", None),
                                            "asha": ("asha", None)}
DEFAULT_MODES = ("one at a time", "side by side")
CAP = 0.35  # of E[G], the robust bench's cap
MARGIN = 0.5


def _config(instance: str, seed: int, iterations: int, gpus_per_trial: float) -> Any:
    from rungflow.config import load_config

    return load_config("examples/lcbench.yaml", [
        f"name=fill-{instance}", f"trainable.options.instance={instance!r}", "scheduler.min_budget=1",
        f"scheduler.iterations={iterations}", f"runtime.gpus_per_trial={gpus_per_trial}", f"search.seed={seed}",
        "budget.max_gpu_hours=100000"])


def _lcbench(instance: str, seed: int, iterations: int, gpus_per_trial: float) -> tuple[Any, Any, Any, Any, float]:
    from bench import search_sim as S

    curves = S.curves(instance)

    def seconds(config: Mapping[str, Any], start: float, stop: float) -> float:
        cumulative = curves.curve(config)[1]
        done = cumulative[int(round(start)) - 1] if start >= 1 else 0.0
        return float(cumulative[int(round(stop)) - 1] - done)

    def score(config: Mapping[str, Any], budget: float) -> float:
        return float(curves.curve(config)[0][int(round(budget)) - 1])

    return _config(instance, seed, iterations, gpus_per_trial), seconds, score, S.reference(instance), \
        float(S.LCBENCH_MAX_EPOCH)


def _fraction(table: str, seed: int, iterations: int, gpus_per_trial: float) -> tuple[Any, Any, Any, Any, float]:
    """The training-fraction family (:mod:`bench.fraction_family`): budget 1..27 = that share of the rows, fitted
    for real (cached); a promoted trial refits from scratch, so a rung lasts its whole fit whatever came before."""
    from bench import fraction_family as F
    from rungflow.config import validate

    fits = F.table(table)
    config = validate({
        "name": f"fill-{table}", "trainable": {"kind": "hgb", "options": {"data": {"source": "sklearn:breast_cancer"}}},
        "metric": {"mode": "max"}, "search": {"algorithm": "bohb", "seed": seed},
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": F.MAX_UNITS, "eta": 3,
                      "iterations": iterations},
        "budget": {"max_gpu_hours": 100000}, "runtime": {"kind": "thread", "gpus_per_trial": gpus_per_trial}})
    assert config.search_space() == fits.space, "the sweep must search the family's own space"
    return (config, lambda c, start, stop: fits.fit(c, stop)[1], lambda c, budget: fits.fit(c, budget)[0],
            F.reference(table), float(F.MAX_UNITS))


FAMILIES = {"lcbench": _lcbench, "hgb-fraction": _fraction}


def run_one(instance: str, seed: int, workers: int, mode: str, iterations: int,
            gpus_per_trial: float = 0.25, family: str = "lcbench") -> dict[str, Any]:
    from rungflow.flows.plan_sim import simulate

    config, seconds, score, ref, max_budget = FAMILIES[family](instance, seed, iterations, gpus_per_trial)
    kind, max_open = MODES[mode]
    t0 = time.perf_counter()
    r = simulate(config, workers=workers, durations=seconds, scores=score, against_one_gpu=False, scheduler_kind=kind,
                 scheduler_options={"max_open_brackets": max_open} if kind == "hyperband" else None)
    took = time.perf_counter() - t0
    target = ref.expected_best - MARGIN
    spent, reach, at_cap, best = 0.0, None, None, None
    for e in sorted(r["events"], key=lambda e: e["finished_at"]):
        spent += e["gpu_hours"] / gpus_per_trial  # trial-hours: GPU-hours at one GPU per trial, as E[G] counts them
        if e["budget"] < max_budget or e["score"] is None:
            continue
        best = e["score"] if best is None else max(best, e["score"])
        if spent <= CAP * ref.expected_gpu_hours:
            at_cap = best
        if reach is None and best >= target:
            reach = spent
    return {
        "family": family, "instance": instance, "seed": seed, "workers": workers, "mode": mode,
        "max_open_brackets": max_open,
        "iterations": iterations, "trials": r["trials"], "wall_hours": r["wall_seconds"] / 3600,
        "utilisation": r["utilisation"], "critical_path_hours": r["critical_path_seconds"] / 3600,
        "gpu_hours": r["gpu_hours"], "expected_best": ref.expected_best, "expected_gpu_hours": ref.expected_gpu_hours,
        "reach_fraction": None if reach is None else reach / ref.expected_gpu_hours,
        "gap_at_cap": None if at_cap is None else at_cap - ref.expected_best,
        "final_gap": None if best is None else best - ref.expected_best, "simulated_seconds": took,
    }


def _mode_of(row: Mapping[str, Any]) -> str:
    # Rows written before the asha mode existed name only max_open_brackets.
    return row.get("mode") or ("one at a time" if row["max_open_brackets"] == 1 else "side by side")


def summarize(rows: Sequence[Mapping[str, Any]], groups: Mapping[str, Sequence[str]],
              workers: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for group, instances in groups.items():
        for mode in MODES:
            mine = [r for r in rows if r["instance"] in instances and _mode_of(r) == mode]
            if not mine:
                continue
            walls = {(r["instance"], r["seed"], r["workers"]): r["wall_hours"] for r in mine}
            for w in workers:
                rs = [r for r in mine if r["workers"] == w]
                smaller = max((v for v in workers if v < w), default=None)
                speedups = [walls[(r["instance"], r["seed"], smaller)] / r["wall_hours"] for r in rs
                            if smaller is not None and (r["instance"], r["seed"], smaller) in walls]
                out.append({
                    "group": group, "mode": mode, "workers": w, "runs": len(rs),
                    "wall_hours": median([r["wall_hours"] for r in rs]),
                    "utilisation": median([r["utilisation"] for r in rs]),
                    "critical_path_hours": median([r["critical_path_hours"] for r in rs]),
                    "speedup_from": smaller, "speedup": median(speedups) if speedups else None,
                    "speedup_min": min(speedups) if speedups else None,
                    "reached": sum(r["reach_fraction"] is not None for r in rs),
                    "to_target": median([math.inf if r["reach_fraction"] is None else r["reach_fraction"] for r in rs]),
                    "gap_at_cap": median([r["gap_at_cap"] for r in rs]),
                    "final_gap": median([r["final_gap"] for r in rs]),
                })
    return out


def markdown(summary: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    fraction = meta.get("family") == "hgb-fraction"
    budget, top = ("1..27 units of the rows", "full-table") if fraction else ("1..52 epochs", "52-epoch")
    hours = ".4f" if fraction else ".2f"  # a fit on a share of 2,000 rows takes a fraction of a second
    lines = [
        f"Hyperband {budget}, η = 3, BOHB, {meta['iterations']} iterations ({meta['trials']} trials), 0.25 GPU a "
        f"trial; seeds {' '.join(map(str, meta['seeds']))}; medians over instances × seeds. *speed-up*: against the "
        f"row's next smaller cluster (median, worst). *reached*: runs whose {top} incumbent reached E[B] − 0.5; "
        f"*to target*: trial-hours when it did, ·E[G]; *at {CAP:g}·E[G]* and *final*: best {top} accuracy − E[B].",
        "",
        "| instances | schedule | GPUs | wall (h) | utilisation | critical path (h) | speed-up | reached | "
        f"to target (·E[G]) | at {CAP:g}·E[G] | final |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        speed = "" if s["speedup"] is None else \
            f"{s['speedup']:.1f}× ({s['speedup_min']:.1f}×) from {s['speedup_from']}"
        lines.append(
            f"| {s['group']} | {s['mode']} | {s['workers']} | {s['wall_hours']:{hours}} | {s['utilisation']:.2f} | "
            f"{s['critical_path_hours']:{hours}} | {speed} | {s['reached']}/{s['runs']} | {fmt(s['to_target'], '.3f')} | "
            f"{fmt(s['gap_at_cap'], '+.2f')} | {fmt(s['final_gap'], '+.2f')} |")
    lines += ["", f"Simulated in {meta['wall_seconds']:.0f} s; {meta['machine']}."]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=list(FAMILIES), default="lcbench",
                   help="lcbench (epochs, resumed) or hgb-fraction (gradient boosting, budget = share of the rows)")
    p.add_argument("--instances", nargs="+", default=None, help="LCBench instances or hgb-K tables (default: the dev set)")
    p.add_argument("--heldout", nargs="*", default=[], help="instances reported as their own group")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--iterations", type=int, default=16, help="Hyperband iterations (49 trials each)")
    p.add_argument("--fill-workers", type=int, nargs="+", default=[1, 8, 64], dest="fill_workers")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(DEFAULT_MODES),
                   help="Hyperband one bracket at a time, brackets side by side, and/or ASHA (same searcher and trials)")
    p.add_argument("--out", type=Path, default=Path("bench/out/fill"))


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.instances is None:
        from bench.fraction_family import DEV_TABLES

        args.instances = list(DEV_TABLES if args.family == "hgb-fraction" else DEV_INSTANCES)
    t0 = time.perf_counter()
    rows = []
    for instance in [*args.instances, *args.heldout]:
        for seed in args.seeds:
            for mode in args.modes:
                for w in args.fill_workers:
                    r = run_one(str(instance), seed, w, mode, args.iterations, family=args.family)
                    rows.append(r)
                    print(f"  {instance} s{seed} {mode} {w} GPUs: {r['wall_hours']:.3f} h, utilisation "
                          f"{r['utilisation']:.2f}, critical path {r['critical_path_hours']:.3f} h, reach "
                          f"{fmt(r['reach_fraction'], '.3f')}, final {fmt(r['final_gap'], '+.2f')} "
                          f"({r['simulated_seconds']:.1f} s)", flush=True)
    groups = {"dev": [str(i) for i in args.instances]}
    if args.heldout:
        groups["held-out"] = [str(i) for i in args.heldout]
    summary = summarize(rows, groups, args.fill_workers)
    meta = {"family": args.family, "iterations": args.iterations, "trials": rows[0]["trials"] if rows else 0, "seeds": list(args.seeds),
            "wall_seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"meta": meta, "summary": summary, "rows": rows})
    text = markdown(summary, meta)
    (args.out / "results.md").write_text(text)
    print(text)
    return {"summary": summary, "rows": rows}
