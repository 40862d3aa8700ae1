"""``python -m bench.pbt``: population-based training on a real torch MLP, against Hyperband + TPE and Ray Tune's PBT.

The training is rungflow's ``torch_mlp`` on a synthetic classification table (``make_table``), large
enough that a learning-rate schedule beats every constant rate; :func:`schedule_demo` shows it first.
Then, per seed:

- **rungflow pbt**: the real sweep flow (Prefect server, thread runtime, 2 slots), population 8,
  interval 2 epochs, 12 epochs, mutating lr, weight_decay and dropout;
- **rungflow hyperband+tpe**: the same flow and space, Hyperband (1..12 epochs, η = 3) with TPE,
  capped at the GPU-hours the PBT sweep of the same seed spent (``budget.max_gpu_hours``);
- **ray tune pbt**: ``tune.Tuner`` with ``PopulationBasedTraining`` (synchronous generations, same
  population, interval, quantile and resample probability), 2 concurrent trials, training through the
  same ``TorchMLPTrainable.train`` epoch by epoch from the same checkpoint bytes.

Every trial holds ``gpus_per_trial: 1`` (on this CPU machine it runs on CPU and is billed as a GPU
would be), so GPU-hours = seconds a trial trains, checkpoint I/O included, for rungflow as for Ray Tune.
Scores are the validation accuracy every method optimises (the same held-out 20% for all).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

OUT = Path("bench/out/pbt")
# RUNGFLOW_BENCH_PBT_EPOCHS / _POPULATION shrink a smoke run (Ray Tune's workers read them from the environment too).
EPOCHS = int(os.environ.get("RUNGFLOW_BENCH_PBT_EPOCHS", "12"))
POPULATION = int(os.environ.get("RUNGFLOW_BENCH_PBT_POPULATION", "8"))
INTERVAL, SLOTS = 2, 2
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
}
# Not searched, the same for every method (torch_mlp's defaults): the shape a PBT clone could not change anyway.
FIXED = {"hidden_units": 64, "num_layers": 2, "batch_size": 64}


def make_table(path: Path, seed: int = 0) -> Path:
    """4,000 rows, 30 features (12 informative), 4 classes, 3% flipped labels: hard enough that a schedule shows."""
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=30, n_informative=12, n_redundant=6, n_classes=4,
                               n_clusters_per_class=2, flip_y=0.03, class_sep=0.9, random_state=seed)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["label"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def _options(table: Path) -> dict[str, Any]:
    return {"data": {"source": str(table.resolve()), "label": "label", "seed": 0}}


def schedule_demo(table: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Validation accuracy after 12 epochs: seven constant learning rates against one step schedule."""
    import numpy as np

    from rungflow.tasks.trainables.base import TrainRequest
    from rungflow.tasks.trainables.torch_mlp import TorchMLPTrainable

    trainable = TorchMLPTrainable(_options(table))
    base = {**FIXED, "dropout": 0.0, "weight_decay": 1e-4}

    def run(lr_at: Any, seed: int) -> float:
        checkpoint, score = None, float("nan")
        for epoch in range(EPOCHS):  # one epoch per call, resuming, exactly as PBT's clones resume
            out = trainable.train(TrainRequest("demo", {**base, "lr": lr_at(epoch)}, epoch + 1, checkpoint, seed=seed))
            checkpoint, score = out.checkpoint, out.score
        return score

    rows: dict[str, list[float]] = {}
    for lr in np.geomspace(3e-4, 3e-2, 7):
        rows[f"constant {lr:.2g}"] = [run(lambda e, lr=lr: float(lr), s) for s in seeds]
    rows["step 1e-2 → 1e-3 → 1e-4 (at epochs 4, 8)"] = [
        run(lambda e: 1e-2 if e < 4 else 1e-3 if e < 8 else 1e-4, s) for s in seeds]
    return {name: {"mean": statistics.mean(v), "scores": v} for name, v in rows.items()}


def _sweep_config(name: str, table: Path, seed: int, scheduler: Mapping[str, Any], algorithm: str,
                  run_dir: Path, max_gpu_hours: float | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name, "trainable": {"kind": "torch_mlp", "options": _options(table)}, "space": SPACE,
        "search": {"algorithm": algorithm, "seed": seed}, "scheduler": dict(scheduler),
        "runtime": {"kind": "thread", "max_concurrent": SLOTS, "gpus_per_trial": 1},
        "storage": {"run_dir": str(run_dir)},
    }
    if max_gpu_hours is not None:
        config["budget"] = {"max_gpu_hours": max_gpu_hours}
    return config


def run_rungflow(table: Path, seed: int, work: Path, kind: str, max_gpu_hours: float | None = None) -> dict[str, Any]:
    from rungflow.config import validate
    from rungflow.flows.sweep import run_sweep

    if kind == "pbt":
        scheduler = {"kind": "pbt", "max_budget": EPOCHS, "population": POPULATION, "perturbation_interval": INTERVAL,
                     "mutations": list(SPACE)}
        algorithm = "random"
    else:
        scheduler = {"kind": "hyperband", "min_budget": 1, "max_budget": EPOCHS, "eta": 3, "iterations": 4}
        algorithm = "tpe"
    run_dir = work / f"{kind}-s{seed}"
    t0 = time.perf_counter()
    result = run_sweep(validate(_sweep_config(f"bench-pbt-{kind}-s{seed}", table, seed, scheduler, algorithm, run_dir,
                                              max_gpu_hours)), run_dir, refit=False)
    wall = time.perf_counter() - t0
    clone = [e["metrics"]["clone_seconds"] for e in result["events"] if "clone_seconds" in (e.get("metrics") or {})]
    best = result["best"] or {}
    return {"method": f"rungflow {kind}" + ("+tpe" if kind != "pbt" else ""), "seed": seed,
            "best": best.get("score"), "best_budget": best.get("budget"), "gpu_hours": result["ledger"]["gpu_hours"],
            "wall_seconds": wall, "trials": len(result["trials"]), "stop_reason": result["stop_reason"],
            "clone_seconds": sum(clone), "clones": len(clone),
            "schedule": [{"from": s["from_budget"], "to": s["to_budget"], "lr": s["config"]["lr"]}
                         for s in best.get("hyperparameter_schedule") or []]}


def _tune_train(config: dict[str, Any], options: dict[str, Any], seed: int) -> None:
    """One Ray Tune trial: epoch by epoch through ``TorchMLPTrainable.train``, checkpoint bytes every interval."""
    from ray import tune

    from rungflow.tasks.trainables.base import TrainRequest
    from rungflow.tasks.trainables.torch_mlp import TorchMLPTrainable

    trainable = TorchMLPTrainable(options)
    state, epoch = None, 0
    restored = tune.get_checkpoint()
    if restored is not None:  # a fresh start, or PBT's exploit: the top trial's checkpoint
        with restored.as_directory() as folder:
            state = (Path(folder) / "state.bin").read_bytes()
            epoch = int(json.loads((Path(folder) / "meta.json").read_text())["epoch"])
    trial_id = tune.get_context().get_trial_id()
    while epoch < EPOCHS:
        t0 = time.perf_counter()
        out = trainable.train(TrainRequest(trial_id, {**config, **FIXED}, epoch + 1, state, seed=seed))
        state, epoch = out.checkpoint, epoch + 1
        metrics = {"val_accuracy": out.score, "epoch": epoch}
        if epoch % INTERVAL == 0 or epoch == EPOCHS:
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "state.bin").write_bytes(state or b"")
                (Path(folder) / "meta.json").write_text(json.dumps({"epoch": epoch}))
                metrics["train_seconds"] = time.perf_counter() - t0
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            metrics["train_seconds"] = time.perf_counter() - t0
            tune.report(metrics)


def run_ray_tune(table: Path, seed: int, work: Path) -> dict[str, Any]:
    import random

    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=SLOTS, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    space = {"lr": tune.loguniform(1e-4, 1e-1), "weight_decay": tune.loguniform(1e-6, 1e-2),
             "dropout": tune.uniform(0.0, 0.3)}
    random.seed(seed)  # PBT's exploit and explore draw from Python's random module
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=INTERVAL, burn_in_period=0,
                                  hyperparam_mutations=space, quantile_fraction=0.25, resample_probability=0.25,
                                  synch=True)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_tune_train, options=_options(table), seed=seed), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=pbt, num_samples=POPULATION,
                                    search_alg=BasicVariantGenerator(random_state=seed), max_concurrent_trials=SLOTS,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"pbt-s{seed}", storage_path=str((work / "tune").resolve()), verbose=0,
                                  stop={"training_iteration": EPOCHS}),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if grid.num_errors:
        raise RuntimeError(f"ray tune pbt: {grid.num_errors} trials failed, e.g. {grid.errors[0]!r}")
    seconds = sum(float(r.metrics_dataframe["train_seconds"].sum()) for r in grid if r.metrics_dataframe is not None)
    best = grid.get_best_result(metric="val_accuracy", mode="max", scope="last")
    return {"method": "ray tune pbt", "seed": seed, "best": float(best.metrics["val_accuracy"]),
            "best_budget": float(best.metrics["epoch"]), "gpu_hours": seconds / 3600.0, "wall_seconds": wall,
            "trials": len(grid), "stop_reason": "finished"}


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        best = [r["best"] for r in mine if r["best"] is not None]
        out.append({"method": method, "runs": len(mine), "best_mean": statistics.mean(best) if best else None,
                    "best_std": statistics.pstdev(best) if len(best) > 1 else 0.0,
                    "gpu_hours_mean": statistics.mean(r["gpu_hours"] for r in mine),
                    "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in mine)})
    return out


def markdown(result: Mapping[str, Any]) -> str:
    demo_seeds = result.get("schedule_demo_seeds", result["seeds"])  # the demo trains on the first three seeds only
    lines = ["Validation accuracy after 12 epochs (torch_mlp, 64×2, AdamW; mean over seeds "
             f"{', '.join(map(str, demo_seeds))}):", "", "| learning rate | accuracy |", "|---|---|"]
    lines += [f"| {name} | {row['mean']:.4f} |" for name, row in result["schedule_demo"].items()]
    lines += ["", f"Population {POPULATION}, interval {INTERVAL} epochs, {EPOCHS} epochs, {SLOTS} slots, "
              f"seeds {', '.join(map(str, result['seeds']))}:", "",
              "| method | best val accuracy (mean ± sd) | GPU-hours (mean) | wall-clock s (mean) |", "|---|---|---|---|"]
    for s in result["summary"]:
        lines.append(f"| {s['method']} | {s['best_mean']:.4f} ± {s['best_std']:.4f} | {s['gpu_hours_mean']:.5f} | "
                     f"{s['wall_seconds_mean']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pbt", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["pbt", "hyperband", "tune"],
                        choices=["pbt", "hyperband", "tune"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from bench.common import prefect_api, quiet_env

    quiet_env()
    args.out.mkdir(parents=True, exist_ok=True)
    table = make_table(args.out / "table.csv")
    work = Path(tempfile.mkdtemp(prefix="rungflow-bench-pbt-"))
    t0 = time.perf_counter()
    demo = schedule_demo(table, args.seeds[:3])
    print(json.dumps({k: round(v["mean"], 4) for k, v in demo.items()}), flush=True)
    rows: list[dict[str, Any]] = []
    with prefect_api():
        for seed in args.seeds:
            pbt = run_rungflow(table, seed, work, "pbt") if "pbt" in args.methods else None
            if pbt is not None:
                rows.append(pbt)
                print(json.dumps(pbt), flush=True)
            if "hyperband" in args.methods:
                cap = pbt["gpu_hours"] if pbt is not None else None  # equal GPU-hours
                rows.append(run_rungflow(table, seed, work, "hyperband", max_gpu_hours=cap))
                print(json.dumps(rows[-1]), flush=True)
            if "tune" in args.methods:
                rows.append(run_ray_tune(table, seed, work))
                print(json.dumps(rows[-1]), flush=True)
    result = {"seeds": args.seeds, "schedule_demo": demo, "schedule_demo_seeds": args.seeds[:3], "rows": rows,
              "summary": summarize(rows),
              "wall_seconds": time.perf_counter() - t0}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (args.out / "README.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
