"""History as a prior, leave-one-task-out on the LCBench surrogate: GPU-hours to E[B] − 0.5, cold vs with history.

``python -m bench.transfer``. For each dev instance, the history is one cold Hyperband + BOHB sweep (seed 100,
``--iterations`` brackets) on each *other* dev instance, as a user's earlier sweeps would be. The target's sweep then
runs cold, with that history's portfolio (``--portfolio`` configurations, :func:`rungflow.budgets.prior.build_prior`),
and with a misleading history (every score turned upside down, 100 − score). The history is another task, so only
the portfolio is used, never the model. Reported per run: GPU-hours until the full-budget incumbent's accuracy first
reaches E[B] − 0.5, as a fraction of E[G] (random-128's expected spend); "-" where the run never did.

E[B] and E[G] come from a pool of ``--pool`` random configurations (1,024 by default, for a quick check; the search
bench uses 4,096), so they differ slightly from the search bench's.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from bench.common import median

DEV = ("3945", "7593", "34539", "126025", "126026")


def _sweep(instance: str, seed: int, iterations: int, enqueue: list[dict[str, Any]] | None = None) -> Any:
    from bench.search_sim import curves, simulate
    from rungflow.budgets.search_registry import make_searcher

    c = curves(instance)
    searcher = make_searcher("bohb", c.space, seed=seed, mode="max", max_budget=c.max_budget)
    if enqueue:
        searcher.warm_start((), enqueue=enqueue)
    return simulate(instance, searcher, seed=seed, method="bohb", iterations=iterations)


def _past(run: Any, flip: bool) -> Any:
    from rungflow.budgets.prior import PastSweep
    from rungflow.budgets.searchers import Observation

    obs = tuple(Observation(e["trial_id"], run.configs[e["trial_id"]], e["budget"],
                            100.0 - e["score"] if flip else e["score"]) for e in run.events)
    return PastSweep(run.instance, obs, "max")


def _reach(run: Any, target: float, eg: float) -> float | None:
    return next((g / eg for g, clean, _ in run.curve() if clean >= target), None)


def main(argv: list[str] | None = None) -> int:
    from bench.search_sim import curves, reference
    from rungflow.budgets.prior import build_prior

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=list(DEV))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--portfolio", type=int, default=4)
    p.add_argument("--pool", type=int, default=1024)
    args = p.parse_args(argv)
    t0 = time.time()
    history = {i: _sweep(i, 100, args.iterations) for i in args.instances}
    rows, cells = [], {"cold": [], "history": [], "misleading": []}
    for target in args.instances:
        ref = reference(target, pool=args.pool)
        goal, eg = ref.expected_best - 0.5, ref.expected_gpu_hours
        others = [history[i] for i in args.instances if i != target]
        space = curves(target).space
        portfolios = {arm: build_prior(space, [_past(r, arm == "misleading") for r in others],
                                       portfolio_size=args.portfolio, model=False).portfolio
                      for arm in ("history", "misleading")}
        for seed in args.seeds:
            out = {"cold": _reach(_sweep(target, seed, args.iterations), goal, eg)}
            for arm, portfolio in portfolios.items():
                out[arm] = _reach(_sweep(target, seed, args.iterations, enqueue=portfolio), goal, eg)
            for arm, value in out.items():
                cells[arm].append(value)
            rows.append((target, seed, out))
    fmt = lambda x: "-" if x is None or x == math.inf else f"{x:.3f}"  # noqa: E731
    print(f"| instance | seed | cold | history ({len(args.instances) - 1} other tasks, portfolio {args.portfolio}) "
          "| misleading history |")
    print("|---|---:|---:|---:|---:|")
    for target, seed, out in rows:
        print(f"| {target} | {seed} | {fmt(out['cold'])} | {fmt(out['history'])} | {fmt(out['misleading'])} |")
    for arm, values in cells.items():
        reached = [v for v in values if v is not None]
        print(f"{arm}: reached {len(reached)} of {len(values)}, median {fmt(median([math.inf if v is None else v for v in values]))}·E[G] "
              f"(an unreached run counts as never)")
    print(f"({time.time() - t0:.0f} s; Hyperband 1..52 epochs, η=3, {args.iterations} brackets, BOHB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
