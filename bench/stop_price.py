"""``python -m bench stopprice``: every stop rule judged at the user's price, run by run.

Per instance and seed, one Hyperband + BOHB sweep (1..52 epochs, η = 3, ``--iterations``) runs to
the end in-process (:mod:`bench.search_sim`, the flow's decisions without Prefect); its results,
as ledger records, are what every rule is shown (:func:`bench.stopping.replay_controller`,
``replay_plateau``, ``terminator_bounds``: the same replays as the stop bench). At the price p
(``--price``, accuracy points per GPU-hour, our ``min_gain_per_gpu_hour``):

* net = p × GPU-hours saved − true accuracy lost (vs running the sweep to its end);
* hindsight net = the largest net of any stop point of the same sweep (≥ 0: never stopping is one);
* captured = net ÷ hindsight net (where the hindsight net is > 0); shortfall = hindsight net − net;
* the old target (≥ 60 % saved at ≤ 0.2 lost) as a secondary column where it was reachable.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import LCBENCH_MAX_EPOCH, fmt, library_versions, median, write_json

__all__ = ["records_of", "Judge", "judge", "run", "add_arguments"]

HISTORY_RULES = ("history h10", "history h3")
RULES = ("rungflow window", "rungflow window noisy", "cost-aware ei", "cost-aware ei normal", *HISTORY_RULES,
         "ray plateau", "optuna terminator")
DEFAULT_RULES = ("rungflow window", "rungflow window noisy", "cost-aware ei", "ray plateau", "optuna terminator")
PEER_RULES = ("ray plateau", "optuna terminator")
BRACKETS_PER_ITERATION = 4  # Hyperband 1..52 epochs, η = 3: s = 3, 2, 1, 0


def _normal_ei(values: Sequence[float], best: float) -> float:
    """E[max(Y − best, 0)] for Y ~ N(mean, std²) of ``values``."""
    mu, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    if sd <= 0:
        return max(mu - best, 0.0)
    z = (mu - best) / sd
    return sd * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + (mu - best) * 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _record_ei(all_top: Sequence[float], window_gain: float, window_results: int, spacings: int) -> float | None:
    """Expected improvement of one more top-fidelity result, from the sweep's own record.

    The rises of the incumbent over the last iteration's ``window_results`` top-fidelity results
    (``window_gain``, points) plus one more rise of the size of the sweep's record spacing (the mean
    gap between its top ``spacings`` + 1 results), spread over n + 1 results: the window rule's gain
    per result, Laplace-smoothed, so one flat iteration does not read as "nothing left" while the
    top results still sit far apart, and a stationary search (no rises, top results bunched) reads
    close to zero. None before ``spacings`` + 1 results.
    """
    ys = sorted(all_top, reverse=True)
    if len(ys) < spacings + 1 or window_results < 1:
        return None
    gap = float(np.mean([ys[i] - ys[i + 1] for i in range(spacings)]))
    return (window_gain + gap) / (window_results + 1)


def cost_aware_stop(records: Sequence[Any], price: float, *, predictive: str = "record", patience: int = 2,
                    spacings: int = 3, per: int = BRACKETS_PER_ITERATION) -> tuple[int | None, str]:
    """Xie et al. (2025)'s cost-aware stop, replayed before every bracket: stop once the expected
    improvement of the next top-fidelity result is below price × what one costs.

    Candidate = the next top-fidelity result the sweep will produce as it searches now; its cost =
    the last iteration's GPU-hours ÷ its top-fidelity results (Hyperband's lower rungs included);
    its EI from the last iteration's results (``record``: :func:`_record_ei`; ``normal``: a
    normal fitted to them, E[max(Y − best, 0)]). Judged once per completed bracket from the first
    completed iteration on, ``patience`` verdicts in a row, on reported scores only.
    """
    starts = [i for i, r in enumerate(records) if i == 0 or r.bracket != records[i - 1].bracket]
    below = 0
    for start in starts:
        bracket = records[start].bracket
        if bracket < per:
            continue
        done = records[:start]
        window = [r for r in done if r.bracket > bracket - 1 - per]
        window_top = [float(r.score) for r in window if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9]
        all_top = [float(r.score) for r in done if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9]
        if len(window_top) < 2:
            continue
        best = max(all_top)
        if predictive == "normal":
            ei: float | None = _normal_ei(window_top, best)
        else:
            first = len(done) - len(window)
            before = [float(r.score) for r in done[:first] if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9]
            gain = best - max(before) if before else best - window_top[0]
            ei = _record_ei(all_top, gain, len(window_top), spacings)
        if ei is None:
            continue
        cost = sum(r.gpu_seconds for r in window) / 3600.0 / len(window_top)
        if ei < price * cost:
            below += 1
            if below >= patience:
                return start, f"EI {ei:.3g} < {price:g} × {cost:.3g} GPU-h for {below} brackets"
        else:
            below = 0
    return None, ""


def history_stop(records: Sequence[Any], rule: Any, price: float, *, patience: int = 2,
                 per: int = BRACKETS_PER_ITERATION) -> tuple[int | None, str]:
    """Where the controller's history rule (:class:`rungflow.budgets.history_stop.HistoryStopRule`) stops this
    sweep, replayed as the controller judges it: before each bracket, on the completed brackets, the next slice
    taken as the last iteration's (its top-fidelity results and GPU-hours), ``patience`` verdicts in a row."""
    starts = [i for i, r in enumerate(records) if i == 0 or r.bracket != records[i - 1].bracket]
    below = 0
    for start in starts:
        bracket = records[start].bracket
        done = records[:start]
        window = [r for r in done if r.bracket > bracket - 1 - per]
        scores = [float(r.score) for r in done if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9]
        slice_results = sum(1 for r in window if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9)
        estimate = rule.estimate(scores, slice_results, sum(r.gpu_seconds for r in window) / 3600.0)
        if estimate is None:
            continue
        if estimate.gain_per_gpu_hour < price:
            below += 1
            if below >= patience:
                return start, estimate.detail(rule.kappa)
        else:
            below = 0
    return None, ""


def history_rule(target: str, h: int, out: Path = Path("bench/out/transfer")) -> Any:
    """The stop rule learned from H earlier default sweeps on other tasks, as ``python -m bench transfer`` makes
    them (leave-one-task-out: the target's own task is never among them), read through ``history:``."""
    from bench import transfer
    from rungflow.budgets.history_stop import learn, top_fidelity_scores
    from rungflow.tasks.history import load_history

    runs = [transfer.history_run(t, out / "history") for t in transfer.history_tasks(target, h)]
    history = load_history(transfer._config(target, 0, history={"runs": [str(r) for r in runs]}))
    assert history is not None
    return learn(top_fidelity_scores([(o.budget, o.score) for o in s.observations], "max") for s in history.sweeps)


def records_of(run: Any) -> list[Any]:
    """The sweep's results as the ledger's SpendRecords (reported score, noise-free accuracy in metrics)."""
    from rungflow.budgets.ledger import SpendRecord, TrialStatus

    return [SpendRecord(trial_id=e["trial_id"], bracket=e["bracket"], rung=e["rung"], budget=e["budget"],
                        score=e["score"], status=TrialStatus.COMPLETED, gpu_seconds=e["gpu_seconds"], gpus=1.0, cost=0.0,
                        started_at=float(i), finished_at=float(i), budget_trained=float(e["budget_trained"]),
                        metrics={"val_accuracy": e["score"], "val_accuracy_clean": e["clean"]})
            for i, e in enumerate(run.events)]


class Judge:
    """Scores any stop of one sweep at one price. The incumbent and the spend after each record are running
    figures, worked out once, so scoring the many stops the ceiling tries costs O(1) each."""

    def __init__(self, records: Sequence[Any], price: float) -> None:
        from bench.stopping import _clean

        self.price = price
        self.spent_at, self.best_at = [0.0], [None]  # after k records: GPU-hours, the incumbent's true accuracy
        incumbent = None
        for r in records:
            self.spent_at.append(self.spent_at[-1] + r.gpu_seconds / 3600.0)
            # The best *reported* result at the full budget (what the user would pick); the first of equals.
            if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9 and (incumbent is None or r.score > incumbent.score):
                incumbent = r
            self.best_at.append(None if incumbent is None else _clean(incumbent))
        self.total, self.final = sum(r.gpu_seconds for r in records) / 3600.0, self.best_at[-1]
        # Stop points: after each record (before any, nothing is deployable: not a candidate).
        self.hindsight = max([0.0, *(self._net(k) for k in range(1, len(records) + 1) if self.best_at[k] is not None)])

    def _net(self, upto: int) -> float:
        return self.price * (self.total - self.spent_at[upto]) - (self.final - self.best_at[upto])

    def __call__(self, stop_at: int | None) -> dict[str, float | None]:
        """Net, hindsight net, captured and shortfall of stopping after ``stop_at`` records (None: never)."""
        upto = len(self.spent_at) - 1 if stop_at is None else stop_at
        saved = 1 - self.spent_at[upto] / self.total
        if self.best_at[upto] is None:
            return {"net": None, "hindsight": self.hindsight, "captured": None, "shortfall": None, "saved": saved,
                    "lost": None}
        net = self._net(upto)
        return {"net": net, "hindsight": self.hindsight,
                "captured": net / self.hindsight if self.hindsight > 1e-9 else None,
                "shortfall": self.hindsight - net, "saved": saved, "lost": self.final - self.best_at[upto]}


def judge(records: Sequence[Any], stop_at: int | None, price: float) -> dict[str, float | None]:
    """Net, hindsight net, captured and shortfall of stopping after ``stop_at`` records (None: never)."""
    return Judge(records, price)(stop_at)


def run_cell(instance: str, seed: int, *, iterations: int, price: float, noise_std: float,
             rules: Sequence[str], ceiling: bool = False) -> dict[str, Any]:
    from bench import search_sim as S
    from bench.stopping import TERMINATOR_ERROR, oracle, replay_controller, replay_plateau, terminator_bounds, terminator_stop
    from rungflow.budgets.schedulers import make_scheduler
    from rungflow.budgets.search_registry import make_searcher

    c = S.curves(instance)
    sweep = S.simulate(instance, make_searcher("bohb", c.space, seed=seed, max_budget=LCBENCH_MAX_EPOCH), seed=seed,
                       method="hyperband+bohb", iterations=iterations, noise_std=noise_std)
    records = records_of(sweep)
    scheduler = make_scheduler("hyperband", min_budget=1, max_budget=LCBENCH_MAX_EPOCH, eta=3, integer=True,
                               iterations=iterations, num_trials=None, mode="max")
    score = Judge(records, price)
    out: dict[str, Any] = {"instance": instance, "seed": seed, "noise_std": noise_std, "price": price,
                           "gpu_hours": sweep.gpu_hours, "oracle_saved": oracle(records)[0], "rules": {}}
    for rule in rules:
        if rule == "ray plateau":
            stop_at, _ = replay_plateau(records)
        elif rule == "optuna terminator":
            stop_at, _ = terminator_stop(terminator_bounds(records, sweep.configs, c.space), TERMINATOR_ERROR)
        elif rule in HISTORY_RULES:
            learned = history_rule(instance, int(rule.removeprefix("history h")))
            stop_at, _ = history_stop(records, learned, price) if learned is not None else (None, "")
        elif rule.startswith("cost-aware ei"):
            stop_at, _ = cost_aware_stop(records, price, predictive="normal" if rule.endswith("normal") else "record")
        else:
            stop_at, _ = replay_controller(records, scheduler, rule=rule, seed=seed, min_gain=price)
        out["rules"][rule] = {"stopped": stop_at is not None, **score(stop_at)}
    if ceiling:
        from bench.stop_ceiling import cell_ceiling

        out["ceiling"] = cell_ceiling(records, scheduler, seed, score)
    return out


def summarize(cells: Sequence[Mapping[str, Any]], rules: Sequence[str], ours: str = "rungflow window") -> list[dict[str, Any]]:
    rows = []
    for rule in rules:
        js = [c["rules"][rule] for c in cells]
        nets = [-math.inf if j["net"] is None else _dust(j["net"]) for j in js]
        small = [j for j in js if j["hindsight"] < 2.0]
        reachable = [c for c in cells if c["oracle_saved"] >= 0.6]
        ahead = None
        if rule != ours:
            ahead = sum(1 for c in cells if _net(c["rules"][ours]) > _net(c["rules"][rule]) + 1e-9)
        peers = [p for p in PEER_RULES if p in cells[0]["rules"] and p != rule] if cells else []
        ahead_of_peers = None
        if peers and rule not in PEER_RULES:
            ahead_of_peers = sum(1 for c in cells if _net(c["rules"][rule]) > max(_net(c["rules"][p]) for p in peers) + 1e-9)
        rows.append({
            "rule": rule, "runs": len(js), "stopped": sum(j["stopped"] for j in js), "ahead_of_peers": ahead_of_peers,
            # A rule that never stops nets exactly 0 (float dust rounded away): a never-stopping
            # rule's median and worst net read 0.00 whatever it would have done; hence the median
            # net over the runs it did stop, beside.
            "median_net": median(nets), "min_net": min(nets),
            "median_net_stopped": median([_dust(n) for n, j in zip(nets, js) if j["stopped"]]) if any(j["stopped"] for j in js) else None,
            "median_hindsight": median([j["hindsight"] for j in js]),
            "median_captured": median([j["captured"] for j in js if j["captured"] is not None]),
            "median_shortfall": median([math.inf if j["shortfall"] is None else j["shortfall"] for j in js]),
            "small_runs": len(small),
            "max_shortfall_small": max((math.inf if j["shortfall"] is None else j["shortfall"] for j in small), default=None),
            "below_minus_025": sum(1 for x in nets if x < -0.25),
            "old_target": sum(1 for c in reachable if c["rules"][rule]["saved"] >= 0.6 and (c["rules"][rule]["lost"] or math.inf) <= 0.2 + 1e-9),
            "reachable": len(reachable), "ours_ahead": ahead,
        })
    return rows


def _dust(x: float) -> float:
    return 0.0 if abs(x) < 1e-9 else x


def _net(j: Mapping[str, Any]) -> float:
    return -math.inf if j["net"] is None else j["net"]


def markdown(rows: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    lines = [
        f"Price {meta['price']:g} points per GPU-hour; Hyperband + BOHB, {meta['iterations']} iterations, noise std "
        f"{meta['noise_std']:g}; instances {', '.join(meta['instances'])}, seeds {', '.join(map(str, meta['seeds']))}. "
        "net = price × GPU-h saved − true points lost; hindsight = the best net of any stop of the same sweep; captured "
        "= net ÷ hindsight (runs with hindsight > 0); shortfall = hindsight − net; *small*: runs whose hindsight net is "
        "under 2 points; *ours ahead*: runs where rungflow window's net beats the rule's; *ahead of both peers*: runs "
        "where the rule's net beats both Ray Tune's plateau stopper's and Optuna's Terminator's; old target: ≥ 60 % saved "
        "at ≤ 0.2 lost, on the runs where it was reachable.",
        "",
        "| rule | stopped | median net | median net (stopped) | worst net | nets < −0.25 | median hindsight | median captured | "
        "median shortfall | max shortfall (small) | ours ahead | ahead of both peers | old target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {r['stopped']}/{r['runs']} | {fmt(r['median_net'])} | {fmt(r['median_net_stopped'])} | "
            f"{fmt(r['min_net'])} | "
            f"{r['below_minus_025']}/{r['runs']} | {fmt(r['median_hindsight'])} | {fmt(r['median_captured'], '.2f')} | "
            f"{fmt(r['median_shortfall'])} | {fmt(r['max_shortfall_small'])} ({r['small_runs']}) | "
            f"{'-' if r['ours_ahead'] is None else str(r['ours_ahead']) + '/' + str(r['runs'])} | "
            f"{'-' if r.get('ahead_of_peers') is None else str(r['ahead_of_peers']) + '/' + str(r['runs'])} | "
            f"{r['old_target']}/{r['reachable']} |")
    lines += ["", "Per run (net / hindsight / shortfall):", "",
              "| run | GPU-h | " + " | ".join(meta["rules"]) + " |", "|---|---:|" + "---:|" * len(meta["rules"])]
    for c in cells:
        lines.append(f"| {c['instance']}/s{c['seed']} | {c['gpu_hours']:.2f} | " + " | ".join(
            f"{fmt(c['rules'][r]['net'])} / {fmt(c['rules'][r]['hindsight'])} / {fmt(c['rules'][r]['shortfall'])}"
            for r in meta["rules"]) + " |")
    lines += ["", f"Wall time {meta['wall_seconds']:.0f} s; {meta['machine']}; "
              + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "."]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instances", nargs="+", default=["3945", "7593", "34539", "126025", "126026"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--price", type=float, default=0.5, help="accuracy points per GPU-hour (min_gain_per_gpu_hour)")
    p.add_argument("--noise-std", type=float, default=0.0)
    p.add_argument("--rules", nargs="+", default=list(DEFAULT_RULES), choices=list(RULES))
    p.add_argument("--out", type=Path, default=Path("bench/out/stopprice"))
    p.add_argument("--render", action="store_true", help="rewrite --out's results.md from its results.json, no sweeps")
    p.add_argument("--ceiling", action="store_true",
                   help="also score rules tuned in hindsight on these runs (bench/stop_ceiling.py): what any rule of their kind can capture")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "render", False):
        import json

        data = json.loads((args.out / "results.json").read_text())
        rows = summarize(data["cells"], data["meta"]["rules"])
        text = markdown(rows, data["cells"], data["meta"]) + _ceiling_text(data["cells"])
        (args.out / "results.md").write_text(text)
        print(text)
        return {"summary": rows, "cells": data["cells"]}
    t0 = time.perf_counter()
    cells = []
    for inst in args.instances:
        for seed in args.seeds:
            cell = run_cell(str(inst), seed, iterations=args.iterations, price=args.price, noise_std=args.noise_std,
                            rules=args.rules, ceiling=args.ceiling)
            cells.append(cell)
            print(f"  {inst} s{seed}: {cell['gpu_hours']:.2f} GPU-h | " + "; ".join(
                f"{k}: net {fmt(v['net'])} of {fmt(v['hindsight'])}" for k, v in cell["rules"].items()), flush=True)
    rows = summarize(cells, args.rules)
    meta = {"instances": [str(i) for i in args.instances], "seeds": list(args.seeds), "iterations": args.iterations,
            "price": args.price, "noise_std": args.noise_std, "rules": list(args.rules),
            "wall_seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "versions": library_versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"meta": meta, "summary": rows, "cells": cells})
    text = markdown(rows, cells, meta) + _ceiling_text(cells)
    (args.out / "results.md").write_text(text)
    print(text)
    return {"summary": rows, "cells": cells}


def _ceiling_text(cells: Sequence[Mapping[str, Any]]) -> str:
    if not cells or "ceiling" not in cells[0]:
        return ""
    from bench.stop_ceiling import markdown_ceiling, summarize_ceiling

    return "\n\n" + markdown_ceiling(summarize_ceiling(cells))
