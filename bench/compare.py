"""Peers side by side on LCBench: rungflow, Ray Tune and Optuna under the same GPU-hour cap.

Per instance and seed:

* random-128 (full-budget random search through rungflow's flow) gives B (best accuracy at 52
  epochs) and G (its GPU-hours); target = B − 0.5 points; every other method is capped at 0.35·G;
* rungflow Hyperband+TPE and ASHA+TPE run through the same flow users run (bench/efficiency.py);
* Ray Tune (OptunaSearch + ASHA, random + ASHA) and Optuna alone (TPE + HyperbandPruner / + SHA)
  run on the same surrogate and space, billed epoch by epoch as rungflow is (bench/peers.py);
* every run's events give the full-budget incumbent curve: GPU-hours to reach the target (·G),
  the incumbent at 5/10/20 % of G, and the method's own final pick re-evaluated at 52 epochs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
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
    incumbent_curve,
    label_anytime_panel,
    median,
    median_anytime,
    neg_inf_if_none,
    peak_rss_mb,
    prefect_api,
    save_figure,
    value_at,
    write_json,
)

__all__ = ["METHODS", "run", "add_arguments", "score_events"]

RUNGFLOW_METHODS: tuple[str, ...] = ("hyperband+tpe", "asha+tpe")
PEER_NAMES: tuple[str, ...] = ("tune-optuna+asha", "tune-random+asha", "optuna-tpe+hyperband", "optuna-tpe+sha")
METHODS: tuple[str, ...] = (*RUNGFLOW_METHODS, *PEER_NAMES)
BASELINE = "random-128"


@dataclass
class MethodResult:
    """One run of one method on one (instance, seed), scored against that cell's baseline."""

    instance: str
    seed: int
    method: str
    gpu_hours: float
    wall_seconds: float
    stop_reason: str | None
    trials: int
    events: int
    curve: list[tuple[float, float]]  # full-budget incumbent: (GPU-hours, accuracy)
    best_config: dict[str, Any] | None
    best_reported: float | None  # the pick's score as the method saw it
    best_epoch: float | None  # the epoch of that score
    final52: float | None = None  # the pick re-evaluated at 52 epochs
    reach_fraction: float | None = None  # GPU-hours to target / G; None: never
    at_fraction: dict[str, float | None] = field(default_factory=dict)
    reach_expected_fraction: float | None = None  # GPU-hours to E[B] − 0.5 / E[G]; None: never


@dataclass
class CompareCell:
    instance: str
    seed: int
    best_full: float  # B
    gpu_hours: float  # G
    target: float
    cap_gpu_hours: float
    runs: dict[str, MethodResult] = field(default_factory=dict)
    expected_best: float | None = None  # E[B] of random-128 (bench.search_sim.reference)
    expected_gpu_hours: float | None = None  # E[G]


def score_events(events: Sequence[Mapping[str, Any]], G: float, target: float,
                 fractions: Sequence[float]) -> tuple[list[Point], float | None, dict[str, float | None]]:
    """(incumbent curve, GPU-hours to target as a fraction of G, incumbent at each fraction of G)."""
    curve = incumbent_curve(events, LCBENCH_MAX_EPOCH)
    reach = first_reach(curve, target)
    return curve, (None if reach is None else reach / G), {str(f): value_at(curve, f * G) for f in fractions}


def _from_result_json(instance: str, seed: int, method: str, path: Path, wall: float) -> MethodResult:
    result = json.loads(path.read_text())
    best = result.get("best") or {}
    events = result["events"]
    return MethodResult(
        instance=instance, seed=seed, method=method, gpu_hours=float(result["ledger"]["gpu_hours"]),
        wall_seconds=wall, stop_reason=result.get("stop_reason"),
        trials=len({e["trial_id"] for e in events}), events=len(events), curve=[],
        best_config=best.get("config"), best_reported=best.get("score"), best_epoch=best.get("budget"),
    )


def run_cell(instance: str, seed: int, out: Path, methods: Sequence[str], *, max_concurrent: int,
             iterations: int) -> CompareCell:
    from bench import efficiency, peers

    rungflow = [m for m in methods if m in RUNGFLOW_METHODS]
    # The baseline and rungflow's methods: exactly the efficiency bench's runs, through the user's flow.
    cell = efficiency.run_cell(instance, seed, out / "rungflow", runtime={"kind": "thread", "max_concurrent": max_concurrent},
                               methods=rungflow, iterations=iterations, log=lambda s: print(s, flush=True))
    G, B = cell.gpu_hours, cell.best_full
    cap = efficiency.CAP_FRACTION * G
    cc = CompareCell(instance, seed, B, G, cell.target, cap, expected_best=cell.expected_best,
                     expected_gpu_hours=cell.expected_gpu_hours)
    runs_dir = out / "rungflow" / "runs" / instance / f"seed{seed}"
    cc.runs[BASELINE] = _from_result_json(instance, seed, BASELINE, runs_dir / "random128" / "result.json",
                                          cell.baseline.wall_seconds)
    for m in rungflow:
        cc.runs[m] = _from_result_json(instance, seed, m, runs_dir / m.replace("+", "-") / "result.json",
                                       cell.methods[m].wall_seconds)
    events: dict[str, list[dict[str, Any]]] = {
        name: json.loads(((runs_dir / ("random128" if name == BASELINE else name.replace("+", "-"))) / "result.json")
                         .read_text())["events"]
        for name in cc.runs
    }
    for m in methods:
        if m not in PEER_NAMES:
            continue
        r = peers.run_peer(m, instance, seed, cap)
        cc.runs[m] = MethodResult(
            instance=instance, seed=seed, method=m, gpu_hours=r.gpu_hours, wall_seconds=r.wall_seconds,
            stop_reason=r.stop_reason, trials=r.trials, events=len(r.events), curve=[], best_config=r.best_config,
            best_reported=r.best_reported, best_epoch=r.best_epoch,
        )
        events[m] = r.events
    for name, res in cc.runs.items():
        curve, res.reach_fraction, res.at_fraction = score_events(events[name], G, cc.target, efficiency.SPEND_FRACTIONS)
        res.curve = [(p.gpu_hours, p.best) for p in curve]
        if cc.expected_best is not None and cc.expected_gpu_hours:
            reach_e = first_reach(curve, cc.expected_best - efficiency.TARGET_MARGIN)
            res.reach_expected_fraction = None if reach_e is None else reach_e / cc.expected_gpu_hours
        res.final52 = peers.evaluate_at_full_budget(instance, res.best_config)
        reached = f"target at {res.reach_fraction:.3f} G" if res.reach_fraction is not None else "target not reached"
        print(f"  {instance} seed {seed} {name}: {reached}; pick {fmt(res.best_reported, '.2f')} @ epoch "
              f"{fmt(res.best_epoch, '.0f')} -> {fmt(res.final52, '.2f')} @ 52; spent {res.gpu_hours / G:.3f} G, "
              f"{res.trials} trials, {res.wall_seconds:.1f} s wall", flush=True)
    return cc


# --- summary ------------------------------------------------------------------------------------------
def summarize(cells: Sequence[CompareCell], methods: Sequence[str], fractions: Sequence[float]) -> list[dict[str, Any]]:
    instances = list(dict.fromkeys(c.instance for c in cells))
    rows = []
    for scope in [*instances, "all"]:
        cs = [c for c in cells if scope in ("all", c.instance)]
        for name in [BASELINE, *methods]:
            pairs = [(c.runs[name], c) for c in cs if name in c.runs]
            if not pairs:
                continue
            rows.append({
                "instance": scope, "method": name, "runs": len(pairs),
                "reached": sum(1 for r, _ in pairs if r.reach_fraction is not None),
                "reached_expected": sum(1 for r, _ in pairs if r.reach_expected_fraction is not None),
                "median_fraction_expected": median([math.inf if r.reach_expected_fraction is None else r.reach_expected_fraction
                                                    for r, _ in pairs]),
                "median_final52_gap_expected": median([None if r.final52 is None or c.expected_best is None
                                                       else r.final52 - c.expected_best for r, c in pairs]),
                "median_fraction": median([math.inf if r.reach_fraction is None else r.reach_fraction for r, _ in pairs]),
                "median_at": {str(f): median([neg_inf_if_none(r.at_fraction.get(str(f))) for r, _ in pairs])
                              for f in fractions},
                "median_final52": median([r.final52 for r, _ in pairs]),
                "median_final52_gap": median([None if r.final52 is None else r.final52 - c.best_full for r, c in pairs]),
                "median_spent_fraction": median([r.gpu_hours / c.gpu_hours for r, c in pairs]),
                "median_trials": median([float(r.trials) for r, _ in pairs]),
                "median_wall_seconds": median([r.wall_seconds for r, _ in pairs]),
            })
    return rows


def markdown(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    fractions = meta["spend_fractions"]
    pct = [f"{int(round(f * 100))}%" for f in fractions]
    lines = [
        "# Peers side by side on LCBench (YAHPO surrogate)",
        "",
        f"Instances {', '.join(meta['instances'])}; seeds {', '.join(map(str, meta['seeds']))}. Baseline random-128: "
        f"128 random configurations × {LCBENCH_MAX_EPOCH} epochs through rungflow's flow, best B, GPU-hours G. "
        f"Every other method: 1..{LCBENCH_MAX_EPOCH} epochs, η=3, capped at {meta['cap_fraction']:g}·G, billed the "
        "surrogate's time increment per epoch run. *to target* = GPU-hours at which the best 52-epoch result first "
        f"reaches B − {meta['target_margin']} (÷ G; ∞ never), *acc @x%* = best 52-epoch accuracy after x % of G "
        "('none yet': no 52-epoch result by then), *final @52* = the method's own pick re-evaluated at 52 epochs "
        "(in the **all** rows: final − B). Medians over seeds. The honest reference: E[B], E[G], the expected best "
        "and GPU-hours of 128 random 52-epoch configurations (mean over draws from a 4,096-configuration pool); "
        "*reached E[B]−0.5*, *to E[B]−0.5 (·E[G])* and *final − E[B]* judge against it; *reached B−0.5* and "
        "*to target (·G)* against the seed's one draw B.",
        "",
        "| instance | method | reached E[B]−0.5 | to E[B]−0.5 (·E[G]) | final − E[B] | reached B−0.5 | to target (·G) | "
        + " | ".join(f"acc @{p}" for p in pct) + " | final @52 | spent (·G) | trials | wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(pct) + "---:|---:|---:|---:|",
    ]
    for r in rows:
        overall = r["instance"] == "all"
        accs = " | ".join("n/a" if overall else acc_cell(r["median_at"][str(f)]) for f in fractions)
        final = fmt(r["median_final52_gap"], "+.2f") if overall else fmt(r["median_final52"], ".2f")
        lines.append(
            f"| {'**all**' if overall else r['instance']} | {r['method']} | {r.get('reached_expected', '-')}/{r['runs']} | "
            f"{fmt(r.get('median_fraction_expected'), '.3f')} | {fmt(r.get('median_final52_gap_expected'), '+.2f')} | "
            f"{r['reached']}/{r['runs']} | "
            f"{fmt(r['median_fraction'], '.3f')} | {accs} | {final} | {fmt(r['median_spent_fraction'], '.3f')} | "
            f"{fmt(r['median_trials'], '.0f')} | {fmt(r['median_wall_seconds'], '.1f')} |"
        )
    lines += [
        "",
        f"Total wall time {meta['wall_seconds']:.0f} s"
        + (f" ({len(meta['parts'])} processes side by side, their results.json merged)" if len(meta.get("parts", [])) > 1 else "")
        + f"; 1-min load average {meta['loadavg_before'][0]:.1f} before, "
        f"{meta['loadavg_after'][0]:.1f} after (a shared machine: wall times are not comparable across methods, "
        f"GPU-hours are); peak RSS {meta['peak_rss_mb']:.0f} MB; {meta['machine']}; {meta['versions']}.",
        "",
    ]
    return "\n".join(lines)


STYLES: dict[str, tuple[str, str]] = {
    BASELINE: ("#718096", "--"),
    "hyperband+tpe": ("#2b6cb0", "-"),
    "asha+tpe": ("#2f855a", "-"),
    "tune-optuna+asha": ("#c05621", "-."),
    "tune-random+asha": ("#d69e2e", "-."),
    "optuna-tpe+hyperband": ("#805ad5", ":"),
    "optuna-tpe+sha": ("#d53f8c", ":"),
}


def plot(cells: Sequence[CompareCell], methods: Sequence[str], path: Path, cap_fraction: float) -> Path:
    """Median anytime curves per instance; spend as a fraction of each seed's G so seeds align."""
    import numpy as np

    groups = by_instance(cells)
    plt, fig, axes = anytime_figure(list(groups), extra_panels=1)  # one more panel for the legend
    grid = np.geomspace(0.005, 1.0, 400)
    for ax, (inst, cs) in zip(axes.flat, groups.items()):
        lows: list[float] = []
        for name in [BASELINE, *methods]:
            pairs = [(c.runs[name], c) for c in cs if name in c.runs]
            if not pairs:
                continue
            xs, ys = median_anytime(pairs, grid)
            if xs:
                color, style = STYLES.get(name, (None, "-"))
                ax.step(xs, ys, where="post", color=color, linestyle=style, label=name)
                lows.append(float(np.percentile(ys, 10)))
        target = median([c.target for c in cs])
        ax.axhline(target, color="#1a202c", linewidth=0.8, linestyle=(0, (1, 3)), label="target (median B − 0.5)")
        ax.axvline(cap_fraction, color="#4a5568", linewidth=0.8, label=f"cap ({cap_fraction:g}·G)")
        top = max(c.best_full for c in cs)
        highs = [b for c in cs for r in c.runs.values() for _, b in r.curve[-1:]]
        if lows and target is not None:
            ax.set_ylim(min(min(lows), target) - 0.5, max([top, *highs]) + 0.5)
        label_anytime_panel(ax, inst, len(cs), xmin=0.005)
    spare = blank_spare_panels(axes, len(groups))
    # A method may have no curve on the first panel (no 52-epoch result yet): collect labels from all.
    legend: dict[str, Any] = {}
    for ax in list(axes.flat)[:len(groups)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    spare[0].legend(list(legend.values()), list(legend), loc="center", fontsize=10)
    fig.tight_layout()
    return save_figure(plt, fig, path)


# --- command ------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.efficiency import DEFAULT_INSTANCES, DEFAULT_SEEDS

    add_lcbench_grid_arguments(p, DEFAULT_INSTANCES, DEFAULT_SEEDS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="random-128 always runs: it sets G, the target and the cap")
    p.add_argument("--out", type=Path, default=Path("bench/out/compare"))
    p.add_argument("--max-concurrent", type=int, default=2, help="rungflow thread slots (Ray Tune uses 2 as well)")
    p.add_argument("--iterations", type=int, default=20, help="rungflow Hyperband iterations; the cap ends the run")
    p.add_argument("--render-only", nargs="*", type=Path, metavar="RESULTS_JSON",
                   help="rebuild results.md and anytime.png from OUT/results.json plus any other results.json "
                        "given (e.g. from runs split across processes); run nothing")


def _cell_from_dict(d: Mapping[str, Any]) -> CompareCell:
    runs = {k: MethodResult(**{**v, "curve": [tuple(p) for p in v["curve"]]}) for k, v in d["runs"].items()}
    return CompareCell(d["instance"], d["seed"], d["best_full"], d["gpu_hours"], d["target"], d["cap_gpu_hours"], runs,
                       d.get("expected_best"), d.get("expected_gpu_hours"))


def _load(paths: Sequence[Path]) -> tuple[list[CompareCell], dict[str, Any]]:
    cells: dict[tuple[str, int], CompareCell] = {}
    meta: dict[str, Any] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for d in data["cells"]:
            c = _cell_from_dict(d)
            cells[(c.instance, c.seed)] = c
        m = data["meta"]
        # A merged file names the runs it came from; a run's own file names itself.
        sources = m.get("parts") or [str(path.resolve())]
        if not meta:
            meta = dict(m)
            meta["parts"] = list(sources)
        else:  # parts run side by side in several processes: the longest is the wall time
            meta["wall_seconds"] = max(meta["wall_seconds"], m["wall_seconds"])
            meta["parts"] = list(dict.fromkeys([*meta["parts"], *sources]))
            meta["loadavg_after"] = max(meta["loadavg_after"], m["loadavg_after"])
            meta["peak_rss_mb"] = max(meta["peak_rss_mb"], m["peak_rss_mb"])
            meta["methods"] = list(dict.fromkeys([*meta["methods"], *m["methods"]]))
    ordered = sorted(cells.values(), key=lambda c: (int(c.instance) if c.instance.isdigit() else 0, c.instance, c.seed))
    meta["instances"] = list(dict.fromkeys(c.instance for c in ordered))
    meta["seeds"] = sorted({c.seed for c in ordered})
    return ordered, meta


def _write(out: Path, cells: Sequence[CompareCell], meta: Mapping[str, Any], *, final: bool) -> None:
    write_json(out / "results.json", {"meta": dict(meta), "cells": [asdict(c) for c in cells]})
    if not final:
        return
    rows = summarize(cells, meta["methods"], meta["spend_fractions"])
    write_json(out / "summary.json", rows)
    text = markdown(rows, meta)
    (out / "results.md").write_text(text)
    png = plot(cells, meta["methods"], out / "anytime.png", meta["cap_fraction"])
    print(text)
    print(f"compare: wrote {out / 'results.json'}, {out / 'results.md'}, {png}", flush=True)


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("prefect", "ray", "optuna"))


def run(args: argparse.Namespace) -> None:
    from bench import efficiency

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only is not None:
        own = [out / "results.json"] if (out / "results.json").is_file() else []
        if not own and not args.render_only:
            raise SystemExit(f"compare: nothing to render: {out / 'results.json'} is missing and no RESULTS_JSON given")
        cells, meta = _load([*own, *args.render_only])
        _write(out, cells, meta, final=True)
        return
    # Tune's per-trial result.json/progress.csv/TensorBoard writers cost wall time only; billing is unaffected.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    t0 = time.perf_counter()
    meta: dict[str, Any] = {
        "instances": [str(i) for i in args.instances], "seeds": list(args.seeds), "methods": list(args.methods),
        "cap_fraction": efficiency.CAP_FRACTION, "target_margin": efficiency.TARGET_MARGIN,
        "spend_fractions": list(efficiency.SPEND_FRACTIONS), "rungflow_runtime": f"thread, max_concurrent {args.max_concurrent}",
        "loadavg_before": list(os.getloadavg()), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}", "versions": _versions(),
    }
    cells: list[CompareCell] = []
    with prefect_api() as startup:
        print(f"compare: Prefect API up in {startup:.1f} s; {len(args.instances)} instances x {len(args.seeds)} seeds "
              f"x (random-128 + {len(args.methods)} methods)", flush=True)
        for instance in args.instances:
            for seed in args.seeds:
                cells.append(run_cell(str(instance), seed, out, args.methods, max_concurrent=args.max_concurrent,
                                      iterations=args.iterations))
                # Partial results survive an interrupted run; --render-only renders them.
                meta.update(wall_seconds=time.perf_counter() - t0, loadavg_after=list(os.getloadavg()),
                            peak_rss_mb=peak_rss_mb())
                _write(out, cells, meta, final=False)
    meta.update(wall_seconds=time.perf_counter() - t0, loadavg_after=list(os.getloadavg()), peak_rss_mb=peak_rss_mb())
    _write(out, cells, meta, final=True)
