"""Week-over-week warm start: week 2's GPU-hours to reach week 1's quality, warm vs cold, on stable and drifted weeks.

Protocol (per seed): a fixed synthetic table (``make_classification``, ``random_state=7``; four
classes, 10 informative of 20 features, so the MLP's learning rate, width and batch size matter)
is shuffled by the seed and cut into two disjoint weeks. Week 1 is a cold retrain. Week 2 comes
in two kinds, each run twice from week 1's registry, back to back: warm-started (week 1's best
configurations retried first, best first, stopping at the first that reaches week 1's quality;
its observations as priors) and cold (no study):

* ``stable``: this week's new rows of the same distribution;
* ``drift``: the same, with the concept moved: every feature pair of a random pairing rotated by
  ``--drift-angle`` degrees, so last week's *model* is stale (its held-out score drops) while the
  problem is as hard as before;
* ``noisier``: the stable week with ``--label-noise`` of its labels (training and held-out rows)
  replaced by another class: last week's quality is out of reach, the warm rung misses, and the
  week searches in full.

Target = week 1's best full-budget validation score − ``tolerance`` (default 0.02: the best of ~17
configurations on one 1,600-row split is lucky by about a point, and two weeks' splits differ by
about 1.4 points, binomial). The same runs are also scored against ``--also-tolerance`` (0.01).
Reported: GPU-hours (billed
as the sweep bills: wall-clock × GPUs per trial) and epochs trained until week 2's full-budget
incumbent first reaches the target, the whole run's spend (what the week costs), and warm ÷ cold.
The epoch counts do not depend on machine load; GPU-hours do, alike for the two runs of a pair.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import first_reach, fmt, incumbent_curve, median, prefect_api, write_json

__all__ = ["add_arguments", "run", "make_weeks"]

KINDS = ("stable", "drift", "noisier")


@functools.lru_cache(maxsize=2)
def _pool(dataset: str, rows: int) -> Any:
    import pandas as pd
    from sklearn import datasets

    if dataset != "synthetic":
        frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
        frame.columns = [str(c) for c in frame.columns]
        return frame
    x, y = datasets.make_classification(
        n_samples=rows, n_features=20, n_informative=10, n_redundant=4, n_classes=4, n_clusters_per_class=3,
        class_sep=1.0, flip_y=0.02, random_state=7)
    frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(x.shape[1])])
    frame["target"] = y
    return frame


def rotate(frame: Any, features: Sequence[str], degrees: float, seed: int) -> Any:
    """``frame`` with each pair of a seeded random pairing of ``features`` rotated by ``degrees`` (labels kept)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(features)))
    out = frame.copy()
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    for i, j in zip(order[0::2], order[1::2]):
        a, b = frame[features[i]].to_numpy(), frame[features[j]].to_numpy()
        out[features[i]], out[features[j]] = c * a - s * b, s * a + c * b
    return out


def relabel(frame: Any, share: float, seed: int) -> Any:
    """``frame`` with ``share`` of its rows (seeded) given another class, uniformly among the others."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = frame.copy()
    classes = np.unique(frame["target"].to_numpy())
    picked = rng.random(len(frame)) < share
    shift = rng.integers(1, len(classes), size=int(picked.sum()))
    index = np.searchsorted(classes, out.loc[picked, "target"].to_numpy())
    out.loc[picked, "target"] = classes[(index + shift) % len(classes)]
    return out


def make_weeks(out: Path, dataset: str, rows: int, drift_angle: float, label_noise: float, seed: int) -> dict[str, Path]:
    """Week 1 and week 2 (disjoint rows; last week's model never saw this week's held-out rows), each kind of week 2."""
    frame = _pool(dataset, rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n = len(frame)
    features = [c for c in frame.columns if c != "target"]
    weeks = {"week1": frame.iloc[: n // 2], "stable": frame.iloc[n // 2:]}
    weeks["drift"] = rotate(weeks["stable"], features, drift_angle, seed + 1000)
    weeks["noisier"] = relabel(weeks["stable"], label_noise, seed + 2000)
    paths = {}
    for name, part in weeks.items():
        paths[name] = out / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


def retrain_config(args: argparse.Namespace, source: Path, registry: Path, runs: Path, seed: int, warm: bool) -> dict[str, Any]:
    return {
        "name": "warmstart", "data": {"source": str(source), "label": "target", "seed": 0,
                 "validation_fraction": args.validation_fraction},
        "registry": str(registry), "run_root": str(runs),
        "warm_start": {"enabled": warm, "top_k": args.top_k, "tolerance": args.tolerance,
                       "stable_budget_fraction": args.stable_fraction},
        "sweep": {
            "trainable": {"kind": "torch_mlp"},
            "search": {"algorithm": args.searcher, "seed": seed},
            "scheduler": {"kind": args.scheduler, "min_budget": 1, "max_budget": args.max_epochs, "eta": 3},
            "budget": {"max_gpu_hours": 10.0, "price_per_gpu_hour": 2.5},
            "runtime": {"kind": "thread", "max_concurrent": args.concurrency, "gpus_per_trial": 1.0},
        },
    }


def reach(record: Mapping[str, Any], full_budget: float, target: float) -> dict[str, Any]:
    """GPU-hours and epochs trained when the full-budget incumbent first reaches ``target``; the whole run's too."""
    events = _events(record)
    curve = incumbent_curve(events, full_budget)
    gpu_hours = first_reach(curve, target)
    epochs, at = 0.0, None
    for e in events:
        epochs += float(e.get("budget_trained") or 0.0)
        if gpu_hours is not None and at is None and e["cumulative_gpu_hours"] >= gpu_hours - 1e-15:
            at = epochs
    # The whole run: trials, the winner's full-budget fit, and a sweep refit that lost the week to the warm rung.
    run_epochs = epochs + float(record["retrain"]["budget"]) + float((record["sweep"].get("unused_refit") or {}).get("budget", 0.0))
    return {"gpu_hours": gpu_hours, "epochs": at, "run_gpu_hours": record["spent"]["gpu_hours"], "run_epochs": run_epochs,
            "final_best": curve[-1].best if curve else None, "held_out": record["evaluation"]["challenger"]}


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


def _ratio(warm: float | None, cold: float | None, cold_total: float) -> float | None:
    if warm is None:
        return None if cold is None else math.inf  # neither reached: no ratio
    denominator = cold if cold is not None else cold_total  # cold never reached: a bound (flagged in the table)
    return warm / denominator if denominator > 0 else None


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    from rungflow.flows.retrain import retrain_flow

    work = args.out / f"seed-{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    weeks = make_weeks(work, args.dataset, args.rows, args.drift_angle, args.label_noise, seed)
    first = retrain_flow(retrain_config(args, weeks["week1"], work / "registry", work / "runs", seed, warm=True))
    week1_events = _events(first)
    week1_best = max(e["score"] for e in week1_events if e["status"] == "completed" and e["budget"] == args.max_epochs)
    target = week1_best - args.tolerance
    rows = []
    for kind in args.kinds:
        t0 = time.perf_counter()
        registries = {side: work / f"registry-{kind}-{side}" for side in ("warm", "cold")}
        for path in registries.values():
            shutil.copytree(work / "registry", path)
        shutil.rmtree(registries["cold"] / "models" / "warmstart" / "studies")  # cold: no study to start from
        records = {side: retrain_flow(retrain_config(args, weeks[kind], registries[side], work / f"runs-{kind}-{side}", seed,
                                                     warm=side == "warm")) for side in ("warm", "cold")}
        w, c = (reach(records[side], args.max_epochs, target) for side in ("warm", "cold"))
        w2, c2 = (reach(records[side], args.max_epochs, week1_best - args.also_tolerance) for side in ("warm", "cold"))
        ws = records["warm"]["warm_start"]
        row = {
            "kind": kind, "seed": seed, "week1_best": week1_best, "target": target, "warm": w, "cold": c,
            "champion_week1": first["evaluation"]["challenger"], "champion_week2": records["warm"]["evaluation"]["champion"],
            "verdict": "stable" if ws["stable"] else "drifted", "rung_trials": (ws.get("rung") or {}).get("trials"),
            "rung_best": (ws.get("rung") or {}).get("best_score"), "warm_start": ws, "wall_seconds": time.perf_counter() - t0,
            "decisions": {side: records[side]["decision"]["reason"] for side in records},
            "ratio_gpu_hours": _ratio(w["gpu_hours"], c["gpu_hours"], c["run_gpu_hours"]),
            "ratio_epochs": _ratio(w["epochs"], c["epochs"], c["run_epochs"]),
            "ratio_run_gpu_hours": w["run_gpu_hours"] / c["run_gpu_hours"] if c["run_gpu_hours"] > 0 else None,
            "ratio_run_epochs": w["run_epochs"] / c["run_epochs"] if c["run_epochs"] > 0 else None,
            "cold_reached": c["gpu_hours"] is not None, "warm_reached": w["gpu_hours"] is not None,
            "also": {"tolerance": args.also_tolerance, "warm": w2, "cold": c2,
                     "ratio_gpu_hours": _ratio(w2["gpu_hours"], c2["gpu_hours"], c2["run_gpu_hours"]),
                     "ratio_epochs": _ratio(w2["epochs"], c2["epochs"], c2["run_epochs"])},
        }
        print(f"seed {seed} {kind}: week-1 best {week1_best:.4f}; warm rung {row['verdict']} after {row['rung_trials']}; "
              f"warm {fmt(w['gpu_hours'], '.5f')} GPU-h / {fmt(w['epochs'], '.0f')} epochs, cold {fmt(c['gpu_hours'], '.5f')} / "
              f"{fmt(c['epochs'], '.0f')}; ratio {fmt(row['ratio_gpu_hours'], '.3f')}; whole run {fmt(row['ratio_run_gpu_hours'], '.3f')}",
              flush=True)
        rows.append(row)
    return rows


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| week 2 | seed | week-1 best | target | week-1 model on week 2 | warm rung | warm GPU-h | cold GPU-h | "
        "warm ÷ cold (GPU-h) | warm epochs | cold epochs | warm ÷ cold (epochs) | whole run warm ÷ cold (GPU-h / epochs) | "
        "final held-out warm / cold |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w, c = r["warm"], r["cold"]
        bound = "" if r["cold_reached"] or not r["warm_reached"] else " (≤, cold never reached)"
        lines.append(
            f"| {r['kind']} | {r['seed']} | {r['week1_best']:.4f} | {r['target']:.4f} | {fmt(r['champion_week2'], '.4f')} | "
            f"{r['verdict']} after {r['rung_trials']} | {fmt(w['gpu_hours'], '.5f', 'not reached')} | "
            f"{fmt(c['gpu_hours'], '.5f', 'not reached')} | {fmt(r['ratio_gpu_hours'], '.3f', 'n/a')}{bound} | "
            f"{fmt(w['epochs'], '.0f')} | {fmt(c['epochs'], '.0f')} | {fmt(r['ratio_epochs'], '.3f', 'n/a')} | "
            f"{fmt(r['ratio_run_gpu_hours'], '.3f')} / {fmt(r['ratio_run_epochs'], '.3f')} | "
            f"{fmt(w['held_out'], '.4f')} / {fmt(c['held_out'], '.4f')} |"
        )
    also = rows[0]["also"]["tolerance"] if rows else 0.0
    lines += ["", "| week 2 | seeds | warm rung stable | median warm ÷ cold to target (GPU-h) | (epochs) | "
              "median whole run (GPU-h) | (epochs) | seeds ≤ 0.40 (GPU-h) | "
              f"target week-1 best − {also:g}: median (GPU-h) / reached warm, cold |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in sorted({r["kind"] for r in rows}, key=KINDS.index) + ["all"]:
        part = [r for r in rows if kind in ("all", r["kind"])]
        ok = sum(1 for r in part if r["ratio_gpu_hours"] is not None and r["ratio_gpu_hours"] <= 0.4)
        lines.append(
            f"| {kind} | {len(part)} | {sum(r['verdict'] == 'stable' for r in part)}/{len(part)} | "
            f"**{fmt(median([r['ratio_gpu_hours'] for r in part]), '.3f')}** | {fmt(median([r['ratio_epochs'] for r in part]), '.3f')} | "
            f"{fmt(median([r['ratio_run_gpu_hours'] for r in part]), '.3f')} | {fmt(median([r['ratio_run_epochs'] for r in part]), '.3f')} | "
            f"{ok}/{len(part)} | {fmt(median([r['also']['ratio_gpu_hours'] for r in part]), '.3f', 'n/a')} / "
            f"{sum(r['also']['warm']['gpu_hours'] is not None for r in part)}, "
            f"{sum(r['also']['cold']['gpu_hours'] is not None for r in part)} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "digits", "breast_cancer", "wine"])
    p.add_argument("--rows", type=int, default=8000, help="synthetic: rows in all (two weeks of half each)")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="which kinds of week 2 to run")
    p.add_argument("--drift-angle", type=float, default=45.0, help="drift: degrees each feature pair is rotated by")
    p.add_argument("--label-noise", type=float, default=0.15, help="noisier: share of week 2's labels replaced")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--tolerance", type=float, default=0.02, help="target = week-1 best − tolerance (also the flow's)")
    p.add_argument("--also-tolerance", type=float, default=0.01, help="the same runs scored against this tolerance too")
    p.add_argument("--validation-fraction", type=float, default=0.4, help="each week's held-out share")
    p.add_argument("--stable-fraction", type=float, default=0.25, help="the flow's warm_start.stable_budget_fraction")
    p.add_argument("--searcher", default="tpe", choices=["tpe", "bohb", "random"])
    p.add_argument("--scheduler", default="hyperband", choices=["hyperband", "sha", "asha"])
    p.add_argument("--max-epochs", type=int, default=9)
    p.add_argument("--top-k", type=int, default=3)
    # One trial at a time: on shared CPU cores two concurrent trials slow each other down, which a
    # GPU per trial would not, and billed GPU-hours are wall-clock.
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/out/warmstart"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with prefect_api():
        rows = [row for seed in args.seeds for row in run_seed(args, seed)]
    rows.sort(key=lambda r: (KINDS.index(r["kind"]), r["seed"]))
    table = markdown(rows)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    write_json(args.out / "warmstart.json", {"rows": rows, "args": meta, "wall_seconds": time.perf_counter() - started})
    (args.out / "warmstart.md").write_text(table + "\n")
    print(table)
    print(f"wall {time.perf_counter() - started:.0f} s")
    return {"rows": rows}
