"""Orchestration overhead per trivial trial: rungflow (thread, Ray) against plain Ray tasks and Ray Tune.

Every method runs N no-op trials with 2 concurrent slots. Per-trial overhead is

    (wall of the whole run − Σ trainable seconds / concurrency) / N,

i.e. the wall-clock a trial costs beyond the work it does. Start-up (Prefect server, ``ray.init``,
first flow run, first Tune run) is excluded by warm-up runs and reported on its own.

Ordering matters for fairness: the thread runtime is measured before Ray starts, so Ray's idle
daemons do not share the two cores with it; Ray is then started by rungflow's own ``make_runtime``
(the same ``ray.init`` the flow does, with the Prefect env passed to workers) and reused by the
plain-Ray and Tune measurements.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import fmt, fresh_dir, peak_rss_mb, prefect_api, publish, run_config

__all__ = ["METHODS", "Measurement", "run", "add_arguments"]

CONCURRENCY = 2
WARMUP_TRIALS = 10
METHODS: tuple[str, ...] = ("rungflow-thread", "rungflow-ray", "prefect-ray", "ray-remote", "ray-tune")


@dataclass
class Measurement:
    method: str
    trials: int
    wall_seconds: float
    trainable_seconds: float  # summed over trials
    concurrency: int
    overhead_ms_per_trial: float
    peak_rss_mb_after: float
    extra: dict[str, Any] = field(default_factory=dict)


def _measurement(method: str, n: int, wall: float, trainable: float, extra: Mapping[str, Any] | None = None) -> Measurement:
    overhead = (wall - trainable / CONCURRENCY) / n
    return Measurement(method, n, wall, trainable, CONCURRENCY, overhead * 1000.0, peak_rss_mb(), dict(extra or {}))


# --- rungflow -----------------------------------------------------------------------------------------
def rungflow_trials(kind: str, n: int, run_dir: Path) -> Measurement:
    """N noop trials through ``run_sweep``: fifo, one rung at budget 1, so every trial is one task run."""
    from rungflow.config import validate
    from rungflow.flows.sweep import run_sweep

    cfg = run_config(
        f"bench-overhead-{kind}-{n}", trainable={"kind": "noop", "options": {"sleep_seconds": 0.0}},
        algorithm="random", seed=0, scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
        runtime={"kind": kind, "max_concurrent": CONCURRENCY}, num_trials=n,
    )
    config = validate(cfg)
    fresh_dir(run_dir)
    called_at = time.time()  # epoch, to compare with result.json's timestamps
    t0 = time.perf_counter()
    result = run_sweep(config, run_dir)
    wall = time.perf_counter() - t0
    returned_at = time.time()
    events = result["events"]
    completed = sum(1 for e in events if e["status"] == "completed")
    if completed != n:
        raise RuntimeError(f"rungflow-{kind}: {completed} of {n} trials completed; see {run_dir}")
    trainable = sum(float(e["trainable_seconds"]) for e in events)
    # The part of each trial's in-worker wall outside the trainable: checkpoint write (two fsyncs) etc.
    in_worker = sum(float(e["wall_seconds"]) - float(e["trainable_seconds"]) for e in events) / n
    # On Ray each actor runs one trial at a time, so the gap between its consecutive trials is the
    # per-trial cost outside run_trial (the flow's Prefect task, Ray dispatch, billing the previous result).
    # Thread-runtime trials share one pid and overlap, so there the gap means nothing.
    gaps: list[float] = []
    if kind == "ray":
        by_worker: dict[str, list[Mapping[str, Any]]] = {}
        for e in events:
            by_worker.setdefault(e["worker"], []).append(e)
        for trials in by_worker.values():
            trials.sort(key=lambda e: e["started_at"])
            gaps += [b["started_at"] - a["finished_at"] for a, b in zip(trials, trials[1:])]
    first = min(e["started_at"] for e in events)
    last = max(e["finished_at"] for e in events)
    extra = {
        "in_worker_outside_trainable_ms": in_worker * 1000.0,
        "flow_setup_ms": (first - called_at) * 1000.0,  # from the call to the first trial's start
        "first_to_last_trial_s": last - first,
        "flow_teardown_ms": (returned_at - last) * 1000.0,  # from the last trial's end to run_sweep returning
        "workers": len({e["worker"] for e in events}),
        "worker_gap_ms_median": statistics.median(gaps) * 1000.0 if gaps else None,
        # Seconds the sweep held back new trials until the Prefect API had recorded finished ones (tasks/ui_sync.py).
        "ui_wait_s": (result.get("ui_sync") or {}).get("waited_seconds"),
    }
    # Not part of the measured wall: wait until the Prefect server has recorded every trial's task run
    # (the UI is fed by events the server digests after the flow returns). It says whether the UI
    # shows every trial, and keeps a backlog from slowing the next measurement.
    extra["ui_task_runs"], extra["ui_catch_up_s"] = _ui_catch_up(config.name, n)
    # Thousands of tiny checkpoint files are of no use once the run is measured.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return _measurement(f"rungflow-{kind}", n, wall, trainable, extra)


def _ui_catch_up(flow_run_name: str, n: int, task_prefix: str = "train-", limit_s: float = 90.0) -> tuple[int, float]:
    """(train task runs the Prefect API shows for the latest flow run of that name, seconds it took to show n)."""
    import httpx

    api = os.environ["PREFECT_API_URL"]
    t0 = time.perf_counter()
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [flow_run_name]}},
                                                        "sort": "START_TIME_DESC", "limit": 1}, timeout=60).json()
    if not runs:
        return 0, time.perf_counter() - t0
    query = {"flow_runs": {"id": {"any_": [runs[0]["id"]]}},
             "task_runs": {"name": {"like_": task_prefix}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    count = 0
    while time.perf_counter() - t0 < limit_s:
        count = int(httpx.post(f"{api}/task_runs/count", json=query, timeout=60).json())
        if count >= n:
            break
        time.sleep(1.0)
    return count, time.perf_counter() - t0


# --- plain Ray ----------------------------------------------------------------------------------------
def ray_remote_trials(n: int) -> Measurement:
    """N no-op ``ray.remote`` tasks at 1 CPU each (2 run at once on 2 CPUs), ``ray.get`` of all."""
    import ray

    # Defined here, not at module level, so cloudpickle ships it by value: workers cannot import ``bench``.
    def noop() -> float:
        t = time.perf_counter()
        return time.perf_counter() - t

    task = ray.remote(num_cpus=1)(noop)
    t0 = time.perf_counter()
    seconds = ray.get([task.remote() for _ in range(n)])
    wall = time.perf_counter() - t0
    return _measurement("ray-remote", n, wall, float(sum(seconds)))


# --- prefect-ray -------------------------------------------------------------------------------------
def prefect_ray_trials(n: int) -> Measurement:
    """N no-op Prefect tasks mapped on prefect-ray's ``RayTaskRunner`` at 1 CPU each: the Prefect task engine
    runs inside a Ray worker for every task (rungflow's Ray runtime before actors)."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect_ray import RayTaskRunner
    from prefect_ray.context import remote_options

    @task(persist_result=False, cache_policy=NO_CACHE)
    def noop(i: int) -> float:
        t = time.perf_counter()
        return time.perf_counter() - t

    @flow(name=f"bench-prefect-ray-{n}", flow_run_name=f"bench-prefect-ray-{n}", persist_result=False,
          task_runner=RayTaskRunner(init_kwargs={"ignore_reinit_error": True}))
    def trials() -> list[float]:
        with remote_options(num_cpus=1):
            futures = noop.map(range(n))
        return [f.result() for f in futures]

    t0 = time.perf_counter()
    seconds = trials()
    wall = time.perf_counter() - t0
    shown, catch_up = _ui_catch_up(f"bench-prefect-ray-{n}", n, task_prefix="noop")
    return _measurement("prefect-ray", n, wall, float(sum(seconds)), {"ui_task_runs": shown, "ui_catch_up_s": catch_up})


# --- Ray Tune -----------------------------------------------------------------------------------------
def ray_tune_trials(n: int, storage: Path) -> Measurement:
    """N no-op function trials in ``tune.Tuner`` with ``reuse_actors=True``, 2 at a time, quiet."""
    from ray import tune

    def noop(config: dict[str, Any]) -> dict[str, float]:
        t = time.perf_counter()
        return {"score": 1.0, "trainable_seconds": time.perf_counter() - t}

    tuner = tune.Tuner(
        noop,
        tune_config=tune.TuneConfig(num_samples=n, reuse_actors=True, max_concurrent_trials=CONCURRENCY),
        run_config=tune.RunConfig(name=f"noop-{n}", storage_path=str(storage), verbose=0),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if grid.num_errors or len(grid) != n:
        raise RuntimeError(f"ray-tune: {len(grid)} results, {grid.num_errors} errors for {n} trials")
    trainable = sum(float(r.metrics.get("trainable_seconds", 0.0)) for r in grid)
    return _measurement("ray-tune", n, wall, trainable)


# --- command ------------------------------------------------------------------------------------------
def _start_local_ray() -> None:
    """Start a private local Ray with exactly the init kwargs of rungflow's ``make_runtime``, plus address="local".

    ``make_runtime(address=None)`` calls ``ray.init(num_cpus=...)`` without an address, and Ray then
    attaches to any cluster already running on the machine (``/tmp/ray/ray_current_cluster``), where
    ``num_cpus`` is an error. Starting Ray here first makes ``make_runtime`` reuse this instance
    (it skips ``ray.init`` when Ray is initialized), so the plain-Ray and Tune runs share exactly
    the Ray instance rungflow's tasks run on, with the Prefect env passed to its workers.
    """
    import ray

    from rungflow.tasks.runtime import _ray_env, make_runtime

    ray.init(address="local", num_cpus=os.cpu_count(), runtime_env={"env_vars": _ray_env()},
             include_dashboard=False, log_to_driver=True, ignore_reinit_error=True, logging_level=logging.WARNING)
    runtime = make_runtime("ray", address=None, gpus_per_trial=0.0, cpus_per_trial=1.0, max_concurrent=CONCURRENCY)
    if runtime.slots != CONCURRENCY:
        raise RuntimeError(f"rungflow's Ray runtime has {runtime.slots} slots, expected {CONCURRENCY}")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def _median_of(measure: Callable[[], Measurement], repeats: int) -> Measurement:
    """Run ``measure`` ``repeats`` times; the run with the median overhead, with every repeat's figure attached.

    The machine is shared (2 cores), so a single run can be slowed by a neighbour; the median of a
    few repeats is the robust figure, and the spread is kept to show how noisy it was.
    """
    runs = sorted((measure() for _ in range(max(1, repeats))), key=lambda m: m.overhead_ms_per_trial)
    chosen = runs[(len(runs) - 1) // 2]
    chosen.extra["repeat_overheads_ms"] = [m.overhead_ms_per_trial for m in runs]
    chosen.peak_rss_mb_after = peak_rss_mb()
    return chosen


def _quiet_ray_loggers() -> None:
    # Ray's driver-side INFO lines ("Started a local Ray instance", Tune's "Wrote the latest version ...").
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs"
    sizes = sorted(set(args.trials))
    _quiet_ray_loggers()
    measurements: list[Measurement] = []
    startup: dict[str, float] = {}
    notes: list[str] = []
    tune_storage = Path(tempfile.mkdtemp(prefix="rungflow-bench-tune-"))

    def record(measure: Callable[[], Measurement], label: str) -> None:
        # One broken cell (e.g. Ray's raylet killed from outside) is reported, not fatal to the others.
        try:
            m = _median_of(measure, args.repeats)
        except Exception as exc:
            notes.append(f"{label} failed: {type(exc).__name__}: {exc}")
            print("  " + notes[-1], flush=True)
            return
        measurements.append(m)
        print(f"  {m.method:16s} N={m.trials:5d}: wall {m.wall_seconds:7.2f} s, {m.overhead_ms_per_trial:7.2f} ms/trial "
              f"(peak RSS {m.peak_rss_mb_after:.0f} MB)", flush=True)

    t_all = time.perf_counter()
    load_before = os.getloadavg()
    try:
        with prefect_api() as server_s:
            startup["prefect_server_s"] = server_s
            print(f"overhead: Prefect API up in {server_s:.1f} s", flush=True)
            if "rungflow-thread" in args.methods:
                _, startup["first_flow_thread_s"] = _timed(
                    lambda: rungflow_trials("thread", WARMUP_TRIALS, runs / "warmup-thread"))
                for n in sizes:
                    record(lambda n=n: rungflow_trials("thread", n, runs / f"thread-{n}"), f"rungflow-thread N={n}")
            if any(m != "rungflow-thread" for m in args.methods):
                _, startup["ray_init_s"] = _timed(_start_local_ray)
                _quiet_ray_loggers()
            if "rungflow-ray" in args.methods:
                _, startup["first_flow_ray_s"] = _timed(
                    lambda: rungflow_trials("ray", WARMUP_TRIALS, runs / "warmup-ray"))
                for n in sizes:
                    previous = [m for m in measurements if m.method == "rungflow-ray"]
                    if previous and previous[-1].wall_seconds * n / previous[-1].trials * args.repeats > args.ray_limit_seconds:
                        notes.append(
                            f"rungflow-ray at N={n} skipped: N={previous[-1].trials} took {previous[-1].wall_seconds:.0f} s, "
                            f"so N={n} would take about {previous[-1].wall_seconds * n / previous[-1].trials:.0f} s "
                            f"x {args.repeats} repeats "
                            f"(limit {args.ray_limit_seconds:.0f} s)")
                        print("  " + notes[-1], flush=True)
                        continue
                    record(lambda n=n: rungflow_trials("ray", n, runs / f"ray-{n}"), f"rungflow-ray N={n}")
            if "prefect-ray" in args.methods:
                _, startup["first_prefect_ray_s"] = _timed(lambda: prefect_ray_trials(WARMUP_TRIALS))
                for n in sizes:
                    if n * 0.2 * args.repeats > args.ray_limit_seconds:
                        notes.append(f"prefect-ray at N={n} skipped: at ~200 ms/trial it would take about "
                                     f"{n * 0.2 * args.repeats:.0f} s (limit {args.ray_limit_seconds:.0f} s)")
                        print("  " + notes[-1], flush=True)
                        continue
                    record(lambda n=n: prefect_ray_trials(n), f"prefect-ray N={n}")
            if "ray-remote" in args.methods:
                _, startup["first_ray_remote_s"] = _timed(lambda: ray_remote_trials(WARMUP_TRIALS))
                for n in sizes:
                    record(lambda n=n: ray_remote_trials(n), f"ray-remote N={n}")
            if "ray-tune" in args.methods:
                _, startup["first_tune_s"] = _timed(lambda: ray_tune_trials(WARMUP_TRIALS, tune_storage))
                for n in sizes:
                    record(lambda n=n: ray_tune_trials(n, tune_storage), f"ray-tune N={n}")
    finally:
        shutil.rmtree(tune_storage, ignore_errors=True)
        import sys

        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    wall = time.perf_counter() - t_all
    meta = {
        "trials": sizes, "methods": list(args.methods), "concurrency": CONCURRENCY, "warmup_trials": WARMUP_TRIALS,
        "repeats": args.repeats,
        "startup_seconds": startup, "wall_seconds": wall,
        # Other processes on the machine share the 2 cores; the load average says how much they did.
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()), "peak_rss_mb": peak_rss_mb(), "notes": notes,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
        "versions": _versions(),
    }
    data = {"meta": meta, "measurements": [asdict(m) for m in measurements]}
    publish(out, data, markdown(measurements, meta))
    print(f"overhead: wrote {out / 'results.json'}, {out / 'results.md'} in {wall:.0f} s", flush=True)
    return data


def markdown(measurements: Sequence[Measurement], meta: Mapping[str, Any]) -> str:
    sizes = list(meta["trials"])
    by = {(m.method, m.trials): m for m in measurements}
    methods = [m for m in METHODS if any(k[0] == m for k in by)]
    lines = [
        "# Orchestration overhead per no-op trial",
        "",
        f"N no-op trials, {meta['concurrency']} at a time, warm (start-up excluded, see below), median of "
        f"{meta['repeats']} run(s) per cell. "
        "ms/trial = (wall − Σ trainable s / concurrency) / N. Ratio = ms/trial ÷ Ray Tune's at the same N.",
        "",
        "| method | " + " | ".join(f"N={n} ms/trial | N={n} wall (s) | N={n} vs Tune" for n in sizes) + " |",
        "|---|" + "---:|---:|---:|" * len(sizes),
    ]
    for method in methods:
        cells = []
        for n in sizes:
            m = by.get((method, n))
            tune = by.get(("ray-tune", n))
            if m is None:
                cells += ["not run", "-", "-"]
                continue
            ratio = m.overhead_ms_per_trial / tune.overhead_ms_per_trial if tune and tune.overhead_ms_per_trial > 0 else None
            cells += [fmt(m.overhead_ms_per_trial, ".2f"), fmt(m.wall_seconds, ".1f"), fmt(ratio, ".2f", none="-") + ("×" if ratio else "")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if meta["repeats"] > 1:
        spread = "; ".join(f"{m.method} N={m.trials}: " + ", ".join(f"{x:.1f}" for x in m.extra["repeat_overheads_ms"])
                           for m in measurements)
        lines += ["", f"Every repeat (ms/trial, sorted): {spread}."]
    rf = [m for m in measurements if m.method.startswith("rungflow")]
    if rf:
        lines += ["", "rungflow detail: per-trial time inside the worker but outside the trainable (checkpoint write), "
                  "the flow's fixed cost before the first trial starts and after the last one ends, the span of the trials, "
                  "and on Ray the idle gap between one worker's consecutive trials (Ray dispatch + Prefect's task engine).", "",
                  "| method | N | in-worker outside trainable (ms/trial) | set-up before first trial (ms) | "
                  "after last trial (ms) | first→last trial (s) | worker processes | Ray worker gap between trials (ms, median) | "
                  "sweep waited for the API (s) | completed train task runs in the Prefect API | seconds until all were there |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in rf:
            e = m.extra
            lines.append(f"| {m.method} | {m.trials} | {e['in_worker_outside_trainable_ms']:.2f} | {e['flow_setup_ms']:.0f} | "
                         f"{e['flow_teardown_ms']:.0f} | {e['first_to_last_trial_s']:.1f} | {e['workers']} | "
                         f"{fmt(e['worker_gap_ms_median'], '.0f')} | {fmt(e.get('ui_wait_s'), '.1f')} | "
                         f"{e.get('ui_task_runs', '-')} | "
                         f"{fmt(e.get('ui_catch_up_s'), '.0f')} |")
    s = meta["startup_seconds"]
    lines += ["", "Start-up (excluded above): " + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in s.items())
              + f" (first runs use {meta['warmup_trials']} trials).", ""]
    rss = ", ".join(f"{m.method} N={m.trials}: {m.peak_rss_mb_after:.0f}" for m in measurements)
    lines += [f"Peak RSS of the bench process after each run (MB, cumulative maximum): {rss}.", ""]
    for note in meta["notes"]:
        lines += [f"Note: {note}.", ""]
    lines += [f"Total wall time {meta['wall_seconds']:.0f} s; 1-min load average {meta['loadavg_before'][0]:.2f} before, "
              f"{meta['loadavg_after'][0]:.2f} after; {meta['machine']}; " +
              ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", ""]
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("prefect", "prefect-ray", "ray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", nargs="+", type=int, default=[100, 1000], help="N values")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=Path, default=Path("bench/out/overhead"))
    p.add_argument("--repeats", type=int, default=1, help="runs per method and N; the median is reported")
    p.add_argument("--ray-limit-seconds", type=float, default=300.0,
                   help="skip a rungflow-ray size whose extrapolated wall (previous size scaled, times --repeats) exceeds this")
