"""``python -m bench.search_bound``: how soon Hyperband + random search could reach the target with a perfect gate.

A bound on the robust bench's *median to target*: Hyperband (1..52 epochs, η = 3) whose gates promote by the
true 52-epoch accuracy, so every bracket's top result is the best of all the configurations it sampled. Then
the incumbent after bracket j is the best of the N_j configurations sampled so far, and it reaches
E[B] − 0.5 with probability 1 − (1 − q)^N_j, q being the share of the instance's 4,096-configuration pool
(the reference's, :func:`bench.search_sim.reference`) at or above it. Spend is in epochs, promotions resuming,
as a share of E[G] = 128 × 52 epochs (the surrogate's seconds per epoch vary by configuration; epochs keep the
bound free of which configurations were drawn).

The median over runs is the spend at which the instances' reach probabilities average ½. A searcher that is
no better than random before its model has top-budget results cannot beat this in the first iteration,
however good its gate.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from bench.robust import DEV_INSTANCES, TARGET_MARGIN
from bench.search_sim import REFERENCE_TRIALS, reference

# Held out from ourselves while the defaults were chosen (bench/pages/robust-search.md).
HELDOUT = ("167149", "168910", "189906", "167168", "189866", "146212")


def bracket_ends(iterations: int = 8) -> list[tuple[int, float]]:
    """(configurations sampled, share of E[G] spent) at the end of each Hyperband bracket."""
    from rungflow.budgets.rungs import hyperband_plan

    sampled, epochs, out = 0, 0, []
    for bracket in hyperband_plan(1, 52, 3, iterations=iterations):
        previous = 0
        for rung in bracket.rungs:
            epoch = int(round(rung.budget))
            epochs += rung.num_trials * (epoch - previous)
            previous = epoch
        sampled += bracket.rungs[0].num_trials
        out.append((sampled, epochs / (REFERENCE_TRIALS * 52)))
    return out


def share_above_target(instance: str) -> float:
    ref = reference(instance)
    return float(np.mean(np.asarray(ref.pool_accuracy) >= ref.expected_best - TARGET_MARGIN))


def median_spend(qs: list[float], ends: list[tuple[int, float]]) -> float:
    for sampled, spent in ends:
        if np.mean([1 - (1 - q) ** sampled for q in qs]) >= 0.5:
            return spent
    return math.inf


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.search_bound", description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=list(DEV_INSTANCES))
    p.add_argument("--heldout", nargs="+", default=list(HELDOUT))
    args = p.parse_args()
    ends = bracket_ends()
    print("| instances | instance | q | configurations for ½ | P(reached by 0.10·E[G]) |")
    print("|---|---|---:|---:|---:|")
    by_group: dict[str, list[float]] = {}
    within = max(s for s, spent in ends if spent <= 0.10 + 1e-9)
    for group, names in (("dev", args.instances), ("held-out", args.heldout)):
        for inst in names:
            q = share_above_target(inst)
            by_group.setdefault(group, []).append(q)
            half = math.ceil(math.log(0.5) / math.log(1 - q)) if 0 < q < 1 else (1 if q >= 1 else math.inf)
            print(f"| {group} | {inst} | {q:.4f} | {half} | {1 - (1 - q) ** within:.2f} |")
    print()
    for group, qs in by_group.items():
        print(f"{group}: median spend to target over runs, perfect gate + random: {median_spend(qs, ends):.3f}·E[G]")


if __name__ == "__main__":
    main()
