"""Per-trial overhead of a Ray Tune function and an Optuna objective under rungflow, against a native function.

One tiny workload (``--work-ms`` per iteration, a sleep or numpy) written three ways, as users write them:

- native: ``train(config, budget, checkpoint)`` returning ``Report(score, checkpoint={"iteration": i})``;
- Ray Tune: ``train(config)`` resuming from ``tune.get_checkpoint()`` and calling
  ``tune.report({"score": s}, checkpoint=Checkpoint.from_directory(d))`` every iteration;
- Optuna: ``objective(trial)`` calling ``trial.report(s, step)`` and ``trial.should_prune()`` every step.

Each arm is swept with the same space, seed, trial count and schedule (ASHA, 1..9 iterations, η = 3), on the
thread runtime and then on a private local Ray, arms interleaved (A B C A B C ...) ``--repeats`` times. Reported
per arm: wall-clock per trial-rung (median and p90 of each record's ``wall_seconds`` in the ledger, and the
sweep's wall / trial-rungs), the part of a record's wall that is not the workload (wall − iterations run × the
workload's measured seconds per iteration), and the Optuna space probe the ledger bills.

On Ray, the same Ray Tune function also runs under Ray Tune's own ``tune.Tuner`` (its ASHA over 1..9 iterations,
η = 3, the same trial count and seed, 2 at a time, on the same private Ray, interleaved with the arms): the peer's
per-trial cost beside ours.

A second, flow-free measurement calls each trainable's ``train`` directly on the same ASHA-shaped sequence of
requests and times the workload from inside it, so ``call − work`` is the wrapper alone (the session router,
checkpoint packing, the objective's trial object), without Prefect or Ray in the way.

    python -m bench.overhead_callable [--trials 64] [--repeats 3] [--runtimes thread ray] [--work sleep --work-ms 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ARMS", "run", "main", "add_arguments"]

ARMS: tuple[str, ...] = ("native", "raytune", "optuna", "raytune_one_folder")
DEFAULT_ARMS: tuple[str, ...] = ("native", "raytune", "optuna")
MAX_ITERATIONS = 9
CONCURRENCY = 2

# Set by the command before any sweep; the workload reads them in the process it runs in (Ray workers get them
# through the pickled functions' globals, which cloudpickle ships by value for this module).
_WORK = {"kind": "sleep", "seconds": 0.002}
# Workload seconds in this process, and the Ray Tune function's own checkpoint folders (made, written, removed),
# for the flow-free measurement.
_WORKED = {"seconds": 0.0, "own_checkpoint": 0.0}


def _iterate(config: Mapping[str, Any], iteration: int) -> float:
    """One iteration of the shared workload; the score it reaches after ``iteration`` iterations."""
    t0 = time.perf_counter()
    if _WORK["kind"] == "numpy":
        import numpy as np

        until = t0 + _WORK["seconds"]
        a = np.random.default_rng(iteration).standard_normal((64, 64))
        while time.perf_counter() < until:
            a = np.tanh(a @ a.T / 64.0)
    elif _WORK["seconds"] > 0:
        time.sleep(_WORK["seconds"])
    _WORKED["seconds"] += time.perf_counter() - t0
    return -((config["x"] - 0.3) ** 2) - 1.0 / (iteration * (1.0 + config["lr"]))


def native_train(config: dict[str, Any], budget: int, checkpoint: Any) -> Any:
    import rungflow

    start = int(checkpoint["iteration"]) if checkpoint else 0
    score = float("nan")
    for i in range(start + 1, int(budget) + 1):
        score = _iterate(config, i)
    return rungflow.Report(score=score, checkpoint={"iteration": int(budget)})


def raytune_train(config: dict[str, Any]) -> None:
    from ray import tune

    start = 0
    loaded = tune.get_checkpoint()
    if loaded:
        with loaded.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["iteration"]
    for i in range(start + 1, MAX_ITERATIONS + 1):
        score = _iterate(config, i)
        t0, in_report = time.perf_counter(), 0.0  # timing only: the function's own folder, not tune.report
        try:
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "state.json").write_text(json.dumps({"iteration": i}))
                t1 = time.perf_counter()
                try:
                    tune.report({"score": score}, checkpoint=tune.Checkpoint.from_directory(folder))
                finally:
                    in_report = time.perf_counter() - t1
        finally:
            _WORKED["own_checkpoint"] += time.perf_counter() - t0 - in_report


def raytune_one_folder_train(config: dict[str, Any]) -> None:
    """:func:`raytune_train` writing each checkpoint into one folder it keeps for the call, not a fresh one per
    iteration: what a Ray Tune function costs when its own folder churn is taken away."""
    import shutil

    from ray import tune

    start = 0
    loaded = tune.get_checkpoint()
    if loaded:
        with loaded.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["iteration"]
    folder = tempfile.mkdtemp()
    try:
        for i in range(start + 1, MAX_ITERATIONS + 1):
            score = _iterate(config, i)
            (Path(folder) / "state.json").write_text(json.dumps({"iteration": i}))
            tune.report({"score": score}, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def optuna_objective(trial: Any) -> float:
    import optuna

    config = {"x": trial.suggest_float("x", 0.0, 1.0), "lr": trial.suggest_float("lr", 1e-3, 1.0, log=True)}
    score = float("nan")
    for step in range(MAX_ITERATIONS):
        score = _iterate(config, step + 1)
        trial.report(score, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score


def _space(arm: str) -> dict[str, Any] | None:
    if arm == "optuna":
        return None  # the objective defines it: the same two parameters, the same ranges
    if arm.startswith("raytune"):
        from ray import tune

        return {"x": tune.uniform(0.0, 1.0), "lr": tune.loguniform(1e-3, 1.0)}
    return {"x": {"type": "float", "low": 0.0, "high": 1.0}, "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}}


_FUNCTIONS: dict[str, Callable[..., Any]] = {"native": native_train, "raytune": raytune_train, "optuna": optuna_objective,
                                             "raytune_one_folder": raytune_one_folder_train}


def _sweep_arguments(arm: str, runtime: str, trials: int, seed: int, out: Path) -> dict[str, Any]:
    return dict(space=_space(arm), metric="score", mode="max", name=f"overhead-{arm}-{runtime}", out=out,
                search={"algorithm": "random", "seed": seed, "num_trials": trials},
                scheduler={"kind": "asha", "min_budget": 1, "max_budget": MAX_ITERATIONS, "eta": 3},
                runtime={"kind": runtime, "max_concurrent": CONCURRENCY})


def _forget_probe() -> None:
    """One sweep per process, as a user's script runs: each Optuna sweep learns (and pays for) its space again."""
    from rungflow.tasks.trainables.optuna_objective import OptunaObjectiveTrainable

    OptunaObjectiveTrainable.forget_probes()


def seconds_per_iteration(samples: int = 50) -> float:
    """The workload's own seconds per iteration, measured here now (median)."""
    times = []
    for i in range(samples):
        t0 = time.perf_counter()
        _iterate({"x": 0.5, "lr": 0.1}, i + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def sweep_once(arm: str, runtime: str, trials: int, seed: int, out: Path, per_iteration: float) -> dict[str, Any]:
    """One sweep of ``arm``; its figures from the ledger's records."""
    import shutil

    import rungflow

    shutil.rmtree(out, ignore_errors=True)
    if arm == "optuna":
        _forget_probe()
    t0 = time.perf_counter()
    result = rungflow.sweep(_FUNCTIONS[arm], **_sweep_arguments(arm, runtime, trials, seed, out))
    wall = time.perf_counter() - t0
    events = [e for e in result.events if e["status"] == "completed"]
    if len(events) != len(result.events):
        raise RuntimeError(f"{arm} on {runtime}: {len(result.events) - len(events)} trial-rungs did not complete; see {out}")
    walls = [float(e["wall_seconds"]) for e in events]
    # Iterations the workload ran: a resumed trial runs only the new ones, an objective runs again from step 0.
    iterations = [float(e["metrics"].get("reported_steps", e["budget_trained"])) for e in events]
    outside = [w - n * per_iteration for w, n in zip(walls, iterations)]
    # The record's wall splits into the trainable's call (wrapper + workload) and the worker around it (checkpoint store).
    in_call = [float(e["trainable_seconds"]) - n * per_iteration for e, n in zip(events, iterations)]
    around = [float(e["wall_seconds"]) - float(e["trainable_seconds"]) for e in events]
    setup = result.ledger["setup"]
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return {
        "arm": arm, "runtime": runtime, "trials": len({e["trial_id"] for e in events}), "trial_rungs": len(events),
        "iterations_run": sum(iterations), "sweep_wall_s": wall, "sweep_wall_per_trial_rung_ms": wall / len(events) * 1e3,
        "record_wall_median_ms": statistics.median(walls) * 1e3, "record_wall_p90_ms": _quantile(walls, 0.9) * 1e3,
        "outside_work_median_ms": statistics.median(outside) * 1e3, "outside_work_p90_ms": _quantile(outside, 0.9) * 1e3,
        "in_call_not_work_median_ms": statistics.median(in_call) * 1e3,
        "worker_around_call_median_ms": statistics.median(around) * 1e3,
        "probe_s": sum(s["wall_seconds"] for s in setup), "probe_runs": sum(s["runs"] for s in setup),
        "best": result.best["score"] if result.best else None,
        "cpu_hours": result.ledger["cpu_hours"],
    }


def tuner_once(trials: int, seed: int, out: Path, per_iteration: float) -> dict[str, Any]:
    """The Ray Tune function under Ray Tune's own Tuner and ASHA on the running Ray: the peer's figures."""
    import shutil

    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search import BasicVariantGenerator

    shutil.rmtree(out, ignore_errors=True)
    tuner = tune.Tuner(
        raytune_train, param_space=_space("raytune"),
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials, max_concurrent_trials=CONCURRENCY,
                                    scheduler=AsyncHyperBandScheduler(max_t=MAX_ITERATIONS, grace_period=1,
                                                                      reduction_factor=3),
                                    search_alg=BasicVariantGenerator(random_state=seed)),
        run_config=tune.RunConfig(name="tuner", storage_path=str(out.resolve()), verbose=0,
                                  stop={"training_iteration": MAX_ITERATIONS}),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if grid.num_errors:
        raise RuntimeError(f"tune.Tuner: {grid.num_errors} of {len(grid)} trials failed; see {out}")
    iterations = [int(r.metrics["training_iteration"]) for r in grid]
    # A trial-rung as rungflow counts them: each rung (1, 3, 9 iterations) a trial reached.
    trial_rungs = sum(sum(1 for rung in (1, 3, 9) if n >= rung) for n in iterations)
    per_report = [float(t) for r in grid for t in r.metrics_dataframe["time_this_iter_s"]]
    shutil.rmtree(out, ignore_errors=True)
    return {"arm": "tuner", "runtime": "ray", "trials": len(grid), "trial_rungs": trial_rungs,
            "iterations_run": float(sum(iterations)), "sweep_wall_s": wall,
            "sweep_wall_per_trial_rung_ms": wall / trial_rungs * 1e3, "sweep_wall_per_iteration_ms": wall / sum(iterations) * 1e3,
            "report_median_ms": statistics.median(per_report) * 1e3,
            "report_minus_work_median_ms": (statistics.median(per_report) - per_iteration) * 1e3,
            "best": grid.get_best_result(scope="all").metrics["score"]}


def direct_once(arm: str, trials: int, seed: int) -> dict[str, Any]:
    """The ASHA-shaped sequence of train calls (all at 1, the top third of those at 3, of those at 9), no flow."""
    import numpy as np

    from rungflow.flows.api import build_config
    from rungflow.tasks.trainables import TrainRequest

    with tempfile.TemporaryDirectory() as tmp:
        config = build_config(_FUNCTIONS[arm], **{k: v for k, v in _sweep_arguments(arm, "thread", trials, seed, Path(tmp)).items()})
    trainable = config.trainable_class()(config.trainable.options)
    rng = np.random.default_rng(seed)
    configs = {f"t{i}": {"x": float(rng.uniform(0, 1)), "lr": float(np.exp(rng.uniform(np.log(1e-3), 0.0)))}
               for i in range(trials)}
    checkpoints: dict[str, bytes | None] = dict.fromkeys(configs)
    calls: list[tuple[float, float, float]] = []  # seconds in train, in the workload, in the function's own checkpoints
    alive = list(configs)
    for budget in (1, 3, 9):
        scores = {}
        for tid in alive:
            before, own_before = _WORKED["seconds"], _WORKED["own_checkpoint"]
            t0 = time.perf_counter()
            outcome = trainable.train(TrainRequest(tid, configs[tid], budget, checkpoint=checkpoints[tid]))
            calls.append((time.perf_counter() - t0, _WORKED["seconds"] - before, _WORKED["own_checkpoint"] - own_before))
            checkpoints[tid], scores[tid] = outcome.checkpoint, outcome.score
        alive = sorted(alive, key=lambda t: -scores[t])[: max(1, len(alive) // 3)]
    wrapper = [c - w - own for c, w, own in calls]
    return {"arm": arm, "calls": len(calls), "call_median_ms": statistics.median(c for c, _, _ in calls) * 1e3,
            "work_median_ms": statistics.median(w for _, w, _ in calls) * 1e3,
            "own_checkpoint_median_ms": statistics.median(own for _, _, own in calls) * 1e3,
            "wrapper_median_ms": statistics.median(wrapper) * 1e3, "wrapper_p90_ms": _quantile(wrapper, 0.9) * 1e3,
            "wrapper_total_ms": sum(wrapper) * 1e3}


def _summary(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    values = [float(r[key]) for r in rows]
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def markdown(data: Mapping[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# Per-trial overhead: native function, Ray Tune function, Optuna objective",
        "",
        f"{meta['trials']} trials, ASHA 1..{MAX_ITERATIONS} iterations (η = 3), random search seed {meta['seed']}, "
        f"{CONCURRENCY} at a time; workload {meta['work']} {meta['work_ms']:g} ms per iteration "
        f"(measured {meta['per_iteration_ms']:.2f} ms). Arms interleaved, {meta['repeats']} repeats: median "
        "(min–max over repeats) of each repeat's figure.",
        "",
        "| runtime | arm | trial-rungs | iterations run | sweep wall / trial-rung (ms) | record wall, median (ms) | "
        "record wall, p90 (ms) | record wall − work, median (ms) | − work, p90 (ms) | of which in the call, median (ms) | "
        "of which around it, median (ms) | probe (s, runs) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for runtime in meta["runtimes"]:
        for arm in ARMS:
            rows = [r for r in data["sweeps"] if r["runtime"] == runtime and r["arm"] == arm]
            if not rows:
                continue
            probe = f"{statistics.median(r['probe_s'] for r in rows):.3f}, {rows[0]['probe_runs']}" if arm == "optuna" else "-"
            lines.append(f"| {runtime} | {arm} | {rows[0]['trial_rungs']} | {rows[0]['iterations_run']:.0f} | "
                         f"{_summary(rows, 'sweep_wall_per_trial_rung_ms')} | {_summary(rows, 'record_wall_median_ms')} | "
                         f"{_summary(rows, 'record_wall_p90_ms')} | {_summary(rows, 'outside_work_median_ms')} | "
                         f"{_summary(rows, 'outside_work_p90_ms')} | {_summary(rows, 'in_call_not_work_median_ms')} | "
                         f"{_summary(rows, 'worker_around_call_median_ms')} | {probe} |")
    tuner = [r for r in data["sweeps"] if r["arm"] == "tuner"]
    if tuner:
        ours = [r for r in data["sweeps"] if r["runtime"] == "ray" and r["arm"] != "tuner"]
        lines += ["", "The same Ray Tune function under Ray Tune's own `tune.Tuner` (its ASHA, the same trials, seed and "
                  "concurrency, on the same Ray), beside rungflow's arms on Ray:", "",
                  "| on Ray | trial-rungs | iterations run | sweep wall (s) | sweep wall / trial-rung (ms) | "
                  "sweep wall / iteration (ms) |", "|---|---:|---:|---:|---:|---:|"]
        for arm in ("tuner", *ARMS):
            rows = tuner if arm == "tuner" else [r for r in ours if r["arm"] == arm]
            if not rows:
                continue
            per_iteration = [r["sweep_wall_s"] / r["iterations_run"] * 1e3 for r in rows]
            label = "Ray Tune `Tuner` (peer)" if arm == "tuner" else f"rungflow, {arm}"
            lines.append(f"| {label} | {rows[0]['trial_rungs']} | {rows[0]['iterations_run']:.0f} | "
                         f"{_summary(rows, 'sweep_wall_s')} | {_summary(rows, 'sweep_wall_per_trial_rung_ms')} | "
                         f"{statistics.median(per_iteration):.1f} ({min(per_iteration):.1f}–{max(per_iteration):.1f}) |")
        lines += ["", f"Ray Tune's own time per report (`time_this_iter_s`), median: "
                  f"{_summary(tuner, 'report_median_ms')} ms, of which beyond the workload "
                  f"{_summary(tuner, 'report_minus_work_median_ms')} ms."]
    if data["direct"]:
        lines += ["", "Without the flow (each trainable's `train` called directly on the same ASHA-shaped requests; "
                  "wrapper = call − workload − the function's own checkpoint folders, both timed inside it):", "",
                  "| arm | calls | call, median (ms) | workload, median (ms) | function's own checkpoint folders, median (ms) | "
                  "wrapper, median (ms) | wrapper, p90 (ms) | wrapper, whole sequence (ms) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for arm in ARMS:
            rows = [r for r in data["direct"] if r["arm"] == arm]
            if rows:
                lines.append(f"| {arm} | {rows[0]['calls']} | {_summary(rows, 'call_median_ms')} | "
                             f"{_summary(rows, 'work_median_ms')} | {_summary(rows, 'own_checkpoint_median_ms')} | "
                             f"{_summary(rows, 'wrapper_median_ms')} | "
                             f"{_summary(rows, 'wrapper_p90_ms')} | {_summary(rows, 'wrapper_total_ms')} |")
    lines += ["", f"Total {meta['wall_s']:.0f} s; 1-min load average {meta['loadavg_before'][0]:.2f} before, "
              f"{meta['loadavg_after'][0]:.2f} after; {meta['machine']}.", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import prefect_api, publish

    _WORK.update(kind=args.work, seconds=args.work_ms / 1000.0)
    per_iteration = seconds_per_iteration()
    out: Path = args.out
    t_all, load_before = time.perf_counter(), os.getloadavg()
    sweeps: list[dict[str, Any]] = []
    direct: list[dict[str, Any]] = []
    for arm in args.arms if args.direct else ():
        direct_once(arm, 9, args.seed)  # not reported: first imports (torch for the native checkpoint, Ray, Optuna)
    for _ in range(args.repeats if args.direct else 0):
        for arm in args.arms:
            direct.append(direct_once(arm, args.trials, args.seed))
            print(f"  direct {arm}: wrapper {direct[-1]['wrapper_median_ms']:.2f} ms median per call", flush=True)
    try:
        with prefect_api():
            for runtime in args.runtimes:
                if runtime == "ray":
                    from bench.overhead import _quiet_ray_loggers, _start_local_ray

                    _start_local_ray()
                    _quiet_ray_loggers()
                # A warm-up sweep per arm, not reported: first imports, the first flow run, Ray's first workers.
                peer = runtime == "ray" and args.tuner
                for arm in args.arms:
                    sweep_once(arm, runtime, min(args.trials, 9), args.seed, out / "runs" / f"warmup-{arm}", per_iteration)
                if peer:
                    tuner_once(min(args.trials, 9), args.seed, out / "runs" / "warmup-tuner", per_iteration)
                for repeat in range(args.repeats):
                    for arm in (*args.arms, "tuner") if peer else args.arms:
                        if arm == "tuner":
                            row = tuner_once(args.trials, args.seed, out / "runs" / f"tuner-{repeat}", per_iteration)
                        else:
                            row = sweep_once(arm, runtime, args.trials, args.seed,
                                             out / "runs" / f"{runtime}-{arm}-{repeat}", per_iteration)
                        row["repeat"] = repeat
                        sweeps.append(row)
                        print(f"  {runtime} {arm} #{repeat}: {row['trial_rungs']} trial-rungs, "
                              f"{row['iterations_run']:.0f} iterations, "
                              f"{row['sweep_wall_per_trial_rung_ms']:.1f} ms/trial-rung, record median "
                              f"{row.get('record_wall_median_ms', float('nan')):.1f} ms", flush=True)
    finally:
        import sys

        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    meta = {"trials": args.trials, "seed": args.seed, "repeats": args.repeats, "runtimes": list(args.runtimes),
            "work": args.work, "work_ms": args.work_ms, "per_iteration_ms": per_iteration * 1e3,
            "wall_s": time.perf_counter() - t_all, "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}"}
    data = {"meta": meta, "sweeps": sweeps, "direct": direct}
    publish(out, data, markdown(data))
    print(f"overhead_callable: wrote {out / 'results.json'}, {out / 'results.md'}", flush=True)
    return data


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    p.add_argument("--runtimes", nargs="+", default=["thread", "ray"], choices=["thread", "ray"])
    p.add_argument("--work", choices=["sleep", "numpy"], default="sleep")
    p.add_argument("--work-ms", type=float, default=2.0, help="workload milliseconds per iteration")
    p.add_argument("--no-tuner", dest="tuner", action="store_false",
                   help="skip Ray Tune's own Tuner on the same workload (run on Ray only)")
    p.add_argument("--no-direct", dest="direct", action="store_false", help="skip the flow-free measurement")
    p.add_argument("--out", type=Path, default=Path("bench/out/overhead_callable"))


def main(argv: Sequence[str] | None = None) -> int:
    from bench.common import quiet_env

    parser = argparse.ArgumentParser(prog="python -m bench.overhead_callable", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    quiet_env()
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
