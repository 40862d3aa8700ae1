"""``python -m bench automl``: a mixed-family budget-capped sweep against AutoGluon alone, same wall-clock.

For each bundled dataset a quarter of the rows is held out as a test set neither side sees. The sweep
(``mixed`` families, Hyperband, TPE, thread runtime, a wall-clock deadline) runs on the rest, picks
its winner on its validation split and refits it into ``best_model/``; AutoGluon then gets the same
rows and ``time_limit`` = the sweep's wall-clock seconds. Both are scored on the test set. The
machine may be shared: the load average before and after is recorded with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.common import fresh_dir, prefect_api, write_json

DATASETS = ("breast_cancer", "wine", "digits")
FAMILIES = ("hgb", "random_forest", "linear", "torch_mlp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--deadline", type=float, default=90.0, help="the sweep's wall-clock cap in seconds")
    p.add_argument("--max-budget", type=int, default=9, help="Hyperband max budget (units: see the mixed trainable)")
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/out/automl"))


def _split(name: str, out: Path, seed: int) -> tuple[Path, Any]:
    from sklearn.model_selection import train_test_split

    from rungflow.tasks.data import read_table

    frame = read_table(f"sklearn:{name}")
    train, test = train_test_split(frame, test_size=0.25, stratify=frame["target"], random_state=seed)
    path = out / f"{name}-train.csv"
    train.to_csv(path, index=False)
    return path, test


def _accuracy(model: Any, test: Any) -> float:
    import numpy as np

    predicted = np.asarray(model.predict(test.drop(columns=["target"]))).astype(test["target"].dtype)
    return float((predicted == test["target"].to_numpy()).mean())


def run_dataset(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from rungflow.config import validate
    from rungflow.flows.sweep import run_sweep
    from rungflow.tasks.models import fit_model, load_model

    train_csv, test = _split(name, out, args.seed)
    data = {"source": str(train_csv), "label": "target", "seed": args.seed}
    cfg = validate({
        "name": f"automl-bench-{name}",
        "trainable": {"kind": "mixed", "options": {"data": data, "families": list(FAMILIES)}},
        "search": {"algorithm": "tpe", "seed": args.seed},
        "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": args.max_budget, "eta": 3, "iterations": 10},
        "budget": {"deadline": args.deadline},
        "runtime": {"kind": "thread", "max_concurrent": args.max_concurrent},
        "storage": {"run_dir": str(fresh_dir(out / name / "sweep"))},
    })
    t0 = time.perf_counter()
    result = run_sweep(cfg, out / name / "sweep")
    sweep_wall = time.perf_counter() - t0
    model = load_model(out / name / "sweep")
    sweep = {
        "test_accuracy": _accuracy(model, test), "val_accuracy": result["best"]["score"], "wall_seconds": sweep_wall,
        "family": model.family, "trials": result["ledger"]["trials_started"], "stop_reason": result["stop_reason"],
    }
    t0 = time.perf_counter()
    ag = fit_model("autogluon", {"data": data, "num_cpus": args.max_concurrent}, {}, max(5.0, round(sweep_wall)))
    ag_wall = time.perf_counter() - t0
    autogluon = {
        "test_accuracy": _accuracy(ag, test), "val_accuracy": ag.metrics["val_accuracy"], "wall_seconds": ag_wall,
        "time_limit": max(5.0, round(sweep_wall)), "models": int(ag.metrics.get("ag_models", 0)),
        "best_model": ag.leaderboard[0]["model"] if ag.leaderboard else "",
    }
    row = {"dataset": name, "rows": len(test) * 4, "sweep": sweep, "autogluon": autogluon}
    print(f"automl {name}: sweep {sweep['test_accuracy']:.3f} ({sweep['family']}, {sweep_wall:.0f} s) | "
          f"AutoGluon {autogluon['test_accuracy']:.3f} ({ag_wall:.0f} s)", flush=True)
    return row


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "| dataset | sweep test acc | sweep winner | sweep trials | sweep wall s | AutoGluon test acc | AutoGluon wall s (time_limit) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, a = r["sweep"], r["autogluon"]
        lines.append(f"| {r['dataset']} | {s['test_accuracy']:.3f} | {s['family']} | {s['trials']} | {s['wall_seconds']:.0f} | "
                     f"{a['test_accuracy']:.3f} | {a['wall_seconds']:.0f} ({a['time_limit']:.0f}) |")
    lines.append("")
    lines.append(f"Machine: {meta['machine']}; load average before/after {meta['loadavg_before'][0]:.1f}/"
                 f"{meta['loadavg_after'][0]:.1f} (shared with other work). Sweep deadline {meta['deadline']:.0f} s.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = []
    with prefect_api():
        for name in args.datasets:
            rows.append(run_dataset(name, args, out))
    meta = {
        "deadline": args.deadline, "families": list(FAMILIES), "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    write_json(out / "results.json", {"rows": rows, "meta": meta})
    table = render(rows, meta)
    (out / "results.md").write_text(table + "\n")
    print(table, flush=True)
    return {"rows": rows, "meta": meta}
