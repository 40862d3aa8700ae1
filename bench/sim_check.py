"""``python -m bench.sim_check``: ``rungflow plan --simulate`` against real sweeps (threads, or Ray with ``--runtime ray``).

Runs the same deterministic sweep (noop trials sleeping 0.4 s, random search seed 0, Hyperband 1..9,
η = 3) for real at 1, 2 and 4 slots, then simulates each: with durations and the per-stage driver cost
and the per-trial dispatch delay from the run itself, from the first (1-slot) run, from the run one size down,
with the defaults (0.12 s a stage and for set-up, no dispatch delay), and with no driver cost at all. It
prints wall-clock (the sweep's start to its last result, as result.json counts it), utilisation, idle
at barriers and the worker-seconds held (the ledger's holds against the simulator's slots, held as the runtime's
pool holds its workers) for both, and whether the trials, rungs and scores are identical. The brackets run side by
side (the default). On local Ray every slot gets an equal share of this machine's cores, so all of them start; on
a cluster (``--address``) likewise with ``--cluster-cpus``, and each run's workers are read from Ray's actor table
as well, their lifetimes against the ledger's holds. About a minute of CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import quiet_env

__all__ = ["real_figures", "simulated_figures", "main"]

CONFIG: dict[str, Any] = {
    "name": "sim-check",
    "trainable": {"kind": "noop", "options": {"sleep_seconds": 0.4}},
    "search": {"algorithm": "random", "seed": 0},
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
    "budget": {"price_per_gpu_hour": 2.0},
    "runtime": {"kind": "thread", "max_concurrent": 1},
}


def _scored(events: list[tuple[str, int, float | None]]) -> list[tuple[str, int, float]]:
    return sorted((t, r, round(s, 9)) for t, r, s in events if s is not None)


def real_figures(run_dir: Path) -> dict[str, Any]:
    """A real run's figures, computed as the simulator computes its own (capacity = slots × wall-clock; idle at
    barriers inside each stage's span, the first stage from its first trial, as budgets.simulate.stage_spans)."""
    from rungflow.budgets.ledger import Ledger
    from rungflow.budgets.simulate import stage_spans

    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    ledger = Ledger(run_dir / "ledger.jsonl", replay=True)
    records = [*ledger.records, *ledger.pending]
    wall, slots = result["elapsed_seconds"], result["utilisation"]["slots"]
    holds = [*ledger.holds.closed, *ledger.holds.open]
    end = max((r.finished_at for r in records), default=0.0)
    idle = sum(max(0.0, slots * (last - first) - sum(r.finished_at - r.started_at for r in members))
               for first, last, members in stage_spans(records, result["schedule"]).values())
    return {"wall": wall, "utilisation": sum(r.wall_seconds for r in records) / (slots * wall),
            "idle": idle / (slots * wall), "trials": len(result["trials"]),
            "held": sum(h.seconds(end) for h in holds), "workers": len(holds),
            "scores": _scored([(r.trial_id, r.rung, r.score) for r in records])}


def simulated_figures(config: Path, workers: int, costs_from: Path, *extra: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "plan", str(config), "--simulate", "--workers",
                          str(workers), "--costs-from", str(costs_from), "--json", *extra],
                         capture_output=True, text=True, check=True)
    sim = json.loads(out.stdout)
    return {"wall": sim["wall_seconds"], "utilisation": sim["utilisation"], "idle": sim["barrier_idle_fraction"],
            "trials": sim["trials"], "stage": sim["stage_seconds"], "dispatch": sim["dispatch_seconds"],
            "setup": sim["setup_seconds"], "held": sim["worker_hours_held"] * 3600,
            "scores": _scored([(e["trial_id"], e["rung"], e["score"]) for e in sim["events"]])}


def _ray_workers(address: str) -> dict[str, dict[str, Any]]:
    """Ray's own record of the trial workers on the cluster at ``address`` (its actor table: start, end, state)."""
    import ray
    from ray._private.state import state

    ray.init(address=address, logging_level="WARNING")
    try:
        return {i: a for i, a in state.actor_table(None).items() if "TrialWorker" in a.get("ActorClassName", "")}
    finally:
        ray.shutdown()


def ray_lifetimes(address: str, exclude: set[str]) -> list[float]:
    """Seconds each trial worker not in ``exclude`` lived, its start to its end as Ray reports them, once all are dead."""
    deadline = time.time() + 30
    while True:
        workers = {i: a for i, a in _ray_workers(address).items() if i not in exclude}
        if all(a["State"] == "DEAD" and a.get("EndTime") for a in workers.values()) or time.time() > deadline:
            return [(a["EndTime"] - a["StartTime"]) / 1000.0 for a in workers.values() if a.get("EndTime")]
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_check", description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--runtime", choices=["thread", "ray"], default="thread",
                        help="the real runs' runtime: threads, or Ray (local, or the cluster at --address)")
    parser.add_argument("--address", default=None, help="a running Ray cluster (ray start --head ...), with --runtime ray")
    parser.add_argument("--cluster-cpus", type=float, default=None,
                        help="with --address: the cluster's CPUs, shared among the slots so that every slot starts")
    parser.add_argument("--resimulate", action="store_true",
                        help="simulate the runs already in --out again (after a change to the simulator) without rerunning them")
    args = parser.parse_args(argv)
    if args.resimulate and args.out is None:
        parser.error("--resimulate needs --out, the directory of an earlier bench.sim_check")
    quiet_env()
    out = args.out or Path(tempfile.mkdtemp(prefix="rungflow-sim-check-"))
    out.mkdir(parents=True, exist_ok=True)
    config = out / "sweep.yaml"
    # The plan reads the runtime's kind: Ray workers are given back when idle, threads keep theirs.
    config.write_text(yaml.safe_dump({**CONFIG, "runtime": {**CONFIG["runtime"], "kind": args.runtime},
                                      "storage": {"run_dir": str(out / "run")}}), encoding="utf-8")
    runs = {}
    for n in args.slots:
        runs[n] = out / f"run-{n}"
        if args.resimulate:
            continue
        runtime = ["--set", f"runtime.kind={args.runtime}"]
        if args.address:
            runtime += ["--set", f"runtime.address={args.address}"]
            if args.cluster_cpus:
                runtime += ["--set", f"runtime.cpus_per_trial={min(1.0, args.cluster_cpus / n):g}"]
            before = set(_ray_workers(args.address))
        elif args.runtime == "ray":
            # Local Ray offers this machine's cores: a fractional CPU a worker lets every slot start at once.
            runtime += ["--set", f"runtime.cpus_per_trial={min(1.0, (os.cpu_count() or 1) / n):g}"]
        subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--set",
                        f"runtime.max_concurrent={n}", "--set", f"storage.run_dir={runs[n]}", *runtime],
                       check=True, stdout=subprocess.DEVNULL)
        if args.address:
            lifetimes = ray_lifetimes(args.address, before)
            (runs[n] / "ray_workers.json").write_text(json.dumps({"lifetimes": lifetimes}), encoding="utf-8")
    first = runs[args.slots[0]]
    print("| slots | simulated from | real wall (s) | simulated (s) | error | set-up (s) | stage (s) | dispatch (s) "
          "| real utilisation | simulated | real idle at barriers | simulated | real held (worker-s) | simulated | "
          "trials, rungs, scores |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    previous: Path | None = None
    against_ray: list[str] = []
    for n, run in runs.items():
        real = real_figures(run)
        # What Ray says the workers lived, against the ledger's holds: the held figure's own check.
        ray_file = run / "ray_workers.json"
        if ray_file.exists():
            lifetimes = json.loads(ray_file.read_text(encoding="utf-8"))["lifetimes"]
            against_ray.append(f"{n} slots: the ledger holds {real['held']:.1f} worker-s over {real['workers']} workers, "
                               f"Ray's actor table {sum(lifetimes):.1f} over {len(lifetimes)} "
                               f"({real['held'] / max(sum(lifetimes), 1e-9) - 1:+.1%})")
        # The run one size down shares this machine's contention (trials sharing two cores with the Prefect
        # server run longer than alone), which the 1-slot run cannot show.
        sources = [("its own run", run, ()), (first.name, first, ())]
        if previous is not None and previous != first:
            sources.append((previous.name, previous, ()))
        previous = run
        for label, source, extra in (*sources,
                                     ("the defaults", first, ("--stage-seconds", "0.12", "--dispatch-seconds", "0", "--setup-seconds", "0.12")),
                                     ("no driver cost", first, ("--stage-seconds", "0", "--dispatch-seconds", "0", "--setup-seconds", "0"))):
            sim = simulated_figures(config, n, source, *extra)
            same = real["scores"] == sim["scores"] and real["trials"] == sim["trials"]
            print(f"| {n} | {label} | {real['wall']:.2f} | {sim['wall']:.2f} | "
                  f"{(sim['wall'] - real['wall']) / real['wall']:+.1%} | {sim['setup']:.2f} | {sim['stage']:.3f} | "
                  f"{sim['dispatch']:.3f} | "
                  f"{real['utilisation']:.0%} | "
                  f"{sim['utilisation']:.0%} | {real['idle']:.0%} | {sim['idle']:.0%} | "
                  f"{real['held']:.1f} ({real['workers']}) | {sim['held']:.1f} ({sim['held'] / max(real['held'], 1e-9) - 1:+.1%}) | "
                  f"{'identical' if same else 'differ'} |", flush=True)
    for line in against_ray:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
