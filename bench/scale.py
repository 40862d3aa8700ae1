"""The LCBench sweep at cluster scale, simulated: ``python -m bench.scale`` prints the bench/README table.

The real driver, BOHB searcher, scheduler and controller on a simulated cluster (``rungflow plan
--simulate``), durations from the surrogate's own training times. Target: the best 52-epoch accuracy
of 128 random configurations (seed 0) − 0.5; *GPU-h to target* is the spend when a 52-epoch result
first reaches it (—: never).

``--growth`` times the simulator itself instead: a sweep of N noop trials (1 s per epoch, 1..27 epochs, η = 3,
random search, or ``--searcher``) on W simulated workers, for each N and W given, under ASHA and under Hyperband with its brackets
side by side.

``--fill`` compares Hyperband + BOHB one bracket at a time with brackets side by side at 1, 8 and 64 GPUs on LCBench
instances, with the robust bench's quality figures (:mod:`bench.fill`).
"""

from __future__ import annotations

import argparse
import time

from rungflow.config import load_config
from rungflow.flows.plan_sim import durations_for, simulate

__all__ = ["random128_best", "to_target", "growth", "main"]


def random128_best(config) -> float:
    import numpy as np

    from rungflow.tasks.trainables.base import TrainRequest

    trainable = config.trainable_class()(config.trainable.options)
    space, (_, hi) = config.search_space(), config.budget_range()
    rng = np.random.default_rng(0)
    return max(trainable.train(TrainRequest("r", space.sample(rng), hi)).score for _ in range(128))


def to_target(result: dict, target: float, top_budget: float) -> float | None:
    """GPU-hours spent when a full-budget result first reaches ``target``, in finish order."""
    spent = 0.0
    for e in sorted(result["events"], key=lambda e: e["finished_at"]):
        spent += e["gpu_hours"]
        if e["budget"] >= top_budget and e["score"] is not None and e["score"] >= target:
            return spent
    return None


def growth(trials: list[int], workers: list[int], searcher: str = "random",
           schedulers: tuple[str, ...] = ("asha", "hyperband")) -> None:
    """Seconds to simulate N-trial sweeps on W workers (one markdown table)."""
    from rungflow.config import validate

    # CPU seconds beside the wall-clock: on a shared machine the wall-clock measures the neighbours too.
    print("| scheduler | trials | workers | simulated in (s) | CPU (s) | simulated wall (h) | utilisation | results |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in schedulers:
        for n in trials:
            for w in workers:
                # Hyperband starts 49 trials an iteration at 1..27 epochs: as many iterations as reach N trials.
                scheduler = ({"kind": "asha"} if kind == "asha" else
                             {"kind": "hyperband", "iterations": max(1, round(n / 49))})
                search = {"algorithm": searcher, "seed": 0, **({"num_trials": n} if kind == "asha" else {})}
                config = validate({"name": f"growth-{n}-{w}", "trainable": {"kind": "noop"}, "search": search,
                                   "scheduler": {**scheduler, "min_budget": 1, "max_budget": 27, "eta": 3},
                                   "budget": {"max_gpu_hours": 1e9},
                                   "runtime": {"kind": "thread", "gpus_per_trial": 1}})
                t0, cpu0 = time.perf_counter(), time.process_time()
                r = simulate(config, workers=w, durations=lambda cfg, start, stop: max(0.0, stop - start),
                             against_one_gpu=False)
                took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                print(f"| {kind} | {r['trials']:,} | {w} | {took:.1f} | {cpu:.1f} | {r['wall_seconds'] / 3600:.2f} | "
                      f"{r['utilisation']:.2f} | {len(r['events']):,} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--config", default="examples/lcbench.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--gpus-per-trial", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--growth", action="store_true", help="time the simulator on N-trial ASHA sweeps instead")
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 3000, 10000], help="--growth: sweep sizes")
    parser.add_argument("--searcher", default="random", help="--growth: the search algorithm (bohb: the default sweep's)")
    parser.add_argument("--schedulers", nargs="+", choices=["asha", "hyperband"], default=["asha", "hyperband"],
                        help="--growth: which schedulers to time")
    parser.add_argument("--fill", action="store_true", help="one bracket at a time against side by side (bench.fill)")
    from bench import fill

    fill.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.fill:
        fill.main(args)
        return 0
    if args.growth:
        growth(args.trials, args.workers, args.searcher, tuple(args.schedulers))
        return 0
    base = load_config(args.config, [])
    target = random128_best(base) - 0.5
    print(f"target (random-128 best − 0.5): {target:.2f}")
    print("| GPUs | GPUs/trial | scheduler | wall (h) | utilisation | idle at barriers | GPU-h | GPU-h to target | "
          "trials | simulated in (s) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for workers in args.workers:
        for gpus in args.gpus_per_trial:
            for kind in ("hyperband", "asha"):
                config = load_config(args.config, [f"runtime.gpus_per_trial={gpus}", f"scheduler.kind={kind}"])
                durations, _ = durations_for(config)
                t0 = time.perf_counter()
                r = simulate(config, workers=workers, durations=durations, against_one_gpu=False)
                took = time.perf_counter() - t0
                hit = to_target(r, target, config.budget_range()[1])
                print(f"| {workers} | {gpus:g} | {kind} | {r['wall_seconds'] / 3600:.2f} | {r['utilisation']:.0%} | "
                      f"{r['barrier_idle_fraction']:.0%} | {r['gpu_hours']:.2f} | "
                      f"{'—' if hit is None else f'{hit:.2f}'} | {r['trials']} | {took:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
