"""The sweep flow: Hyperband brackets as rung stages of Prefect task runs, under the budget controller.

Synchronous schedulers (fifo, sha, hyperband) run each rung as a stage:
``search`` → ``train`` mapped over the rung's trials → ``gate`` → ``promote``.
ASHA runs without barriers: whenever a trial finishes, the scheduler promotes or starts another.
The controller is asked before every stage (and checks hard caps as each trial finishes);
everything is appended to the ledger as it happens, and ``result.json`` is rewritten after each
stage so a running sweep can be reported on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from prefect import flow

from budgets.controller import BudgetController, BudgetDecision, StopReason
from budgets.ledger import Ledger, SpendRecord, TrialStatus
from budgets.schedulers import ASHAScheduler, SyncScheduler, TrialScore, make_scheduler
from budgets.searchers import Observation, Searcher, make_searcher
from rungflow.config import SweepConfig, validate
from tasks.artifacts import SweepArtifacts
from tasks.runtime import Runtime, make_runtime
from tasks.stages import gate_trials, promote_survivors, suggest_trials
from tasks.train import TrialResult, TrialSpec, train_trial

__all__ = ["Sweep", "sweep_flow", "run_sweep", "set_reporter"]

log = logging.getLogger("rungflow.sweep")

_reporter: Callable[[str, dict[str, Any]], None] | None = None


def set_reporter(callback: Callable[[str, dict[str, Any]], None] | None) -> None:
    """Install a callback for progress events ("planned", "result", "decision", "done"), e.g. a progress bar."""
    global _reporter
    _reporter = callback


def _report(kind: str, **data: Any) -> None:
    if _reporter is not None:
        _reporter(kind, data)


@dataclass
class Sweep:
    """The state of one sweep in the flow process: searcher, scheduler, ledger, controller, trials."""

    config: SweepConfig
    run_dir: Path
    searcher: Searcher
    scheduler: SyncScheduler | ASHAScheduler
    ledger: Ledger
    controller: BudgetController
    mode: str
    min_budget: float
    max_budget: float
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    trial_bracket: dict[str, int] = field(default_factory=dict)
    schedule: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    stop_detail: str = ""
    runtime_note: str = ""
    slots: int = 1
    artifacts: Any = None
    started_at: float = field(default_factory=time.time)
    _stage_started: dict[str, float] = field(default_factory=dict)
    _last_write: float = 0.0

    @classmethod
    def create(cls, config: SweepConfig, run_dir: str | Path | None = None, clock: Callable[[], float] = time.time) -> "Sweep":
        run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        lo, hi = config.budget_range()
        integer = config.trainable_class().integer_budget
        mode = config.mode()
        scheduler = make_scheduler(
            config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta, integer=integer,
            iterations=config.scheduler.iterations, num_trials=config.search.num_trials, mode=mode,
        )
        searcher = make_searcher(
            config.search.algorithm, config.search_space(), seed=config.search.seed, mode=mode, max_budget=hi,
            grid_points=config.search.grid_points, random_fraction=config.search.random_fraction,
            min_points_in_model=config.search.min_points_in_model,
        )
        settings = config.budget.settings()
        ledger = Ledger(run_dir / "ledger.jsonl", price_per_gpu_hour=settings.price_per_gpu_hour)
        controller = BudgetController(settings, mode=mode, clock=clock)
        (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
        return cls(config, run_dir, searcher, scheduler, ledger, controller, mode, lo, hi)

    # --- bookkeeping ------------------------------------------------------------------------------
    def new_trial(self, config: dict[str, Any], bracket: int) -> str:
        trial_id = f"t{len(self.trials):04d}"
        self.trials[trial_id] = config
        self.trial_bracket[trial_id] = bracket
        return trial_id

    def spec(self, trial_id: str, bracket: int, rung: int, budget: float, resume_from_rung: int | None) -> TrialSpec:
        rt = self.config.runtime
        return TrialSpec(
            trial_id=trial_id,
            config=self.trials[trial_id],
            bracket=bracket,
            rung=rung,
            budget=budget,
            trainable_kind=self.config.trainable.kind,
            trainable_options=self.config.trainable.options,
            checkpoint_dir=self.config.storage.checkpoint_location(self.run_dir),
            resume_from_rung=resume_from_rung,
            gpus=rt.gpus_per_trial,
            seed=self.config.search.seed,
        )

    def charge(self, result: TrialResult) -> SpendRecord:
        record = SpendRecord(
            trial_id=result.trial_id, bracket=result.bracket, rung=result.rung, budget=result.budget,
            score=result.score, status=result.status, gpu_seconds=result.gpu_seconds, gpus=result.gpus,
            cost=self.ledger.cost_of(result.gpu_seconds), started_at=result.started_at,
            finished_at=result.finished_at, budget_trained=result.budget_trained, attempt=result.attempt,
            error=result.error, metrics=result.metrics, wall_seconds=result.wall_seconds,
            trainable_seconds=result.trainable_seconds, worker=result.worker,
        )
        self.ledger.charge(record)
        _report("result", record=record, gpu_hours=self.ledger.gpu_hours, cost=self.ledger.cost)
        return record

    def observation(self, result: TrialResult) -> Observation:
        return Observation(result.trial_id, self.trials[result.trial_id], result.budget, result.score if result.ok else None)

    def predicted_gpu_hours(self, units: float) -> float | None:
        """GPU-hours for ``units`` budget units at the mean cost per unit measured so far."""
        trained = [r for r in self.ledger.records if r.budget_trained > 0]
        if not trained:
            return None
        per_unit = sum(r.gpu_seconds for r in trained) / sum(r.budget_trained for r in trained)
        return per_unit * units / 3600.0

    def decide(self, stage: str, units: float) -> BudgetDecision:
        decision = self.controller.check_before_stage(
            self.ledger, stage=stage, next_stage_gpu_hours=self.predicted_gpu_hours(units)
        )
        self._record_decision(decision)
        return decision

    def _record_decision(self, decision: BudgetDecision) -> None:
        data = decision.to_json()
        self.decisions.append(data)
        self.ledger.record_decision(data)
        _report("decision", decision=data)
        if decision.stop and self.stop_reason is None:
            self.stop_reason, self.stop_detail = decision.reason, decision.detail

    # --- running trials ---------------------------------------------------------------------------
    def run_stage(self, runtime: Runtime, specs: list[TrialSpec]) -> list[TrialResult]:
        """Run specs concurrently; after each result, check the hard caps and stop the rest if one is hit."""
        if not specs:
            return []
        done: "queue.Queue[Any]" = queue.Queue()
        with runtime.trial_resources():
            futures = train_trial.map(specs)
        pending = {}
        for future, spec in zip(futures, specs):
            pending[id(future)] = (future, spec)
            future.add_done_callback(lambda _f, fut=future: done.put(fut))
        results: list[TrialResult] = []
        cancelled = False
        while pending:
            future = done.get()
            if id(future) not in pending:
                continue
            _, spec = pending.pop(id(future))
            results.append(self._result_of(future, spec))
            self.charge(results[-1])
            if not cancelled and self.controller.settings.on_cap == "cancel":
                check = self.controller.check_in_flight(self.ledger, stage=f"bracket {spec.bracket} rung {spec.rung}")
                if check.stop:
                    self._record_decision(check)
                    cancelled = True
                    results.extend(self._cancel(runtime, pending))
                    pending.clear()
        return results

    def _result_of(self, future: Any, spec: TrialSpec) -> TrialResult:
        try:
            return future.result()
        except Exception as exc:  # the worker died or the task runner failed: bill nothing we cannot see
            now = time.time()
            return TrialResult(
                trial_id=spec.trial_id, bracket=spec.bracket, rung=spec.rung, budget=spec.budget, score=None,
                status=TrialStatus.FAILED, gpu_seconds=0.0, gpus=spec.gpus, started_at=now, finished_at=now,
                wall_seconds=0.0, trainable_seconds=0.0, budget_trained=0.0, error=f"{type(exc).__name__}: {exc}",
            )

    def _cancel(self, runtime: Runtime, pending: dict[int, tuple[Any, TrialSpec]]) -> list[TrialResult]:
        """Cancel in-flight trials and bill each for the time it held its GPUs since the stage began."""
        results = []
        now = time.time()
        for future, spec in pending.values():
            ref = getattr(future, "wrapped_future", None)
            if runtime.kind == "ray" and ref is not None:
                import ray

                ray.cancel(ref, force=True)
            elif ref is not None:
                # A thread that already runs cannot be stopped; this only drops queued ones.
                ref.cancel()
            started = self._stage_started.get(spec.trial_id, now)
            wall = max(0.0, now - started)
            result = TrialResult(
                trial_id=spec.trial_id, bracket=spec.bracket, rung=spec.rung, budget=spec.budget, score=None,
                status=TrialStatus.CANCELLED, gpu_seconds=wall * spec.gpus, gpus=spec.gpus, started_at=started,
                finished_at=now, wall_seconds=wall, trainable_seconds=0.0, budget_trained=0.0,
                error="cancelled: a hard budget cap was reached mid-stage",
            )
            self.charge(result)
            results.append(result)
        return results

    # --- drivers ----------------------------------------------------------------------------------
    def run_synchronous(self, runtime: Runtime) -> None:
        assert isinstance(self.scheduler, SyncScheduler)
        for bracket in self.scheduler.brackets:
            first = bracket.rungs[0]
            if self.decide(f"bracket {bracket.index} rung 0", first.num_trials * first.budget).stop:
                return
            configs = suggest_trials(self.searcher, first.num_trials, bracket.index)
            if not configs:
                self.stop_reason, self.stop_detail = str(StopReason.SCHEDULE_COMPLETE), "the search space is exhausted"
                return
            alive = [self.new_trial(c, bracket.index) for c in configs]
            bracket_log: dict[str, Any] = {"bracket": bracket.index, "s": bracket.s, "rungs": []}
            self.schedule.append(bracket_log)
            previous_budget = 0.0
            for position, rung in enumerate(bracket.rungs):
                if position > 0:
                    units = len(alive) * (rung.budget - previous_budget)
                    if self.decide(f"bracket {bracket.index} rung {rung.index}", units).stop:
                        return
                specs = [
                    self.spec(t, bracket.index, rung.index, rung.budget, bracket.rungs[position - 1].index if position else None)
                    for t in alive
                ]
                stage_start = time.time()
                self._stage_started = {s.trial_id: stage_start for s in specs}
                results = self.run_stage(runtime, specs)
                bracket_log["rungs"].append(
                    {"rung": rung.index, "budget": rung.budget, "num_trials": len(specs), "planned_trials": rung.num_trials,
                     "started_at": stage_start, "finished_at": time.time()}
                )
                observations = [self.observation(r) for r in results if r.status != TrialStatus.CANCELLED]
                last = position == len(bracket.rungs) - 1
                keep = 0 if last else bracket.rungs[position + 1].num_trials
                scores = [TrialScore(r.trial_id, r.score if r.ok else None) for r in results]
                decision = gate_trials(scores, keep, self.mode, bracket.index, rung.index)
                alive = promote_survivors(self.searcher, observations, decision, bracket.index, rung.index)
                self.write_result()
                if self.stop_reason is not None:
                    return
                previous_budget = rung.budget
                if not alive:
                    break

    def run_asynchronous(self, runtime: Runtime) -> None:
        scheduler = self.scheduler
        assert isinstance(scheduler, ASHAScheduler)
        self.schedule.append({"bracket": 0, "s": len(scheduler.budgets) - 1, "asynchronous": True,
                              "rungs": [{"rung": i, "budget": b} for i, b in enumerate(scheduler.budgets)]})
        done: "queue.Queue[Any]" = queue.Queue()
        in_flight: dict[int, tuple[Any, TrialSpec]] = {}
        last_rung_of: dict[str, int] = {}
        checks_every = max(1, runtime.slots)
        finished = 0
        stopping = False
        while True:
            if not stopping and finished % checks_every == 0 and (finished or not in_flight):
                units = runtime.slots * scheduler.budgets[0]
                if self.decide(f"asha after {finished} results", units).stop:
                    stopping = True
            while not stopping and len(in_flight) < runtime.slots:
                job = scheduler.next_job()
                if job is None:
                    break
                if job.trial_id is None:
                    configs = self.searcher.suggest(1)
                    if not configs:
                        scheduler.num_trials = scheduler.started - 1
                        break
                    trial_id = self.new_trial(configs[0], 0)
                    resume = None
                else:
                    trial_id, resume = job.trial_id, last_rung_of.get(job.trial_id)
                spec = self.spec(trial_id, 0, job.rung, job.budget, resume)
                self._stage_started[trial_id] = time.time()
                with runtime.trial_resources():
                    future = train_trial.submit(spec)
                in_flight[id(future)] = (future, spec)
                future.add_done_callback(lambda _f, fut=future: done.put(fut))
            if not in_flight:
                break
            future = done.get()
            if id(future) not in in_flight:
                continue
            _, spec = in_flight.pop(id(future))
            result = self._result_of(future, spec)
            self.charge(result)
            finished += 1
            last_rung_of[spec.trial_id] = spec.rung
            scheduler.on_result(spec.trial_id, spec.rung, result.score if result.ok else None)
            self.searcher.observe(self.observation(result))
            # Throttled by time: rewriting result.json and the artifacts is O(trials), per result it would be O(n²).
            if time.time() - self._last_write >= 2.0:
                self.write_result()
            if not stopping and self.controller.settings.on_cap == "cancel":
                check = self.controller.check_in_flight(self.ledger)
                if check.stop:
                    self._record_decision(check)
                    stopping = True
                    self._cancel(runtime, in_flight)
                    in_flight.clear()

    def run(self, runtime: Runtime) -> dict[str, Any]:
        self.runtime_note = runtime.note
        self.slots = runtime.slots
        _report("planned", units=self.scheduler.budget_units(), max_gpu_hours=self.config.budget.max_gpu_hours,
                name=self.config.name)
        try:
            if self.scheduler.synchronous:
                self.run_synchronous(runtime)
            else:
                self.run_asynchronous(runtime)
        except KeyboardInterrupt:
            self.stop_reason, self.stop_detail = str(StopReason.CANCELLED), "interrupted"
            self.write_result()
            raise
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = str(StopReason.SCHEDULE_COMPLETE), "every planned stage ran"
        result = self.write_result(final=True)
        _report("done", result=result)
        return result

    # --- result.json ------------------------------------------------------------------------------
    def write_result(self, final: bool = False) -> dict[str, Any]:
        from rungflow.results import build_result, write_json_atomic

        self._last_write = time.time()
        result = build_result(self, final=final)
        write_json_atomic(self.run_dir / "result.json", result)
        if self.artifacts is not None:
            self.artifacts.publish(result, self.config.budget.max_gpu_hours)
        return result


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.parameters.get("config", {}).get("name", "sweep"))


@flow(name="rungflow-sweep", flow_run_name=_flow_run_name, log_prints=True, persist_result=False)
def sweep_flow(config: dict[str, Any], run_dir: str | None = None, warm_start: dict[str, Any] | None = None) -> dict[str, Any]:
    """A budget-capped Hyperband/ASHA sweep; ``config`` is the validated sweep config as a dict.

    ``warm_start``: ``{"observations": [{trial_id, config, budget, score}], "enqueue": [config, ...]}``
    from an earlier study of the same problem (see :meth:`budgets.searchers.Searcher.warm_start`).
    """
    cfg = validate(config)
    sweep = Sweep.create(cfg, run_dir)
    if warm_start:
        sweep.searcher.warm_start(
            [Observation(o["trial_id"], o["config"], float(o["budget"]), o["score"]) for o in warm_start.get("observations", [])],
            enqueue=warm_start.get("enqueue", []),
        )
    sweep.artifacts = SweepArtifacts(cfg.name)
    rt = cfg.runtime
    runtime = make_runtime(rt.kind, address=rt.address, gpus_per_trial=rt.gpus_per_trial,
                           cpus_per_trial=rt.cpus_per_trial, max_concurrent=rt.max_concurrent)
    result = sweep.run(runtime)
    # After the sweep, not in the trial loop: refit the winner of a tabular sweep into run_dir/best_model.
    from tasks.best_model import save_best_model

    return save_best_model(cfg, str(sweep.run_dir), result)


def run_sweep(config: SweepConfig, run_dir: str | Path | None = None, warm_start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a sweep as a Prefect flow on the configured runtime; returns the result dict."""
    rt = config.runtime
    runtime = make_runtime(rt.kind, address=rt.address, gpus_per_trial=rt.gpus_per_trial,
                           cpus_per_trial=rt.cpus_per_trial, max_concurrent=rt.max_concurrent)
    flow_with_runner = sweep_flow.with_options(task_runner=runtime.task_runner)
    return flow_with_runner(config.model_dump(mode="json"), str(run_dir) if run_dir is not None else None, warm_start)
