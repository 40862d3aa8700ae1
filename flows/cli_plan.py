"""``rungflow plan``: the brackets, rungs and predicted spend of a config, or its sweep on a simulated cluster."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from rungflow.flows.cli_common import CLIError, console, load_cli_config, preflight


def plan_rows(config) -> tuple[list[dict[str, Any]], float, float | None]:
    """Rows of (bracket, rung, budget, trials, units) and the total units and predicted GPU-hours."""
    import numpy as np

    from rungflow.budgets.schedulers import make_scheduler

    lo, hi = config.budget_range()
    scheduler = make_scheduler(config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                               integer=config.trainable_class().integer_budget, iterations=config.scheduler.iterations,
                               num_trials=config.search.num_trials, mode=config.mode(), **config.scheduler_options())
    brackets = list(scheduler.brackets)
    trainable = config.trainable_class()(config.trainable.options)
    rng = np.random.default_rng(config.search.seed)
    space = config.search_space()
    estimates = [trainable.estimate_gpu_seconds(space.sample(rng), 0, hi) for _ in range(16)]
    per_unit = None
    if all(e is not None for e in estimates):
        per_unit = float(np.mean(estimates)) / hi / 3600.0  # GPU-hours per budget unit
    # A rung's new trials: a bracket's first rung starts them all, except under PBT, whose gates start clones.
    clones = scheduler.planned_clones() if hasattr(scheduler, "planned_clones") else None
    rows = []
    for b in brackets:
        previous = 0.0
        for r in b.rungs:
            units = r.num_trials * (r.budget - previous)
            new = clones[r.index] if clones is not None else (r.num_trials if r.index == 0 else 0)
            rows.append({"bracket": b.index, "rung": r.index, "budget": r.budget, "trials": r.num_trials,
                         "new_trials": new, "units": units, "gpu_hours": None if per_unit is None else units * per_unit})
            previous = r.budget
    total_units = sum(r["units"] for r in rows)
    return rows, total_units, None if per_unit is None else total_units * per_unit


def setup_rows(config) -> list[dict[str, Any]]:
    """The user's code the sweep runs before its first trial (an Optuna objective's space probe), as this process
    measured it, priced as the ledger bills it: wall-clock at a trial's GPU and CPU share."""
    rt, b = config.runtime, config.budget
    rows = []
    for spent in config.trainable_class()(config.trainable.options).spent_before_sweep():
        wall = float(spent["wall_seconds"])
        gpu_hours, cpu_hours = wall * rt.gpus_per_trial / 3600.0, wall * rt.cpus_per_trial / 3600.0
        rows.append({"kind": spent["kind"], "runs": int(spent["runs"]), "wall_seconds": wall, "gpu_hours": gpu_hours,
                     "cpu_hours": cpu_hours,
                     "cost": gpu_hours * b.price_per_gpu_hour + cpu_hours * b.price_per_cpu_hour})
    return rows


def setup_line(row: dict[str, Any], config) -> str:
    what = {"space_probe": "the space probe runs the objective"}.get(row["kind"], f"{row['kind']} runs your code")
    rt = config.runtime
    return (f"before the first trial, {what} {row['runs']} time{'s' if row['runs'] != 1 else ''}: {row['wall_seconds']:.2f} s "
            f"here, billed as setup spend at a trial's share ({rt.gpus_per_trial:g} GPUs, {rt.cpus_per_trial:g} CPUs): "
            f"{row['gpu_hours']:.4g} GPU-hours, {row['cpu_hours']:.4g} CPU-hours")


def _plan_simulated(config, args: argparse.Namespace) -> int:
    """The real driver on ``--workers`` simulated GPUs: sync Hyperband and ASHA side by side, or one ``--json`` object."""
    from rungflow.flows.plan_sim import (
        PlanError,
        compare,
        describe,
        driver_costs_for,
        durations_for,
        simulate,
    )

    try:
        if args.workers < 1:
            raise PlanError(f"--workers: {args.workers} must be at least 1")
        durations, source = durations_for(config, args.costs_from, args.seconds_per_unit)
        costs = driver_costs_for(args.costs_from, stage_seconds=args.stage_seconds,
                                 dispatch_seconds=args.dispatch_seconds, setup_seconds=args.setup_seconds)
        stage, dispatch, setup = costs.stage_seconds, costs.dispatch_seconds, costs.setup_seconds
        if args.json:
            print(json.dumps(simulate(config, workers=args.workers, durations=durations, stage_seconds=stage,
                                      dispatch_seconds=dispatch, setup_seconds=setup,
                                      worker_startup_seconds=costs.worker_startup_seconds)))
            return 0
        results = compare(config, workers=args.workers, durations=durations, stage_seconds=stage, dispatch_seconds=dispatch,
                          setup_seconds=setup)
    except PlanError as exc:
        raise CLIError(str(exc)) from None
    console.print(f"simulated: {config.name} on {args.workers} GPUs ({config.runtime.gpus_per_trial:g} per trial), "
                  f"durations from {source}, {stage:.2f} s per synchronous stage ({costs.stage_source}), {dispatch:.3f} s "
                  f"to dispatch a trial ({costs.dispatch_source})", highlight=False)
    for result in results.values():
        console.print(describe(result), highlight=False)
    return 0


def history_plan_line(config) -> str:
    """Which earlier sweeps the prior comes from, read now (an unusable source refuses the plan, as the sweep would)."""
    from rungflow.budgets.transfer_prior import INITIAL_SHARE
    from rungflow.tasks.history import HistoryError, prior_for

    try:
        prior = prior_for(config, config.run_dir())
    except HistoryError as exc:
        raise CLIError(str(exc)) from None
    assert prior is not None
    s = prior["summary"]
    names = ", ".join(src["name"] for src in s["sources"][:5]) + (" ..." if len(s["sources"]) > 5 else "")
    line = (f"history: {s['sweeps']} earlier sweeps ({names}), {s['trials']} trials, {s['tasks']} "
            f"task{'s' if s['tasks'] != 1 else ''} ({s['same_task']} of the same task); the first "
            f"{len(prior['portfolio'])} trials are its portfolio, then the search is cold")
    if s.get("model_prior_sweeps"):
        line = line.removesuffix(", then the search is cold") + (
            f"; a model of {s['model_prior_sweeps']} sweeps' results proposes {INITIAL_SHARE:.0%} of the new trials at "
            "first, then as many as its trials earn against the searcher's on this sweep's results, and none once "
            "no earlier sweep ranks this sweep's results better than chance")
    if s["model_observations"]:
        line += f"; the model starts from {s['model_observations']} earlier results"
    from rungflow.budgets.history_stop import stop_rule_in_use

    b = config.budget
    stop = stop_rule_in_use(s.get("stop_rule"), enabled=b.history_stop, min_gain_per_gpu_hour=b.min_gain_per_gpu_hour,
                            stop_rule=b.stop_rule)[1]
    if stop["used"]:
        line += f"; {stop['why']}"
    return line + "\n" + expected_line(s.get("expected") or {}) + "".join(f"\n  note: {n}" for n in s["notes"])


def expected_line(e: dict) -> str:
    """The history's own estimate of GPU-hours to a near-best configuration (budgets/prior_estimate.py)."""
    if e.get("cold_gpu_hours") is None:
        return ("expected: no estimate; no earlier sweep's ledger gives its spend (Optuna studies record no "
                "GPU-hours)")
    cold = f"expected: near-best after {e['cold_gpu_hours']:.4g} GPU-hours cold (median of {e['sweeps']} earlier sweeps)"
    if e.get("prior_gpu_hours") is None:
        return cold + "; with the history: no estimate, it needs two earlier sweeps with ledgers to leave one out"
    return (cold + f", {e['prior_gpu_hours']:.4g} with this history (left out in turn, the others' portfolio held a "
            f"near-best configuration for {e['hits']} of {e['sweeps']})")


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_cli_config(args.config, args.set)
    preflight(config)
    if args.simulate:
        return _plan_simulated(config, args)
    rows, total_units, total_gpu_hours = plan_rows(config)
    unit = config.trainable_class().budget_unit
    kind = " ".join(filter(None, (config.scheduler.kind, config.scheduler.asha_type)))
    table = Table(title=f"plan: {config.name} ({kind}, η={config.scheduler.eta:g}, "
                        f"{config.search.algorithm} search, seed {config.search.seed})")
    for col in ("bracket", "rung", f"budget ({unit})", "trials", f"{unit} to train", "GPU-hours"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["bracket"]), str(r["rung"]), f"{r['budget']:g}", str(r["trials"]), f"{r['units']:g}",
                      "?" if r["gpu_hours"] is None else f"{r['gpu_hours']:.4f}")
    console.print(table)
    brackets = len({r["bracket"] for r in rows})
    trials = sum(r["new_trials"] for r in rows)
    started = sum(r["new_trials"] for r in rows if r["rung"] == 0)
    cloned = f" ({started} + {trials - started} clones)" if trials > started else ""
    console.print(f"{brackets} brackets, {trials} trials{cloned}, {total_units:g} {unit} in all")
    if config.scheduler.asha_type == "stopping":
        console.print("asha stopping: at most; every trial to the top if the rule stops none (the first at each rung "
                      "always runs on)")
    console.print(config.search.cost_aware_reason)
    b = config.budget
    price = b.price_per_gpu_hour
    setup = setup_rows(config)
    for row in setup:
        console.print(setup_line(row, config), highlight=False)
    setup_gpu_hours = sum(r["gpu_hours"] for r in setup)
    if total_gpu_hours is not None:
        total_gpu_hours += setup_gpu_hours
        with_setup = " (setup included)" if setup else ""
        console.print(f"predicted: {total_gpu_hours:.4f} GPU-hours{with_setup}, {total_gpu_hours * price:.2f} at "
                      f"{price:g}/GPU-hour")
        first = setup_gpu_hours + sum(r["gpu_hours"] for r in rows if r["bracket"] == rows[0]["bracket"])
        if b.max_gpu_hours is not None and first > b.max_gpu_hours:
            raise CLIError(f"plan refused: the first bracket alone needs {first:.4f} GPU-hours, above budget.max_gpu_hours="
                           f"{b.max_gpu_hours:g}; raise the cap or lower scheduler.max_budget")
        if b.max_cost is not None and first * price > b.max_cost:
            raise CLIError(f"plan refused: the first bracket alone costs {first * price:.2f}, above budget.max_cost="
                           f"{b.max_cost:g}; raise the cap or lower scheduler.max_budget")
    elif setup:
        if b.max_gpu_hours is not None and setup_gpu_hours > b.max_gpu_hours:
            raise CLIError(f"plan refused: the setup alone needs {setup_gpu_hours:.4f} GPU-hours, above "
                           f"budget.max_gpu_hours={b.max_gpu_hours:g}; raise the cap")
        console.print(f"predicted: {setup_gpu_hours:.4g} GPU-hours and {sum(r['cpu_hours'] for r in setup):.4g} "
                      "CPU-hours of setup, then the trials' measured from the first rung (the trainable has no cost "
                      "model)", highlight=False)
    else:
        console.print("predicted GPU-hours: measured from the first rung (the trainable has no cost model)")
    if config.history is not None:
        console.print(history_plan_line(config), highlight=False)
    caps = [f"{k}={getattr(b, k)}" for k in ("max_gpu_hours", "max_cost", "deadline", "min_gain_per_gpu_hour")
            if getattr(b, k) is not None]
    console.print("caps: " + (", ".join(caps) if caps else "none"))
    return 0

