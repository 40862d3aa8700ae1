"""``rungflow plan --simulate``: the real driver on a simulated cluster, before renting one.

The searcher, scheduler and controller are the sweep's own (:class:`budgets.driver.SweepDriver`);
only the executor is simulated (:mod:`budgets.simulate`). Trial durations come from the first
available of: the trainable's cost model (the LCBench surrogate's own times); a previous run's
ledger (``--costs-from``), exactly per (configuration, budget) where the seed and config match,
else a cost model fitted on it; a constant ``--seconds-per-unit``. Scores come from the trainable
itself where it is a surrogate (no sleeping, no data); otherwise every trial scores alike and the
gate keeps the first trials, which is enough to plan time and money.

Between synchronous stages a real sweep spends driver time no trial uses (:mod:`budgets.simulate`);
the seconds per stage come from ``--stage-seconds``, else as measured in the ``--costs-from`` run,
else :data:`DEFAULT_STAGE_SECONDS`. Inside a stage each job waits a dispatch delay before its trial
starts: ``--dispatch-seconds``, else as measured in the ``--costs-from`` run, else none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rungflow.budgets.controller import BudgetController
from rungflow.budgets.cost import CostModel
from rungflow.budgets.driver import SweepDriver
from rungflow.budgets.holding import RELEASE_NEVER, HoldSpan, held_seconds, idle_grace
from rungflow.budgets.ledger import Ledger, SpendRecord
from rungflow.budgets.schedulers import make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.simulate import (
    Durations,
    Scores,
    SimulatedExecutor,
    VirtualClock,
    critical_path,
    dispatch_overhead,
    idle_within,
    setup_overhead,
    stage_overhead,
    worker_startup,
)
from rungflow.config import SweepConfig

__all__ = ["PlanError", "durations_for", "DriverCosts", "driver_costs_for", "simulate", "fill_warning", "SURROGATES",
           "DEFAULT_STAGE_SECONDS", "FILLED_UTILISATION"]

# Driver seconds between synchronous stages on the thread runtime, measured on a 2-core machine (Hyperband
# 1..9, noop trials, 1, 2 and 4 slots: 0.11-0.15 s; bench/README.md): the gate, promote and search task
# runs, result.json, the artifacts, and starting the next stage's task runs. Small beside hour-long
# trials. Ray's set-up alone is seconds: plan a Ray sweep --costs-from a Ray run.
DEFAULT_STAGE_SECONDS = 0.12

# Below this utilisation on more than one GPU, the plan warns that the sweep cannot fill the cluster: the share a
# cluster run should keep busy (a sweep at 0.8 on 8 GPUs still runs about 6.4 times as fast as on one).
FILLED_UTILISATION = 0.8

# Trainables whose train() is an instant, deterministic answer (no data, no sleep): the simulation asks them.
SURROGATES = frozenset({"yahpo_lcbench", "noop"})


class PlanError(ValueError):
    """A simulation that cannot run as asked; the message is one line naming the fix."""


def _key(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=str)


def _ledger_durations(config: SweepConfig, run_dir: Path) -> Durations:
    path = run_dir / "ledger.jsonl"
    if not path.is_file():
        raise PlanError(f"--costs-from {run_dir}: no ledger.jsonl there; point it at a sweep's run directory")
    saved_path = run_dir / "config.json"
    saved = json.loads(saved_path.read_text(encoding="utf-8")) if saved_path.is_file() else {}
    kind = saved.get("trainable", {}).get("kind")
    if kind is not None and kind != config.trainable.kind:
        raise PlanError(f"--costs-from {run_dir}: that ledger is of trainable {kind!r}, this config trains "
                        f"{config.trainable.kind!r}; use a run of the same trainable")
    ledger = Ledger(path, replay=True)
    records: list[SpendRecord] = [*ledger.records, *ledger.pending]
    trials = (json.loads((run_dir / "result.json").read_text(encoding="utf-8")).get("trials", {})
              if (run_dir / "result.json").is_file() else {})
    exact: dict[tuple[str, float, float], float] = {}
    same = (saved.get("search", {}).get("seed") == config.search.seed
            and saved.get("scheduler") == config.model_dump(mode="json").get("scheduler"))
    by_trial: dict[str, float] = {}
    pairs: list[tuple[Mapping[str, Any], float]] = []
    for r in sorted(records, key=lambda r: (r.trial_id, r.budget)):
        if r.status != "completed" or r.budget_trained <= 0:
            continue
        start = by_trial.get(r.trial_id, 0.0)
        by_trial[r.trial_id] = r.budget
        cfg = trials.get(r.trial_id)
        if cfg is None:
            continue
        if same:
            exact[(_key(cfg), start, r.budget)] = r.wall_seconds
        pairs.append((cfg, r.wall_seconds / r.budget_trained))
    if not pairs:
        raise PlanError(f"--costs-from {run_dir}: its ledger holds no completed trial to learn durations from")
    model = CostModel(config.search_space()).fit(pairs)

    def seconds(cfg: Mapping[str, Any], start: float, stop: float) -> float:
        hit = exact.get((_key(cfg), start, stop))
        if hit is not None:
            return hit
        return float(model.predict([cfg])[0]) * max(0.0, stop - start)

    return seconds


def durations_for(config: SweepConfig, costs_from: str | None = None,
                  seconds_per_unit: float | None = None) -> tuple[Durations, str]:
    """The first source of trial durations available, and its name."""
    trainable = config.trainable_class()(config.trainable.options)
    probe = config.search_space().sample(__import__("numpy").random.default_rng(0))
    lo, hi = config.budget_range()
    if trainable.estimate_gpu_seconds(probe, 0, hi) is not None:
        def modelled(cfg: Mapping[str, Any], start: float, stop: float) -> float:
            # The model's seconds are the trial's wall clock, whatever share of a GPU it holds: the small
            # models that are packed several to a GPU do not saturate one (billing is wall x GPUs held).
            return float(trainable.estimate_gpu_seconds(cfg, start, stop) or 0.0)

        return modelled, "the trainable's cost model"
    if costs_from is not None:
        return _ledger_durations(config, Path(costs_from)), f"the ledger of {costs_from}"
    if seconds_per_unit is not None:
        if not seconds_per_unit > 0:
            raise PlanError(f"--seconds-per-unit: {seconds_per_unit:g} must be above 0")
        return (lambda cfg, start, stop: seconds_per_unit * max(0.0, stop - start)), \
            f"{seconds_per_unit:g} s per budget unit"
    raise PlanError(f"trainable {config.trainable.kind!r} has no cost model: give durations with --costs-from RUN_DIR "
                    "(a previous run's ledger) or --seconds-per-unit S, or use a trainable with a cost model")


def _past_run(costs_from: str | None) -> tuple[list[SpendRecord], dict[str, Any], list[HoldSpan]] | None:
    """A previous run's ledger records, result.json and workers' holds, where ``costs_from`` has both files."""
    if costs_from is None:
        return None
    run_dir = Path(costs_from)
    if not (run_dir / "result.json").is_file():
        return None
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    ledger = Ledger(run_dir / "ledger.jsonl", replay=True) if (run_dir / "ledger.jsonl").is_file() else None
    if ledger is None:
        return [], result, []
    return [*ledger.records, *ledger.pending], result, [*ledger.holds.closed, *ledger.holds.open]


@dataclass(frozen=True)
class DriverCosts:
    """The driver's time the simulator charges (budgets.simulate), and where each figure came from."""

    stage_seconds: float
    stage_source: str
    dispatch_seconds: float
    dispatch_source: str
    setup_seconds: float | None  # None: one stage's charge
    # A Ray worker's start-up, held before its first trial, as the run's holds show it (None: the set-up's).
    worker_startup_seconds: float | None = None


def _given(flag: str, value: float | None) -> float | None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise PlanError(f"{flag}: {value:g} must be zero or more")
    return value


def driver_costs_for(costs_from: str | None = None, *, stage_seconds: float | None = None,
                     dispatch_seconds: float | None = None, setup_seconds: float | None = None) -> DriverCosts:
    """Each of the three charges as given on the command line, else measured in the ``costs_from`` run (read
    once), else the default: :data:`DEFAULT_STAGE_SECONDS` a stage, no dispatcher, set-up as one stage."""
    stage, dispatch, setup = (_given("--stage-seconds", stage_seconds), _given("--dispatch-seconds", dispatch_seconds),
                              _given("--setup-seconds", setup_seconds))
    measured_stage = measured_dispatch = measured_setup = measured_startup = None
    past = _past_run(costs_from)
    if past is not None:
        records, result, holds = past
        measured_startup = worker_startup(records, holds)
        schedule, elapsed = result.get("schedule", []), float(result.get("elapsed_seconds") or 0.0)
        slots = int((result.get("utilisation") or {}).get("slots") or 0)
        # Only what was not given: fitting the dispatcher replays the run's stages in the simulator.
        measured_stage = stage_overhead(records, schedule, elapsed) if stage is None else None
        measured_dispatch = dispatch_overhead(records, schedule, elapsed, slots) if dispatch is None else None
        measured_setup = setup_overhead(records, schedule, elapsed) if setup is None else None
    measured = f"measured in {costs_from}"

    def pick(given: float | None, flag: str, found: float | None, default: float, fallback: str) -> tuple[float, str]:
        if given is not None:
            return given, flag
        return (found, measured) if found is not None else (default, fallback)

    stage_value, stage_source = pick(stage, "--stage-seconds", measured_stage, DEFAULT_STAGE_SECONDS,
                                     "the thread runtime's default")
    dispatch_value, dispatch_source = pick(dispatch, "--dispatch-seconds", measured_dispatch, 0.0, "none given")
    return DriverCosts(stage_value, stage_source, dispatch_value, dispatch_source,
                       setup if setup is not None else measured_setup,
                       # --setup-seconds given stands for the workers' start-up too, as before this was measured.
                       measured_startup if setup is None else None)


def _scores_for(config: SweepConfig) -> tuple[Scores, bool]:
    if config.trainable.kind not in SURROGATES:
        return (lambda cfg, budget: 0.0), False
    from rungflow.tasks.trainables.base import TrainRequest

    options = {k: v for k, v in config.trainable.options.items() if not k.startswith(("sleep", "hang", "allocate"))}
    trainable = config.trainable_class()(options)

    def score(cfg: Mapping[str, Any], budget: float) -> float | None:
        try:
            outcome = trainable.train(TrainRequest(trial_id="sim", config=cfg, budget=budget, seed=config.search.seed))
        except Exception:
            return None
        return outcome.score if math.isfinite(outcome.score) else None

    return score, True


def simulate(config: SweepConfig, *, workers: int, durations: Durations,
             scheduler_kind: str | None = None, stage_seconds: float = DEFAULT_STAGE_SECONDS,
             dispatch_seconds: float = 0.0, setup_seconds: float | None = None, against_one_gpu: bool = True,
             scheduler_options: Mapping[str, Any] | None = None, scores: Scores | None = None,
             worker_startup_seconds: float | None = None) -> dict[str, Any]:
    """Run ``config``'s sweep on ``workers`` simulated GPUs; the figures ``--json`` prints.

    ``against_one_gpu``: also run it on one GPU for the speed-up (``speedup_over_one_gpu``); ``scheduler_options``
    override the scheduler's (e.g. ``max_open_brackets``); ``scores`` replaces the trainable's own answers (a bench
    reading whole learning curves at once); ``worker_startup_seconds``: a Ray worker's start-up, held, and waited for
    by the trial a new worker runs (None: the set-up's).
    """
    out = _simulate_once(config, workers=workers, durations=durations, scheduler_kind=scheduler_kind,
                         stage_seconds=stage_seconds, dispatch_seconds=dispatch_seconds, setup_seconds=setup_seconds,
                         scheduler_options=scheduler_options, scores=scores,
                         worker_startup_seconds=worker_startup_seconds)
    one = out
    if against_one_gpu and workers != 1:
        one = _simulate_once(config, workers=1, durations=durations, scheduler_kind=scheduler_kind,
                             stage_seconds=stage_seconds, dispatch_seconds=dispatch_seconds,
                             setup_seconds=setup_seconds, scheduler_options=scheduler_options, scores=scores,
                             worker_startup_seconds=worker_startup_seconds)
    if against_one_gpu:
        out["one_gpu_wall_seconds"] = one["wall_seconds"]
        out["speedup_over_one_gpu"] = one["wall_seconds"] / out["wall_seconds"] if out["wall_seconds"] > 0 else None
    out["warning"] = fill_warning(out, config)
    return out


def _simulate_once(config: SweepConfig, *, workers: int, durations: Durations, scheduler_kind: str | None,
                   stage_seconds: float, dispatch_seconds: float, setup_seconds: float | None,
                   scheduler_options: Mapping[str, Any] | None, scores: Scores | None = None,
                   worker_startup_seconds: float | None = None) -> dict[str, Any]:
    if workers < 1:
        raise PlanError(f"--workers: {workers} must be at least 1")
    kind = scheduler_kind or config.scheduler.kind
    gpus = config.runtime.gpus_per_trial
    slots = max(1, int(math.floor(workers / gpus + 1e-9))) if gpus > 0 else workers
    lo, hi = config.budget_range()
    mode = config.mode()
    clock = VirtualClock()
    settings = config.budget.settings()
    ledger = Ledger(price_per_gpu_hour=settings.price_per_gpu_hour, price_per_cpu_hour=settings.price_per_cpu_hour,
                    clock=clock)
    scheduler = make_scheduler(kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                               integer=config.trainable_class().integer_budget, iterations=config.scheduler.iterations,
                               num_trials=config.search.num_trials, mode=mode,
                               **{**(config.scheduler_options() if kind == config.scheduler.kind else {}),
                                  **(scheduler_options or {})})
    import dataclasses

    settings = dataclasses.replace(settings, brackets_per_iteration=scheduler.brackets_per_iteration)
    controller = BudgetController(settings, mode=mode, clock=clock, started_at=0.0, full_budget=hi)
    searcher = make_searcher(
        config.search.algorithm, config.search_space(), seed=config.search.seed, mode=mode, max_budget=hi,
        grid_points=config.search.grid_points, random_fraction=config.search.random_fraction,
        min_points_in_model=config.search.min_points_in_model, cost_aware=config.search.cost_aware,
    )
    driver = SweepDriver(searcher, scheduler, ledger, controller, mode, lo, hi, seed=config.search.seed,
                         gpus_per_trial=gpus, cpus_per_trial=config.runtime.cpus_per_trial, clock=clock)
    scores, surrogate = (scores, True) if scores is not None else _scores_for(config)
    startup = worker_startup_seconds if worker_startup_seconds is not None else (
        stage_seconds if setup_seconds is None else setup_seconds)
    release_after = config.runtime.release_idle_after if config.runtime.kind == "ray" else RELEASE_NEVER
    grace = idle_grace(release_after, startup)
    executor = SimulatedExecutor(slots, clock, durations, scores, ledger, gpus_per_trial=gpus,
                                 cpus_per_trial=config.runtime.cpus_per_trial, stage_seconds=stage_seconds,
                                 dispatch_seconds=dispatch_seconds, setup_seconds=setup_seconds,
                                 release_idle_after=grace,
                                 worker_startup_seconds=startup if config.runtime.kind == "ray" else 0.0)
    driver.run(executor)
    # The stopping variant spends differently from the default promotion: the line names which ran.
    variant = getattr(scheduler, "asha_type", None)
    out = summarise(driver, executor, kind if variant in (None, "promotion") else f"{kind} {variant}", workers,
                    surrogate)
    worker_hours_held = _held_worker_seconds(executor, grace, startup) / 3600
    out["gpu_hours_held"] = worker_hours_held * gpus
    # The same hold per worker, whatever its share: what a CPU-only sweep's workers held, comparable with a real
    # run's ledger where no GPU is billed.
    out["worker_hours_held"] = worker_hours_held
    out["stage_seconds"] = stage_seconds if scheduler.synchronous else 0.0
    out["dispatch_seconds"] = dispatch_seconds
    out["setup_seconds"] = stage_seconds if setup_seconds is None else setup_seconds
    out["worker_startup_seconds"] = startup
    return out


def _held_worker_seconds(executor: SimulatedExecutor, grace: float | None, startup: float) -> float:
    """Seconds the simulated workers held their shares, busy or idle: each slot is a pool worker, given back after
    ``grace`` idle (None: threads keep theirs to the end)."""
    end = max((b.finished_at for b in executor.busy), default=0.0)
    by_slot: dict[int, list[tuple[float, float]]] = {}
    for b in executor.busy:
        by_slot.setdefault(b.slot, []).append((b.started_at, b.finished_at))
    return sum(held_seconds(jobs, grace=grace, startup=startup, end=end) for jobs in by_slot.values())


def _barrier_idle(driver: SweepDriver, executor: SimulatedExecutor) -> float:
    """Slot-seconds idle while a synchronous stage was open (slots waiting for a rung's last trials with nothing
    else to hand out); stages of brackets running side by side overlap, and each moment counts once."""
    spans = [(rung["started_at"], rung["finished_at"]) for bracket in driver.schedule
             for rung in bracket.get("rungs", []) if "started_at" in rung]
    return idle_within(spans, executor.busy, executor.slots)


def summarise(driver: SweepDriver, executor: SimulatedExecutor, kind: str, workers: int,
              surrogate: bool) -> dict[str, Any]:
    # To the last result, as a run's result.json counts it (the gate after the last rung buys nothing).
    wall = max((b.finished_at for b in executor.busy), default=0.0)
    capacity = executor.slots * wall
    busy = sum(b.finished_at - b.started_at for b in executor.busy)
    sign = 1.0 if driver.mode == "max" else -1.0
    best, best_curve = None, []
    for r in sorted(driver.ledger.records, key=lambda r: r.finished_at):
        if r.ok and (best is None or sign * r.score > sign * best):  # type: ignore[operator]
            best = r.score
            best_curve.append({"wall_seconds": r.finished_at, "gpu_hours": None, "score": best})
    out: dict[str, Any] = {
        "scheduler": kind,
        "workers": workers,
        "slots": executor.slots,
        "wall_seconds": wall,
        "gpu_hours": driver.ledger.gpu_hours,
        "cpu_hours": driver.ledger.cpu_hours,
        "cost": driver.ledger.cost,
        "utilisation": busy / capacity if capacity > 0 else 0.0,
        "barrier_idle_fraction": _barrier_idle(driver, executor) / capacity if capacity > 0 else 0.0,
        "critical_path_seconds": critical_path(
            executor.busy, asynchronous=not driver.scheduler.synchronous,
            brackets_in_sequence=getattr(driver.scheduler, "max_open_brackets", None) == 1),
        "max_open_brackets": getattr(driver.scheduler, "max_open_brackets", None),
        "trials": len(driver.trials),
        "events": [{"trial_id": r.trial_id, "bracket": r.bracket, "rung": r.rung, "budget": r.budget,
                    "status": str(r.status), "score": r.score, "gpu_hours": r.gpu_hours, "started_at": r.started_at,
                    "finished_at": r.finished_at} for r in driver.ledger.records],
        "stop_reason": driver.stop_reason,
        "stop_detail": driver.stop_detail,
    }
    if surrogate:
        out["best_score"] = best
        out["best_over_time"] = best_curve
    return out


def fill_warning(result: Mapping[str, Any], config: SweepConfig) -> str | None:
    """One line when the sweep leaves more than 1 − FILLED_UTILISATION of ``result``'s slots idle on more than one
    GPU, naming the config fields that would fill them (None: it fills them)."""
    workers, utilisation = result["workers"], result["utilisation"]
    if workers <= 1 or utilisation >= FILLED_UTILISATION or not result["wall_seconds"] > 0:
        return None
    wall, path = result["wall_seconds"], result.get("critical_path_seconds") or 0.0
    kind = result["scheduler"]
    more = "scheduler.iterations" if kind in ("hyperband", "sha") else "search.num_trials"
    why = (f"its critical path ({path / 3600:.2f} h, the longest chain of trials that must run in order) is "
           f"{path / wall:.0%} of its {wall / 3600:.2f} h wall-clock" if path >= 0.5 * wall else
           f"{result['trials']} trials leave {result['slots']} slots without work between barriers")
    first = ("brackets run one at a time (scheduler.max_open_brackets: 1, leave it unset to fill free slots); "
             if result.get("max_open_brackets") == 1 else "")
    return (f"warning: {kind} cannot fill {workers} GPUs ({result['slots']} slots, utilisation {utilisation:.0%}): "
            f"{why}; {first}more trials ({more}), shorter chains (scheduler.max_budget, scheduler.eta) or fewer "
            "slots (runtime.gpus_per_trial) fill them")


def compare(config: SweepConfig, *, workers: int, durations: Durations, kinds: tuple[str, ...] = ("hyperband", "asha"),
            stage_seconds: float = DEFAULT_STAGE_SECONDS, dispatch_seconds: float = 0.0,
            setup_seconds: float | None = None) -> dict[str, dict[str, Any]]:
    """The same config under each scheduler in ``kinds``, side by side."""
    return {k: simulate(config, workers=workers, durations=durations, scheduler_kind=k, stage_seconds=stage_seconds,
                        dispatch_seconds=dispatch_seconds, setup_seconds=setup_seconds) for k in kinds}


def describe(result: Mapping[str, Any], unit: Callable[[float], str] | None = None) -> str:
    """One line per simulation for the terminal, and the fill warning on a line of its own where there is one."""
    best, speedup = result.get("best_score"), result.get("speedup_over_one_gpu")
    held = result.get("gpu_hours_held")
    line = (f"{result['scheduler']:>9}: {result['wall_seconds'] / 3600:.2f} h wall, {result['gpu_hours']:.2f} GPU-h "
            f"trained" + ("" if held is None else f" ({held:.2f} held)") + ", "
            f"{result['cost']:.2f} cost, utilisation {result['utilisation']:.0%}, idle at barriers "
            f"{result['barrier_idle_fraction']:.0%}, critical path {result['critical_path_seconds'] / 3600:.2f} h"
            + ("" if speedup is None else f", {speedup:.1f}x the speed of 1 GPU")
            + f", {result['trials']} trials, stop {result['stop_reason']}"
            + ("" if best is None else f", best {best:.4g}"))
    return line if not result.get("warning") else f"{line}\n{' ' * 11}{result['warning']}"
