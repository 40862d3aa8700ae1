"""Stop rules side by side on LCBench: when each would have stopped the same Hyperband sweep, and what it lost.

Protocol (per instance and seed):

* one Hyperband + BOHB sweep (1..52 epochs, η = 3, ``--iterations`` iterations) runs to the end
  through the flow users run; its ledger is the sequence of results every rule is shown;
* each rule is replayed on that sequence, seeing exactly what it would have seen live:

  - ``rungflow window …``: :class:`budgets.controller.BudgetController`, checked before every
    stage (the flow's own check points, with the stage's bracket), with the budget config's
    defaults (window: the last Hyperband iteration's worth of complete brackets, judged as each
    bracket completes, patience 2) and the variants in ``OURS`` (patience 1 or 3, verdicts once
    per iteration, ``noisy``, last session's fixed 0.5 GPU-h window);
  - ``rungflow forecast``: ``stop_rule="forecast"`` with :func:`budgets.forecast.stage_forecast`
    and the flow's cost-per-unit prediction, as ``Sweep.decide`` computes them;
  - ``ray plateau``: Ray Tune's own ``ExperimentPlateauStopper``, called on every reported result
    (every rung, as Tune calls it), stopping when ``stop_all()`` says so;
  - ``optuna terminator``: Optuna's own ``Terminator`` (GP regret bound vs a static error),
    asked after every full-budget result (a COMPLETE trial in Optuna's view);

* figures: GPU-hours spent when the rule stops (the whole run's when it never does), the share of
  the full run's GPU-hours saved, and the regret at the stop: the full run's final best accuracy at
  52 epochs minus the best at 52 epochs when the rule stopped (with ``--noise-std``, the noise-free
  accuracies of the two incumbents, each the best *reported* result); per run, the oracle: the most
  any rule could have saved with regret ≤ 0.2, and where the incumbent's rises came from.

Replaying our controller on the full run's ledger gives the same decisions a live run makes up to
its stop (same seed, same proposals: ``tests/test_flow.py`` checks this), so one run per cell is
enough. GPU-hours are the surrogate's predicted training seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    LCBENCH_MAX_EPOCH,
    PLATEAU,
    TERMINATOR_ERROR,
    TERMINATOR_MIN_TRIALS,
    add_lcbench_grid_arguments,
    fmt,
    library_versions,
    median,
    peak_rss_mb,
    prefect_api,
    publish,
    run_config,
    wall_and_load,
    write_json,
)
from bench.efficiency import _run

__all__ = ["RULES", "run", "add_arguments", "replay"]

DEFAULT_INSTANCES: tuple[str, ...] = ("3945", "7593", "34539", "126025", "126026")
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

# The rules' settings, shown in the table. Ours: accuracy points per GPU-hour; everything else is
# the config's default (rungflow.config.BudgetConfig), so the table shows what a user gets. The
# peers' (PLATEAU, TERMINATOR_*) are in bench/common.py, shared with the live run.
MIN_GAIN = 0.25

# Our rule's variants: budget-config keys on top of the defaults (window: one Hyperband iteration's
# brackets, sliding by whole brackets, patience 2 brackets). "0.5h" is last session's fixed window of
# 0.5 GPU-h with 0.5 GPU-h warm-up.
OURS: dict[str, dict[str, Any]] = {
    "rungflow window": {},
    "rungflow window noisy": {"noisy": True},
    "rungflow window p1": {"patience": 1},
    "rungflow window p3": {"patience": 3},
    "rungflow window per-iteration": {"verdict_every": "iteration"},
    "rungflow window 0.5h": {"window_gpu_hours": 0.5, "min_gpu_hours": 0.5},
    "rungflow forecast": {"stop_rule": "forecast", "min_gpu_hours": 0.5},
}
RULES: tuple[str, ...] = (*OURS, "ray plateau", "optuna terminator")
# Each rule's main knob, swept for the trade-off table (the replays are offline, so this is cheap).
OUR_GRID = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # min_gain_per_gpu_hour
GRID: dict[str, tuple[float, ...]] = {
    **{rule: OUR_GRID for rule in OURS},
    "ray plateau": (0.02, 0.05, 0.1, 0.2, 0.5),  # std of the top 10
    "optuna terminator": (0.05, 0.1, 0.2, 0.5, 1.0),  # static error
}
DEFAULT_SETTING: dict[str, float] = {
    **{rule: MIN_GAIN for rule in OURS}, "ray plateau": PLATEAU["std"], "optuna terminator": TERMINATOR_ERROR,
}
KNOB: dict[str, str] = {**{rule: "min_gain_per_gpu_hour" for rule in OURS}, "ray plateau": "std", "optuna terminator": "error"}


@dataclass
class Outcome:
    rule: str
    setting: float
    stopped: bool
    gpu_hours: float  # spent when it stopped (the whole run's if it never did)
    best: float | None  # best accuracy at 52 epochs at that point
    saved: float  # share of the full run's GPU-hours
    regret: float | None  # full run's final best − best at the stop
    detail: str = ""
    # At the user's price (MIN_GAIN points per GPU-h): what the spend after the stop bought, per GPU-h, and
    # how far the stop falls short of the best stop in hindsight in (accuracy − price × GPU-h).
    after_gain_per_gpu_hour: float | None = None
    price_shortfall: float | None = None


@dataclass
class Cell:
    instance: str
    seed: int
    gpu_hours: float
    best: float
    wall_seconds: float
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # the default settings
    grid: list[Outcome] = field(default_factory=list)  # every setting of GRID
    oracle_saved: float = 0.0  # the most any rule could save with regret ≤ 0.2 (see oracle())
    oracle_gpu_hours: float = 0.0
    steps: list[Step] = field(default_factory=list)  # the incumbent's rises
    noise_std: float = 0.0


def _clean(r: Any) -> float:
    """What a result is really worth: the noise-free accuracy under synthetic noise, else the score."""
    return float(r.metrics.get("val_accuracy_clean", r.score))


def _best_at_top(records: Sequence[Any], upto: int) -> float | None:
    """The true accuracy of the incumbent after ``upto`` records: the best *reported* result at 52 epochs
    (what the user would pick), judged by its noise-free accuracy when the run had synthetic noise."""
    top = [r for r in records[:upto] if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9]
    return _clean(max(top, key=lambda r: r.score)) if top else None


def oracle(records: Sequence[Any], max_loss: float = 0.2) -> tuple[float, float]:
    """(largest share of the run's GPU-hours any rule could have saved with regret ≤ ``max_loss``, GPU-h then).

    1 − (spend at which the incumbent first came within ``max_loss`` of the run's final best) ÷ total:
    a rule that stops earlier loses more than ``max_loss``, whatever it looks at.
    """
    total = sum(r.gpu_seconds for r in records) / 3600.0
    final = _best_at_top(records, len(records))
    spent, best = 0.0, None
    for r in records:
        spent += r.gpu_seconds / 3600.0
        if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9 and (best is None or r.score > best.score):
            best = r
            if final is not None and final - _clean(best) <= max_loss + 1e-9:
                return 1.0 - spent / total, spent
    return 0.0, total


@dataclass
class Step:
    """One rise of the incumbent at 52 epochs: where in the sweep it came from."""

    gpu_hours: float
    share: float  # of the run's GPU-hours
    bracket: int
    iteration: int  # Hyperband iteration (brackets_per_iteration brackets each)
    trial: str
    score: float
    gain: float
    entry_budget: float  # the rung the trial entered at (its bracket's first)
    entry_rank: int  # its rank among the trials that entered with it
    entry_size: int
    origin: str = ""  # BOHB's uniform random draw or its model (see proposal_origins)


def proposal_origins(records: Sequence[Any], trials: dict[str, dict[str, Any]], config: Any) -> dict[str, str]:
    """Which proposals BOHB drew uniformly at random ("random") and which from its model ("model").

    Replays the searcher's own random stream (``budgets.tpe.BOHBSearcher.suggest``): the first
    bracket's proposals come before any result (all random); after that each proposal draws u and is
    random when u < random_fraction. Every proposal labelled random must equal the configuration the
    sweep recorded, or nothing is claimed (empty).
    """
    import numpy as np

    if config.search.algorithm != "bohb":
        return {}
    space = config.search_space()
    fraction = config.search.random_fraction if config.search.random_fraction is not None else 1.0 / 3.0
    rng = np.random.default_rng(config.search.seed + 7919)
    first = {r.trial_id for r in records if r.bracket == 0 and r.rung == 0}
    origins: dict[str, str] = {}
    for trial_id in sorted(trials):  # ids are given in proposal order
        if trial_id not in first and rng.random() >= fraction:
            origins[trial_id] = "model"
            continue
        sample = space.sample(rng)
        if any(abs(float(sample[k]) - float(v)) > 1e-9 for k, v in trials[trial_id].items()):
            return {}
        origins[trial_id] = "random"
    return origins


def incumbent_steps(records: Sequence[Any], brackets_per_iteration: int, origins: dict[str, str] | None = None) -> list[Step]:
    """Every rise of the incumbent, with the bracket, iteration, and entry rank of the trial that made it."""
    from collections import defaultdict

    total = sum(r.gpu_seconds for r in records) / 3600.0
    stage: dict[tuple[int, int], list[Any]] = defaultdict(list)
    first: dict[str, Any] = {}
    for r in records:
        stage[(r.bracket, r.rung)].append(r)
        first.setdefault(r.trial_id, r)
    steps, spent, best = [], 0.0, None
    for r in records:
        spent += r.gpu_seconds / 3600.0
        if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9 and (best is None or r.score > best):
            f = first[r.trial_id]
            entered = sorted((x for x in stage[(f.bracket, f.rung)] if x.ok), key=lambda x: -x.score)
            rank = next(i for i, x in enumerate(entered, 1) if x.trial_id == r.trial_id)
            steps.append(Step(spent, spent / total, r.bracket, r.bracket // brackets_per_iteration, r.trial_id,
                              r.score, 0.0 if best is None else r.score - best, f.budget, rank, len(entered),
                              (origins or {}).get(r.trial_id, "")))
            best = r.score
    return steps


def _outcome(rule: str, setting: float, records: Sequence[Any], stop_at: int | None, total: float, final_best: float,
             detail: str = "", hindsight: float | None = None, price: float = MIN_GAIN) -> Outcome:
    """``stop_at``: number of records spent when the rule stopped (None: never); ``hindsight``: the run's
    :func:`best_value_at_price` at ``price`` (computed here when not given)."""
    upto = len(records) if stop_at is None else stop_at
    spent = sum(r.gpu_seconds for r in records[:upto]) / 3600.0
    best = _best_at_top(records, upto)
    after = None
    if best is not None and total - spent > 1e-9:
        after = (final_best - best) / (total - spent)
    if hindsight is None:
        hindsight = best_value_at_price(records, price)
    shortfall = None if best is None else hindsight - (best - price * spent)
    return Outcome(rule, setting, stop_at is not None, spent, best, 1.0 - spent / total if total else 0.0,
                   None if best is None else final_best - best, detail, after, shortfall)


def best_value_at_price(records: Sequence[Any], price: float) -> float:
    """max over stop points of (best accuracy at 52 epochs − ``price`` × GPU-h spent): the stop a user who
    values one accuracy point at 1/``price`` GPU-h would pick in hindsight.

    The rule's threshold is that price: "stop once a GPU-hour buys less than ``price`` points". On a run
    whose incumbent climbs late but slowly, stopping early loses points yet is the right call at that price;
    the regret target alone cannot tell that from a premature stop, this can.
    """
    value, spent, best = -math.inf, 0.0, None
    for r in records:
        spent += r.gpu_seconds / 3600.0
        if r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9 and (best is None or r.score > best.score):
            best = r
        if best is not None:
            value = max(value, _clean(best) - price * spent)
    return value


def _stage_starts(records: Sequence[Any]) -> list[int]:
    """Indices where a new (bracket, rung) stage begins: where the flow asks the controller."""
    starts, previous = [], None
    for i, r in enumerate(records):
        key = (r.bracket, r.rung)
        if key != previous:
            starts.append(i)
            previous = key
    return starts


def replay_controller(records: Sequence[Any], scheduler: Any, *, rule: str, seed: int,
                      min_gain: float = MIN_GAIN) -> tuple[int | None, str]:
    """Where our controller stops this sequence, checked before each stage as ``Sweep.decide`` does."""
    from rungflow.budgets.controller import BudgetController
    from rungflow.budgets.forecast import stage_forecast
    from rungflow.budgets.ledger import Ledger
    from rungflow.config import BudgetConfig

    settings = dataclasses.replace(BudgetConfig(min_gain_per_gpu_hour=min_gain, **OURS[rule]).settings(),
                                   brackets_per_iteration=scheduler.brackets_per_iteration)
    stop_rule = settings.stop_rule
    ctl = BudgetController(settings, mode="max", clock=lambda: 0.0)
    ledger = Ledger()
    charged = 0

    def per_unit_hours(units: float) -> float | None:
        trained = [r for r in ledger.records if r.budget_trained > 0]
        if not trained:
            return None
        return sum(r.gpu_seconds for r in trained) / sum(r.budget_trained for r in trained) * units / 3600.0

    for start in [*_stage_starts(records), len(records)]:
        while charged < start:
            ledger.charge(records[charged])
            charged += 1
        if start == len(records):
            break
        r = records[start]
        expected = spend = None
        detail = ""
        if stop_rule == "forecast":
            f = stage_forecast(ledger.records, scheduler, (r.bracket, r.rung), mode="max", seed=seed + ctl.checks)
            if f is not None:
                expected, spend, detail = f.expected_gain, per_unit_hours(f.budget_units), f.detail
        decision = ctl.check_before_stage(ledger, stage=f"bracket {r.bracket} rung {r.rung}", expected_gain=expected,
                                          forecast_gpu_hours=spend, forecast_detail=detail, bracket=r.bracket)
        if decision.stop:
            return start, decision.detail
    return None, ""


def replay_plateau(records: Sequence[Any], std: float = PLATEAU["std"]) -> tuple[int | None, str]:
    from ray.tune.stopper import ExperimentPlateauStopper

    stopper = ExperimentPlateauStopper("val_accuracy", mode="max", std=float(std), top=int(PLATEAU["top"]),
                                       patience=int(PLATEAU["patience"]))
    for i, r in enumerate(records):
        if r.ok and stopper(r.trial_id, {"val_accuracy": r.score}):
            return i + 1, f"top-{PLATEAU['top']} std <= {std}"
    return None, ""


def terminator_bounds(records: Sequence[Any], trials: dict[str, dict[str, Any]], space: Any) -> list[tuple[int, float]]:
    """(records spent, Optuna's regret bound) after every full-budget result from the ``min_n_trials``-th on.

    ``Terminator.should_terminate`` is ``regret bound < error`` once there are ``min_n_trials``
    COMPLETE trials; with a static error the bound does not depend on the error, so it is computed
    once (by Optuna's own ``RegretBoundEvaluator``) and compared with every error of the grid.
    """
    import optuna
    from optuna.terminator import RegretBoundEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    distributions = space.to_optuna()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    evaluator = RegretBoundEvaluator(seed=0)
    bounds = []
    for i, r in enumerate(records):
        if not (r.ok and abs(r.budget - LCBENCH_MAX_EPOCH) < 1e-9):
            continue
        study.add_trial(optuna.trial.create_trial(params=dict(trials[r.trial_id]), distributions=distributions,
                                                  value=float(r.score)))
        if len(study.trials) >= TERMINATOR_MIN_TRIALS:
            bounds.append((i + 1, float(evaluator.evaluate(study.trials, study.direction))))
    return bounds


def _cached_bounds(run_dir: Path, compute: Callable[[], list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Optuna's regret bounds for a finished run, kept next to its ledger: a GP fit per full-budget
    result is most of a replay's time, and the bounds depend on the ledger alone."""
    import optuna

    cache = run_dir / "terminator_bounds.json"
    key = {"optuna": optuna.__version__, "min_n_trials": TERMINATOR_MIN_TRIALS, "ledger_bytes": (run_dir / "ledger.jsonl").stat().st_size}
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return [(int(u), float(b)) for u, b in data["bounds"]]
    bounds = compute()
    write_json(cache, {"key": key, "bounds": bounds})
    return bounds


def terminator_stop(bounds: Sequence[tuple[int, float]], error: float) -> tuple[int | None, str]:
    for upto, bound in bounds:
        if bound < error:
            return upto, f"regret bound {bound:.3g} below {error}"
    return None, ""


def replay(run_dir: Path, rules: Sequence[str], seed: int, instance: str = "") -> Cell:
    """Every rule on the ledger of one finished run, with the run's oracle and incumbent steps."""
    from rungflow.budgets.ledger import Ledger
    from rungflow.budgets.schedulers import make_scheduler
    from rungflow.config import validate

    records = Ledger(run_dir / "ledger.jsonl").records
    config = validate(json.loads((run_dir / "config.json").read_text()))
    trials = json.loads((run_dir / "result.json").read_text())["trials"]
    lo, hi = config.budget_range()
    scheduler = make_scheduler(config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                               integer=True, iterations=config.scheduler.iterations, num_trials=None, mode="max")
    total = sum(r.gpu_seconds for r in records) / 3600.0
    final_best = _best_at_top(records, len(records))
    assert final_best is not None, f"{run_dir}: no full-budget result"
    bounds: list[tuple[int, float]] | None = None

    def stop(rule: str, setting: float) -> tuple[int | None, str]:
        nonlocal bounds
        if rule == "ray plateau":
            return replay_plateau(records, setting)
        if rule == "optuna terminator":
            if bounds is None:
                bounds = _cached_bounds(run_dir, lambda: terminator_bounds(records, trials, config.search_space()))
            return terminator_stop(bounds, setting)
        return replay_controller(records, scheduler, rule=rule, seed=seed, min_gain=setting)

    outcomes: dict[str, Outcome] = {}
    grid: list[Outcome] = []
    hindsight = best_value_at_price(records, MIN_GAIN)
    for rule in rules:
        for setting in sorted({*GRID[rule], DEFAULT_SETTING[rule]}):
            stop_at, detail = stop(rule, setting)
            outcome = _outcome(rule, setting, records, stop_at, total, final_best, detail, hindsight)
            grid.append(outcome)
            if setting == DEFAULT_SETTING[rule]:
                outcomes[rule] = outcome
    saved, at = oracle(records)
    return Cell(instance, seed, total, final_best, float("nan"), outcomes, grid, saved, at,
                incumbent_steps(records, scheduler.brackets_per_iteration or 1, proposal_origins(records, trials, config)),
                float(config.trainable.options.get("noise_std", 0.0)))


def summarize(cells: Sequence[Cell], rules: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for scope in [*dict.fromkeys(c.instance for c in cells), "all"]:
        cs = [c for c in cells if scope in ("all", c.instance)]
        for rule in rules:
            outs = [c.outcomes[rule] for c in cs]
            regrets = [math.inf if o.regret is None else o.regret for o in outs]
            rows.append({
                "instance": scope, "rule": rule, "runs": len(outs), "stopped": sum(o.stopped for o in outs),
                "median_saved": median([o.saved for o in outs]), "median_regret": median(regrets),
                "max_regret": max(regrets) if regrets else None,
                "within_0.2": sum(1 for x in regrets if x <= 0.2 + 1e-9),
                "median_gpu_hours": median([o.gpu_hours for o in outs]),
                "median_oracle": median([c.oracle_saved for c in cs]),
                "reachable": sum(1 for c in cs if c.oracle_saved >= 0.6),
                # on the runs where ≥ 60 % at ≤ 0.2 was possible at all: how many this rule achieved
                "met_where_reachable": sum(1 for c in cs if c.oracle_saved >= 0.6 and c.outcomes[rule].saved >= 0.6
                                           and c.outcomes[rule].regret is not None and c.outcomes[rule].regret <= 0.2 + 1e-9),
                # at the user's price (MIN_GAIN): stops after which a GPU-hour bought less than the price
                "stops_worth_it": sum(1 for o in outs if o.stopped and o.after_gain_per_gpu_hour is not None
                                      and o.after_gain_per_gpu_hour <= MIN_GAIN + 1e-12),
                "median_shortfall": median([math.inf if o.price_shortfall is None else o.price_shortfall for o in outs]),
                "max_shortfall": max((math.inf if o.price_shortfall is None else o.price_shortfall for o in outs), default=None),
            })
    return rows


def tradeoff(cells: Sequence[Cell], rules: Sequence[str], max_loss: float = 0.2) -> list[dict[str, Any]]:
    """Every setting of every rule over all runs, and which setting saves most with no run losing > ``max_loss``."""
    rows = []
    for rule in rules:
        settings = sorted({o.setting for c in cells for o in c.grid if o.rule == rule})
        best_saved, best_setting = -math.inf, None
        for setting in settings:
            outs = [o for c in cells for o in c.grid if o.rule == rule and o.setting == setting]
            regrets = [math.inf if o.regret is None else o.regret for o in outs]
            row = {"rule": rule, "setting": setting, "runs": len(outs), "stopped": sum(o.stopped for o in outs),
                   "median_saved": median([o.saved for o in outs]), "mean_saved": sum(o.saved for o in outs) / len(outs),
                   "median_regret": median(regrets), "max_regret": max(regrets),
                   "within": sum(1 for x in regrets if x <= max_loss + 1e-9),
                   "met": sum(1 for o in outs if o.saved >= 0.6 and o.regret is not None and o.regret <= max_loss + 1e-9)}
            rows.append(row)
            if row["max_regret"] <= max_loss + 1e-9 and row["mean_saved"] > best_saved:
                best_saved, best_setting = row["mean_saved"], setting
        for row in rows:
            if row["rule"] == rule:
                row["best_at_loss"] = row["setting"] == best_setting
    return rows


def markdown(rows: Sequence[dict[str, Any]], cells: Sequence[Cell], meta: dict[str, Any],
             trade: Sequence[dict[str, Any]] = (), live: Sequence[Any] = ()) -> str:
    noise = meta.get("noise_std", 0.0)
    ours = "; ".join(f"{k}: {', '.join(f'{a}={b}' for a, b in v.items()) or 'config defaults'}" for k, v in OURS.items()
                     if k in meta["rules"])
    lines = [
        "# Stop rules on the same Hyperband + BOHB sweeps (LCBench, YAHPO surrogate)",
        "",
        f"Each run: Hyperband 1..{LCBENCH_MAX_EPOCH} epochs, η=3, {meta['iterations']} iterations, BOHB, to the end; every rule "
        "replayed on its ledger. saved = share of the run's GPU-hours not spent; regret = run's final best − best at "
        f"{LCBENCH_MAX_EPOCH} epochs at the stop (accuracy points; ∞: no full-budget result yet). "
        + (f"**Synthetic seed-to-seed noise**: N(0, {noise:g}²) points on every reported accuracy; regret is judged on "
           "the noise-free accuracy of the incumbent each side would pick (its best *reported* result). " if noise else "")
        + "oracle = the most any rule could have saved with regret ≤ 0.2 (1 − GPU-h when the incumbent first came "
        f"within 0.2 of the final best ÷ the run's GPU-h); reachable = runs with oracle ≥ 60 %; met = runs where the "
        f"rule saved ≥ 60 % with regret ≤ 0.2. Settings: rungflow min_gain_per_gpu_hour {MIN_GAIN}, the rest "
        f"BudgetConfig's defaults except: {ours}; Ray ExperimentPlateauStopper top={PLATEAU['top']}, std={PLATEAU['std']}, "
        f"patience={PLATEAU['patience']}; Optuna Terminator RegretBoundEvaluator vs StaticErrorEvaluator({TERMINATOR_ERROR}), "
        f"min_n_trials={TERMINATOR_MIN_TRIALS}.",
        "",
        "| instance | rule | stopped | median saved | median regret | max regret | regret ≤ 0.2 | median oracle | met / reachable |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        inst = "**all**" if r["instance"] == "all" else r["instance"]
        lines.append(
            f"| {inst} | {r['rule']} | {r['stopped']}/{r['runs']} | {fmt(r['median_saved'], '.0%')} | "
            f"{fmt(r['median_regret'])} | {fmt(r['max_regret'])} | {r['within_0.2']}/{r['runs']} | "
            f"{fmt(r['median_oracle'], '.0%')} | {r['met_where_reachable']}/{r['reachable']} |"
        )
    lines += ["", f"## At the user's price: {MIN_GAIN} accuracy points per GPU-hour", "",
              f"Our threshold is a price: a GPU-hour is worth spending while it buys at least {MIN_GAIN} points. "
              "*worth stopping*: stops after which the rest of the run bought less than that per GPU-hour; *shortfall*: "
              "(accuracy − price × GPU-h) of the best stop in hindsight minus the rule's, in accuracy points (0: the best "
              "stop at this price; a rule that never stops pays the whole run).", "",
              "| rule | stopped | worth stopping | median shortfall | max shortfall |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['rule']} | {r['stopped']}/{r['runs']} | {r['stops_worth_it']}/{r['stopped']} | "
              f"{fmt(r['median_shortfall'])} | {fmt(r['max_shortfall'])} |" for r in rows if r["instance"] == "all"]
    rules = [r for r in meta["rules"]]
    lines += ["", "## Every run", "", "saved / regret per rule at its default setting; oracle as above.", "",
              "| run | GPU-h | final best | oracle | " + " | ".join(rules) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(rules)]
    for c in cells:
        lines.append(f"| {c.instance}/s{c.seed} | {c.gpu_hours:.2f} | {c.best:.2f} | {c.oracle_saved:.0%} | " + " | ".join(
            f"{c.outcomes[r].saved:.0%} / {fmt(c.outcomes[r].regret)}" for r in rules) + " |")
    lines += ["", "## Where the incumbent rose", "",
              "Each rise of the best accuracy at 52 epochs: GPU-h (share of the run), bracket, Hyperband iteration, the "
              "trial's origin (BOHB's random draw or its model), entry budget and rank among the trials that entered its "
              "bracket with it.", ""]
    for c in cells:
        rises = "; ".join(f"{st.gpu_hours:.1f} h ({st.share:.0%}) it{st.iteration} b{st.bracket} +{st.gain:.2f} "
                          f"[{st.origin or '?'}, {st.entry_budget:g} ep, #{st.entry_rank}/{st.entry_size}]" for st in c.steps[1:])
        lines.append(f"- {c.instance}/s{c.seed} (first {c.steps[0].score:.2f} at {c.steps[0].gpu_hours:.1f} h, final "
                     f"{c.steps[-1].score:.2f}): {rises}")
    ours = "rungflow window"
    if ours in rules:
        lines += ["", f"## {ours} against each rule, run by run, at equal loss", "",
                  "both ≤ 0.2: runs where both lost at most 0.2 points, and in how many of them ours spent less / the same "
                  "(±1 % of the run) / more; only ours, only theirs: runs where just one of the two stayed within 0.2.", "",
                  "| rule | both ≤ 0.2 | ours spent less / same / more | median saved, ours vs theirs | only ours ≤ 0.2 | only theirs ≤ 0.2 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for other in rules:
            if other == ours:
                continue
            pairs = [(c.outcomes[ours], c.outcomes[other]) for c in cells]
            ok = lambda o: o.regret is not None and o.regret <= 0.2 + 1e-9  # noqa: E731
            both = [(a, b) for a, b in pairs if ok(a) and ok(b)]
            less = sum(1 for a, b in both if a.saved > b.saved + 0.01)
            more = sum(1 for a, b in both if a.saved < b.saved - 0.01)
            lines.append(f"| {other} | {len(both)}/{len(pairs)} | {less} / {len(both) - less - more} / {more} | "
                         f"{fmt(median([a.saved for a, _ in both]), '.0%')} vs {fmt(median([b.saved for _, b in both]), '.0%')} | "
                         f"{sum(1 for a, b in pairs if ok(a) and not ok(b))} | {sum(1 for a, b in pairs if ok(b) and not ok(a))} |")
    if trade:
        lines += ["", "## Every setting, all runs pooled", "",
                  "**bold**: the setting with the largest mean saving among those where no run lost more than 0.2 points.", "",
                  "| rule | setting | stopped | mean saved | median saved | median regret | max regret | regret ≤ 0.2 | met |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in trade:
            name = f"**{t['rule']}**" if t.get("best_at_loss") else t["rule"]
            lines.append(f"| {name} | {KNOB[t['rule']]} {t['setting']:g} | {t['stopped']}/{t['runs']} | "
                         f"{fmt(t['mean_saved'], '.0%')} | {fmt(t['median_saved'], '.0%')} | {fmt(t['median_regret'])} | "
                         f"{fmt(t['max_regret'])} | {t['within']}/{t['runs']} | {t['met']}/{t['runs']} |")
    if live:
        from bench.stopping_live import live_markdown

        lines += ["", live_markdown(cells, live, price=MIN_GAIN)]
    lines += ["", wall_and_load(meta), ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_lcbench_grid_arguments(p, DEFAULT_INSTANCES, DEFAULT_SEEDS)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--iterations", type=int, default=12, help="Hyperband iterations of each full run")
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="synthetic seed-to-seed noise on every accuracy (points; trainable.options.noise_std); 0: none")
    p.add_argument("--out", type=Path, default=Path("bench/out/stopping"))
    p.add_argument("--max-concurrent", type=int, default=2, help="thread runtime slots")
    p.add_argument("--replay-only", action="store_true",
                   help="run no sweep: replay the rules on the ledgers already in OUT/runs (e.g. after changing a rule)")
    p.add_argument("--live-peers", action="store_true",
                   help="also run Ray Tune and Optuna live on their own searches with their stop rules "
                        "(bench.stopping_live), capped at each full sweep's GPU-hours; kept in OUT/live")
    p.add_argument("--keep-finished", action="store_true",
                   help="replay, not rerun, the runs already finished in OUT/runs (a grid extended or resumed)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    if args.live_peers and args.noise_std > 0:
        raise SystemExit("stopping: --live-peers runs the peers on the noise-free surrogate; drop --noise-std or --live-peers")
    out.mkdir(parents=True, exist_ok=True)
    runtime = {"kind": "thread", "max_concurrent": args.max_concurrent}
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    cells: list[Cell] = []
    with (contextlib.nullcontext(0.0) if args.replay_only else prefect_api()) as startup:
        if not args.replay_only:
            print(f"stopping: Prefect API up in {startup:.1f} s", flush=True)
        for instance in args.instances:
            for seed in args.seeds:
                options: dict[str, Any] = {"instance": instance}
                if args.noise_std > 0:
                    options["noise_std"] = args.noise_std
                cfg = run_config(
                    f"bench-stopping-{instance}-s{seed}", trainable={"kind": "yahpo_lcbench", "options": options},
                    algorithm="bohb", seed=seed,
                    scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": LCBENCH_MAX_EPOCH, "eta": 3,
                               "iterations": args.iterations},
                    runtime=runtime,
                )
                run_dir = out / "runs" / str(instance) / f"seed{seed}"
                result_file = run_dir / "result.json"
                finished = result_file.is_file() and json.loads(result_file.read_text()).get("status") == "finished"
                if args.replay_only or (args.keep_finished and finished):
                    if not finished:
                        print(f"  {instance} seed {seed}: no finished run in {run_dir}; skipped", flush=True)
                        continue
                    wall = float(json.loads(result_file.read_text()).get("elapsed_seconds", float("nan")))
                else:
                    _, wall = _run(cfg, run_dir)
                cell = replay(run_dir, args.rules, seed, str(instance))
                cell.wall_seconds = wall
                cells.append(cell)
                summary = "; ".join(f"{k}: saved {o.saved:.0%}, regret {fmt(o.regret)}" for k, o in cell.outcomes.items())
                print(f"  {instance} seed {seed}: {cell.gpu_hours:.2f} GPU-h, best {cell.best:.2f} ({wall:.0f} s), "
                      f"oracle {cell.oracle_saved:.0%} | {summary}", flush=True)
    meta = {
        "instances": [str(i) for i in args.instances], "seeds": list(args.seeds), "rules": list(args.rules),
        "iterations": args.iterations, "noise_std": max([c.noise_std for c in cells], default=args.noise_std), "wall_seconds": time.perf_counter() - t0, "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()), "peak_rss_mb": peak_rss_mb(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "versions": library_versions(),
    }
    live = []
    if args.live_peers:
        from bench.stopping_live import run_live

        live = run_live(cells, out)
        meta["wall_seconds"] = time.perf_counter() - t0
        meta["loadavg_after"] = list(os.getloadavg())
    rows = summarize(cells, args.rules)
    trade = tradeoff(cells, args.rules)
    data = {"meta": meta, "summary": rows, "tradeoff": trade, "cells": [asdict(c) for c in cells],
            "live": [asdict(o) for o in live]}
    publish(out, data, markdown(rows, cells, meta, trade, live))
    print(f"stopping: wrote {out / 'results.json'}, {out / 'results.md'}", flush=True)
    return data
