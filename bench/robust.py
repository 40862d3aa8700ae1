"""``python -m bench robust``: does the search ever miss? Hyperband + each searcher against the honest reference.

Per instance and seed, every method runs Hyperband (1..52 epochs, η = 3) in-process on the LCBench
surrogate (:mod:`bench.search_sim`, the flow's decisions without Prefect), capped at
``--cap`` × E[G]. The target is the *expected* best of 128 random full-budget configurations
(E[B], over draws from a 4,096-configuration pool) − 0.5; the one-draw B of the compare bench
(``RandomSearcher(seed)``'s 128) is kept as a column. Per run: whether the full-budget incumbent
reached E[B] − 0.5 and at what share of E[G], its final accuracy − E[B], the rank correlation
between consecutive rungs on the promoted trials, and which bracket found the final incumbent.
Optuna TPE + HyperbandPruner (bench/peers.py) runs under the same cap.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import LCBENCH_MAX_EPOCH, fmt, library_versions, median, write_json

__all__ = ["SEARCH_METHODS", "run", "add_arguments"]

DEV_INSTANCES = ("3945", "7593", "34539", "126025", "126026")
TARGET_MARGIN = 0.5
CAP = 0.35  # of E[G]


def _searcher(name: str, **options: Any) -> Callable[[Any, int, float], Any]:
    def make(space: Any, seed: int, max_budget: float = LCBENCH_MAX_EPOCH) -> Any:
        from rungflow.budgets.search_registry import make_searcher

        return make_searcher(name, space, seed=seed, max_budget=max_budget, **options)

    return make


def _per_bracket(name: str) -> Callable[[Any, int, float], Any]:
    def make(space: Any, seed: int, max_budget: float = LCBENCH_MAX_EPOCH) -> Any:
        from bench.search_sim import BracketStudies

        return BracketStudies(lambda s: _searcher(name)(space, s, max_budget), seed)

    return make


SEARCH_METHODS: dict[str, Callable[..., Any]] = {
    "hyperband+tpe": _searcher("tpe"),
    "hyperband+tpe per-bracket": _per_bracket("tpe"),
    "hyperband+bohb per-bracket": _per_bracket("bohb"),
    "hyperband+bohb": _searcher("bohb"),
    "hyperband+bohb rho0": _searcher("bohb", random_fraction=0.0),
    "hyperband+random": _searcher("random"),
}
PEERS = ("optuna-tpe+hyperband", "tune-random+asha")
# Hyperband whose later brackets skip rungs seen to mislead (search_sim.rung_trust_policy): tried, not the default.
TRUSTED = tuple(f"trusted-{m}" for m in ("hyperband+bohb", "hyperband+tpe"))
DEFAULT_METHODS = ("hyperband+tpe", "hyperband+bohb", "hyperband+random", "optuna-tpe+hyperband")


@dataclass(frozen=True)
class Family:
    """Where a method trains: the source it trains through, the honest reference, the peers' runner."""

    name: str
    source: Callable[[str], Any]
    reference: Callable[[str], Any]
    one_draw: Callable[[str, int], tuple[float, float]] | None
    run_peer: Callable[[str, str, int, float], Any]
    evaluate_full: Callable[[str, Any], float | None]
    max_budget: float


def _lcbench() -> Family:
    from bench import peers
    from bench import search_sim as S

    return Family("lcbench", S.curves, S.reference, S.one_draw, peers.run_peer, peers.evaluate_at_full_budget,
                  LCBENCH_MAX_EPOCH)


def _hgb_fraction() -> Family:
    """Gradient boosting whose budget is the share of training rows (:mod:`bench.fraction_family`)."""
    import functools

    from bench import fraction_family as F
    from bench import peers

    steps = (1, 3, 9, 27)  # report where Hyperband's and ASHA's rungs are: every report is a refit

    def run_peer(method: str, name: str, seed: int, cap: float) -> Any:
        if method == "optuna-tpe+hyperband":
            return peers.run_optuna(name, seed, cap, pruner="hyperband", source=F.table(name), steps=steps)
        if method == "tune-random+asha":
            return peers.run_ray_tune(name, seed, cap, search="random", source=functools.partial(F.peer_source, name),
                                      steps=steps)
        raise ValueError(f"{method}: not run on the hgb-fraction family")

    return Family("hgb-fraction", F.table, F.reference, None, run_peer,
                  lambda name, config: F.table(name).evaluate_full(config), F.MAX_UNITS)


FAMILIES: dict[str, Callable[[], Family]] = {"lcbench": _lcbench, "hgb-fraction": _hgb_fraction}


def run_one(instance: str, seed: int, method: str, cap: float, noise_std: float = 0.0,
            family: Family | None = None) -> dict[str, Any]:
    from bench import search_sim as S

    fam = family or _lcbench()
    ref = fam.reference(instance)
    b1, g1 = fam.one_draw(instance, seed) if fam.one_draw is not None else (math.nan, math.nan)
    cap_h = cap * ref.expected_gpu_hours
    t0 = time.perf_counter()
    rho: dict[str, float | None] = {}
    inc_bracket_s = None
    if method.replace("trusted-", "") in SEARCH_METHODS:
        c = fam.source(instance)
        searcher_name = method.replace("trusted-", "")
        policy = S.rung_trust_policy(fam.max_budget) if method.startswith("trusted-") else None
        r = S.simulate(instance, SEARCH_METHODS[searcher_name](c.space, seed, fam.max_budget), seed=seed, method=method,
                       iterations=40, cap_gpu_hours=cap_h, noise_std=noise_std, source=c, brackets=policy)
        curve = [(g, a) for g, a, _ in r.curve()]
        final = curve[-1][1] if curve else None
        spent = r.gpu_hours
        rho = {f"{int(lo)}->{int(hi)}": v for (lo, hi), v in S.promoted_rank_correlation(r).items()}
        if r.curve():
            inc_bracket_s = r.bracket_s[r.trial_bracket[r.curve()[-1][2]]]
        trials = len(r.configs)
    else:
        p = fam.run_peer(method, instance, seed, cap_h)
        curve, best = [], -math.inf
        for e in p.events:
            if e["budget"] == fam.max_budget and e["score"] > best:
                best = e["score"]
                curve.append((e["cumulative_gpu_hours"], best))
        final = fam.evaluate_full(instance, p.best_config)
        spent, trials = p.gpu_hours, p.trials
    target = ref.expected_best - TARGET_MARGIN
    reach = next((g for g, a in curve if a >= target), None)
    reach1 = None if math.isnan(b1) else next((g for g, a in curve if a >= b1 - TARGET_MARGIN), None)
    return {
        "instance": instance, "seed": seed, "method": method, "noise_std": noise_std,
        "expected_best": ref.expected_best, "expected_gpu_hours": ref.expected_gpu_hours, "draw_std": ref.draw_std,
        "one_draw_best": b1, "one_draw_gpu_hours": g1,
        "reach_fraction": None if reach is None else reach / ref.expected_gpu_hours,
        "reach_fraction_one_draw": None if reach1 is None else reach1 / g1,
        "final": final, "final_gap": None if final is None else final - ref.expected_best,
        "spent_fraction": spent / ref.expected_gpu_hours, "trials": trials, "rank_correlation": rho,
        "incumbent_bracket_s": inc_bracket_s, "wall_seconds": time.perf_counter() - t0,
    }


def summarize(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    out = []
    for group, instances in groups.items():
        for m in methods:
            rs = [r for r in rows if r["method"] == m and r["instance"] in instances]
            if not rs:
                continue
            out.append({
                "group": group, "method": m, "runs": len(rs),
                "reached": sum(r["reach_fraction"] is not None for r in rs),
                "reached_one_draw": (sum(r["reach_fraction_one_draw"] is not None for r in rs)
                                     if all(not math.isnan(r["one_draw_best"]) for r in rs) else None),
                "median_fraction": median([math.inf if r["reach_fraction"] is None else r["reach_fraction"] for r in rs]),
                "median_gap": median([r["final_gap"] for r in rs]),
                "worst_gap": min((r["final_gap"] for r in rs if r["final_gap"] is not None), default=None),
            })
    return out


def markdown(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    lines = [
        (f"Target E[B] − {TARGET_MARGIN}, E[B] the expected best of 128 random 52-epoch configurations (4,096-configuration pool)"
         if meta.get("family", "lcbench") == "lcbench" else
         f"Family {meta['family']}. Target E[B] − {TARGET_MARGIN}, E[B] the expected best of 128 random full-budget "
         "configurations (256-configuration pool)")
        + f"; every method capped at {meta['cap']:g}·E[G]; noise std {meta['noise_std']:g}. *reached (1 draw)*: "
        "against the compare bench's one random-128 draw B − 0.5 instead. *to target*: GPU-hours ÷ E[G], median, "
        "∞ for a miss. *final − E[B]*: median and worst over runs.",
        "",
        "| instances | method | reached E[B]−0.5 | reached (1 draw) | to target (·E[G]) | final − E[B] | worst |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(f"| {s['group']} | {s['method']} | {s['reached']}/{s['runs']} | "
                     f"{'-' if s['reached_one_draw'] is None else str(s['reached_one_draw']) + '/' + str(s['runs'])} | "
                     f"{fmt(s['median_fraction'], '.3f')} | {fmt(s['median_gap'], '+.2f')} | {fmt(s['worst_gap'], '+.2f')} |")
    misses = [r for r in rows if r["reach_fraction"] is None]
    if misses:
        lines += ["", "Misses: " + "; ".join(f"{r['instance']}/s{r['seed']} {r['method']} ({fmt(r['final_gap'], '+.2f')})"
                                          for r in misses) + "."]
    lines += ["", f"Wall time {meta['wall_seconds']:.0f} s; {meta['machine']}; "
              + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "."]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=list(FAMILIES), default="lcbench",
                   help="lcbench (epochs, resumed) or hgb-fraction (gradient boosting, budget = share of training rows)")
    p.add_argument("--instances", nargs="+", default=None, help="LCBench instances or hgb-K tables (default: the dev set)")
    p.add_argument("--heldout", nargs="*", default=[], help="instances reported as their own group")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=[*SEARCH_METHODS, *TRUSTED, *PEERS])
    p.add_argument("--cap", type=float, default=CAP, help="GPU-hour cap as a share of E[G]")
    p.add_argument("--noise-std", type=float, default=0.0)
    p.add_argument("--out", type=Path, default=Path("bench/out/robust"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = []
    family = FAMILIES[args.family]()
    if args.instances is None:
        from bench.fraction_family import DEV_TABLES

        args.instances = list(DEV_TABLES if args.family == "hgb-fraction" else DEV_INSTANCES)
    instances = [*args.instances, *args.heldout]
    for inst in instances:
        for seed in args.seeds:
            for m in args.methods:
                r = run_one(str(inst), seed, m, args.cap, args.noise_std, family)
                rows.append(r)
                rho = " ".join(f"{k}:{fmt(v, '.2f')}" for k, v in r["rank_correlation"].items())
                print(f"  {inst} s{seed} {m}: reach {fmt(r['reach_fraction'], '.3f')} final-E[B] {fmt(r['final_gap'], '+.2f')} "
                      f"spent {r['spent_fraction']:.2f} inc-s {r['incumbent_bracket_s']} rho {rho} ({r['wall_seconds']:.0f} s)",
                      flush=True)
    groups = {"dev": [str(i) for i in args.instances]}
    if args.heldout:
        groups["held-out"] = [str(i) for i in args.heldout]
    summary = summarize(rows, args.methods, groups)
    meta = {"family": args.family, "instances": instances, "heldout": list(args.heldout), "seeds": list(args.seeds), "cap": args.cap,
            "noise_std": args.noise_std, "wall_seconds": time.perf_counter() - t0,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "versions": library_versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"meta": meta, "summary": summary, "rows": rows})
    text = markdown(summary, rows, meta)
    (args.out / "results.md").write_text(text)
    print(text)
    return {"summary": summary, "rows": rows}


if __name__ == "__main__":
    import sys

    from bench.common import quiet_env

    quiet_env(isolated_prefect_home=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args(sys.argv[1:]))
