"""The sweep flow: Hyperband brackets as rung stages of Prefect task runs, under the budget controller.

Synchronous schedulers (fifo, sha, hyperband) run each rung as a stage:
``search`` → ``train`` mapped over the rung's trials → ``gate`` → ``promote``.
ASHA runs without barriers: whenever a trial finishes, the scheduler promotes or starts another.
The controller is asked before every stage (and checks hard caps as each trial finishes);
everything is appended to the ledger as it happens, and ``result.json`` is rewritten after each
stage so a running sweep can be reported on.

Resume is replay: a sweep whose run directory already holds a ledger (``rungflow resume``, or a
retried Prefect flow run with the same ``run_dir``) runs the same deterministic driver from the
start. Whenever it is about to train a (trial, rung) whose latest attempt the ledger holds as
finished, it takes that record instead (:meth:`Sweep.replayed`), so the searcher, the scheduler and
the controller see the same inputs in the same order and continue as if nothing happened. An attempt
that was dispatched (a ``started`` marker) but never billed is billed once as ``interrupted``, from
the moment the trial began (its start stamp under ``attempts/``) to the dead process's last sign of
life (the newest of ``heartbeat``, touched every ``HEARTBEAT_SECONDS``, the ledger's last write and the
attempts' stamps) or to its own end stamp if it ended unbilled, then runs again as the next attempt
from its previous rung's checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from rungflow.budgets.controller import BudgetController, BudgetDecision, StopReason
from rungflow.budgets.forecast import Forecast, stage_forecast
from rungflow.budgets.ledger import Ledger, SpendRecord, StartMarker, TrialStatus
from rungflow.budgets.schedulers import ASHAScheduler, SyncScheduler, TrialScore, make_scheduler
from rungflow.budgets.searchers import Observation, Searcher, make_searcher
from rungflow.config import ConfigError, SweepConfig, resume_conflicts, validate
from rungflow.faults import fault_point
from rungflow.redact import install_log_redaction, redact, redact_json
from rungflow.tasks.artifacts import PrefectAPIUnreachable, SweepArtifacts
from rungflow.tasks.mlflow_tracking import TrackingError, open_tracker_for
from rungflow.tasks.optuna_study import StudyError, open_study_for
from rungflow.tasks.runtime import Runtime, make_runtime, use_runtime
from rungflow.tasks.stages import gate_trials, promote_survivors, suggest_trials
from rungflow.tasks.train import TrialResult, TrialSpec, attempt_stamp_name, train_trial
from rungflow.tasks.ui_sync import RecordedTaskRuns

__all__ = ["Sweep", "sweep_flow", "run_sweep", "set_reporter", "HEARTBEAT_SECONDS"]

# How often a running sweep touches RUN_DIR/heartbeat: a killed sweep's interrupted trials are
# billed up to its last sign of life, so at most this many seconds of their work go unbilled.
# RUNGFLOW_HEARTBEAT_SECONDS overrides it (the fault-injection tests beat faster than their kills).
HEARTBEAT_SECONDS = float(os.environ.get("RUNGFLOW_HEARTBEAT_SECONDS", "1.0"))

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
    recorded: RecordedTaskRuns | None = None
    started_at: float = field(default_factory=time.time)
    _last_write: float = 0.0
    # Resume: finished records still to replay per (trial, rung), with their position in the ledger.
    _replay: dict[tuple[str, int], SpendRecord] = field(default_factory=dict)
    _replay_order: dict[tuple[str, int], int] = field(default_factory=dict)
    _replayed: dict[tuple[str, int, int], SpendRecord] = field(default_factory=dict)
    resumed: bool = False
    _lock: Any = None
    study: Any = None  # the Optuna study the sweep is mirrored into (rungflow.tasks.optuna_study)
    tracker: Any = None  # the MLflow runs it is reported to, if tracking.mlflow is set

    @classmethod
    def create(cls, config: SweepConfig, run_dir: str | Path | None = None, clock: Callable[[], float] = time.time) -> Sweep:
        """A new sweep in ``run_dir``, or the resumption of the one whose ledger is already there."""
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
            min_points_in_model=config.search.min_points_in_model, cost_aware=config.search.cost_aware,
        )
        # A missing dataset fails the flow now, naming the fix, not as a sweep of failed trials.
        config.trainable_class()(config.trainable.options).check()
        settings = config.budget.settings()
        if isinstance(scheduler, SyncScheduler):
            settings = dataclasses.replace(settings, brackets_per_iteration=scheduler.brackets_per_iteration)
        ledger_path, config_path = run_dir / "ledger.jsonl", run_dir / "config.json"
        # One process per run directory: a second one would bill the first one's running trials as interrupted.
        lock = lock_run_dir(run_dir)
        resumed = ledger_path.exists()
        if resumed and config_path.exists():
            check_resumable(config_path, config)
        try:  # before anything is spent: a bad storage.optuna_url or another sweep's study is one line
            study = open_study_for(config, asynchronous=not scheduler.synchronous, max_budget=hi, mode=mode,
                                   run_dir=run_dir)
            tracker = open_tracker_for(config, asynchronous=not scheduler.synchronous, max_budget=hi)
        except (StudyError, TrackingError) as exc:
            lock.close()
            raise ConfigError(str(exc)) from None
        # Read before the ledger is opened: trimming a torn tail would move the ledger's mtime.
        last_alive = last_sign_of_life(run_dir) if resumed else None
        ledger = Ledger(ledger_path, price_per_gpu_hour=settings.price_per_gpu_hour,
                        price_per_cpu_hour=settings.price_per_cpu_hour, replay=resumed)
        now = clock()
        elapsed_before, first_start = 0.0, now
        if ledger.sessions and last_alive is not None:
            last = ledger.sessions[-1]
            elapsed_before = float(last.get("elapsed_before", 0.0)) + max(0.0, last_alive - float(last["started_at"]))
            first_start = float(ledger.sessions[0]["started_at"])
        # A deadline counts the time the sweep ran, not the time it lay dead before the resume.
        controller = BudgetController(settings, mode=mode, clock=clock, started_at=now - elapsed_before, full_budget=hi)
        write_json_atomic_config(config_path, config)
        sweep = cls(config, run_dir, searcher, scheduler, ledger, controller, mode, lo, hi, started_at=first_start)
        sweep.resumed, sweep._lock, sweep.study, sweep.tracker = resumed, lock, study, tracker
        if resumed:
            sweep._bill_interrupted(last_alive if last_alive is not None else now)
            for position, record in enumerate(ledger.pending):
                if ledger.finished(record.trial_id, record.rung) is record:
                    sweep._replay[(record.trial_id, record.rung)] = record
                    sweep._replay_order[(record.trial_id, record.rung)] = position
            log.info("resuming %s: %d records to replay", run_dir, len(sweep._replay))
        ledger.record_session({"started_at": now, "elapsed_before": elapsed_before, "pid": os.getpid(),
                               "resumed": resumed})
        return sweep

    def _bill_interrupted(self, last_alive: float) -> None:
        """Bill, once, each attempt that was dispatched but died with the process, for the time it ran."""
        for marker in self.ledger.unbilled_starts():
            began, ended = trial_stamps(self.attempts_dir, marker)
            # A trial that ended but was not billed before the crash is billed to its end, not beyond.
            until = min(last_alive, ended) if ended is not None else last_alive
            wall = max(0.0, until - began) if began is not None else 0.0
            cpus = self.config.runtime.cpus_per_trial
            self.ledger.bill_pending(SpendRecord(
                trial_id=marker.trial_id, bracket=marker.bracket, rung=marker.rung, budget=marker.budget, score=None,
                status=TrialStatus.INTERRUPTED, gpu_seconds=wall * marker.gpus, gpus=marker.gpus,
                cpu_seconds=wall * cpus, cpus=cpus, cost=self.ledger.cost_of(wall * marker.gpus, wall * cpus), started_at=began if began is not None else marker.started_at,
                finished_at=max(until, began or 0.0), attempt=marker.attempt, wall_seconds=wall,
                error="interrupted: the sweep process died mid-trial; billed from the trial's start to the process's "
                      "last sign of life" if began is not None else "interrupted before the trial started: nothing billed",
            ))

    def close(self) -> None:
        """Let another process run this directory (the lock also goes with the process, however it dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def attempts_dir(self) -> Path:
        return self.run_dir / "attempts"

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
            cpus=rt.cpus_per_trial,
            seed=self.config.search.seed,
            attempt=self.ledger.next_attempt(trial_id, rung),
            attempt_dir=str(self.attempts_dir.resolve()),
        )

    def charge(self, result: TrialResult) -> SpendRecord:
        replayed = self._replayed.pop((result.trial_id, result.rung, result.attempt), None)
        if replayed is not None:
            # Already on disk: it joins the in-memory ledger where it stood before the crash.
            self.ledger.adopt(result.trial_id, result.rung, upto=replayed)
            _report("result", record=replayed, gpu_hours=self.ledger.gpu_hours, cost=self.ledger.cost)
            return replayed
        record = SpendRecord(
            trial_id=result.trial_id, bracket=result.bracket, rung=result.rung, budget=result.budget,
            score=result.score, status=result.status, gpu_seconds=result.gpu_seconds, gpus=result.gpus,
            cpu_seconds=result.cpu_seconds, cpus=self.config.runtime.cpus_per_trial,
            cost=self.ledger.cost_of(result.gpu_seconds, result.cpu_seconds), started_at=result.started_at,
            finished_at=result.finished_at, budget_trained=result.budget_trained, attempt=result.attempt,
            error=None if result.error is None else redact(result.error), metrics=result.metrics, wall_seconds=result.wall_seconds,
            trainable_seconds=result.trainable_seconds, worker=result.worker,
        )
        self.ledger.charge(record)
        _report("result", record=record, gpu_hours=self.ledger.gpu_hours, cost=self.ledger.cost)
        return record

    def observation(self, result: TrialResult) -> Observation:
        # GPU-seconds per budget unit actually trained (a promoted trial resumes, so only its new units count).
        cost = result.gpu_seconds / result.budget_trained if result.budget_trained > 0 and result.gpu_seconds > 0 else None
        return Observation(result.trial_id, self.trials[result.trial_id], result.budget,
                           result.score if result.ok else None, cost=cost)

    def predicted_gpu_hours(self, units: float) -> float | None:
        """GPU-hours for ``units`` budget units at the mean cost per unit measured so far."""
        trained = [r for r in self.ledger.records if r.budget_trained > 0]
        if not trained:
            return None
        per_unit = sum(r.gpu_seconds for r in trained) / sum(r.budget_trained for r in trained)
        return per_unit * units / 3600.0

    def decide(self, stage: str, units: float) -> BudgetDecision:
        settings = self.controller.settings
        forecast = None
        if settings.stop_rule == "forecast" and settings.min_gain_per_gpu_hour is not None:
            forecast = self.forecast(stage)
        match = re.fullmatch(r"bracket (\d+) rung \d+", stage)
        decision = self.controller.check_before_stage(
            self.ledger, stage=stage, next_stage_gpu_hours=self.predicted_gpu_hours(units),
            bracket=int(match.group(1)) if match else None,
            expected_gain=forecast.expected_gain if forecast is not None else None,
            forecast_gpu_hours=self.predicted_gpu_hours(forecast.budget_units) if forecast is not None else None,
            forecast_detail=forecast.detail if forecast is not None else "",
        )
        self._record_decision(decision)
        return decision

    def forecast(self, stage: str) -> Forecast | None:
        """The expected gain of the rest of the bracket that ``stage`` belongs to (None: no evidence yet).

        Synchronous stages are named "bracket B rung R" by :meth:`run_synchronous`; ASHA's forecast
        is for one more bracket's worth of fresh trials (see :func:`budgets.forecast.stage_forecast`).
        """
        position = None
        if not isinstance(self.scheduler, ASHAScheduler):
            match = re.fullmatch(r"bracket (\d+) rung (\d+)", stage)
            if match is None:
                return None
            position = (int(match.group(1)), int(match.group(2)))
        return stage_forecast(self.ledger.records, self.scheduler, position, mode=self.mode,  # type: ignore[arg-type]
                              top_k=self.controller.settings.top_k, seed=self.config.search.seed + self.controller.checks)

    def _record_decision(self, decision: BudgetDecision) -> None:
        data = decision.to_json()
        self.decisions.append(data)
        self.ledger.record_decision(data)
        _report("decision", decision=data)
        if decision.stop and self.stop_reason is None:
            self.stop_reason, self.stop_detail = decision.reason, decision.detail

    # --- resume (replay) -----------------------------------------------------------------------
    def replayed(self, spec: TrialSpec) -> TrialResult | None:
        """The result the ledger already holds for ``spec``'s (trial, rung), or None: it must run."""
        record = self._replay.pop((spec.trial_id, spec.rung), None)
        if record is None:
            return None
        self._replayed[record.key] = record
        return TrialResult(
            trial_id=record.trial_id, bracket=record.bracket, rung=record.rung, budget=record.budget,
            score=record.score, status=record.status, gpu_seconds=record.gpu_seconds, gpus=record.gpus,
            started_at=record.started_at, finished_at=record.finished_at, wall_seconds=record.wall_seconds,
            trainable_seconds=record.trainable_seconds, budget_trained=record.budget_trained, attempt=record.attempt,
            error=record.error, metrics=dict(record.metrics), worker=record.worker or "",
        )

    def dispatching(self, spec: TrialSpec) -> None:
        """Called just before a spec is submitted: its earlier, unfinished attempts join the ledger, then a marker."""
        self.ledger.adopt(spec.trial_id, spec.rung)
        self.ledger.start(StartMarker(spec.trial_id, spec.rung, spec.attempt, spec.bracket, spec.budget, spec.gpus,
                                      time.time()))

    def replay_stage(self, specs: list[TrialSpec]) -> tuple[list[TrialResult], list[TrialSpec], bool]:
        """Replay the stage's finished trials in ledger order: (their results, the specs still to run, stopped).

        The hard caps are checked after each, as the live stage does; if one stops the stage, the
        rest are cancelled as they were before the crash (their records, if any, are adopted).
        """
        found = [(r, s) for s in specs if (r := self.replayed(s)) is not None]
        if not found:
            return [], specs, False
        found.sort(key=lambda rs: self._replay_order.get((rs[0].trial_id, rs[0].rung), 0))
        results: list[TrialResult] = []
        done = {r.trial_id for r, _ in found}
        rest = [s for s in specs if s.trial_id not in done]
        for result, spec in found:
            self.charge(result)
            results.append(result)
            if self.controller.settings.on_cap == "cancel":
                check = self.controller.check_in_flight(self.ledger, stage=f"bracket {spec.bracket} rung {spec.rung}")
                if check.stop:
                    self._record_decision(check)
                    unreplayed = [(r, s) for r, s in found if r not in results]
                    for r, _ in unreplayed:  # billed already; their records stay as they were
                        self.charge(r)
                        results.append(r)
                    for s in rest:
                        self.ledger.adopt(s.trial_id, s.rung)
                        now = time.time()
                        results.append(TrialResult(
                            trial_id=s.trial_id, bracket=s.bracket, rung=s.rung, budget=s.budget, score=None,
                            status=TrialStatus.CANCELLED, gpu_seconds=0.0, gpus=s.gpus, started_at=now, finished_at=now,
                            wall_seconds=0.0, trainable_seconds=0.0, budget_trained=0.0, attempt=s.attempt,
                            error="cancelled: a hard budget cap was reached mid-stage"))
                    return results, [], True
        return results, rest, False

    # --- running trials ---------------------------------------------------------------------------
    def charge_all(self, result: TrialResult) -> None:
        """Bill the trial's lost attempts (each once) and then its final result."""
        for lost in result.lost_attempts:
            self.charge(lost)
        self.charge(result)

    def submit(self, spec: TrialSpec, done: queue.Queue[Any]) -> Any:
        """Start the spec's train task run (once the Prefect API has caught up); its future lands on ``done``."""
        if self.recorded is not None:
            self.recorded.wait_for_server()
        self.dispatching(spec)
        future = train_trial.submit(spec)
        future.add_done_callback(lambda _f: done.put(future))
        return future

    def run_stage(self, runtime: Runtime, specs: list[TrialSpec]) -> list[TrialResult]:
        """Run specs concurrently; after each result, check the hard caps and cancel the rest if one is hit."""
        if not specs:
            return []
        replayed, specs, stopped = self.replay_stage(specs)
        if stopped or not specs:
            return replayed
        done: queue.Queue[Any] = queue.Queue()
        waiting = deque(specs)
        pending: dict[int, tuple[Any, TrialSpec]] = {}
        # Submitted, not yet finished: enough to keep every slot busy while the next trials' task runs are set
        # up, and no more, so a 10,000-trial rung neither floods the Prefect API nor holds 10,000 futures.
        window = 2 * runtime.slots + 8

        def submit_next() -> None:
            spec = waiting.popleft()
            future = self.submit(spec, done)
            pending[id(future)] = (future, spec)

        while waiting and len(pending) < window:
            submit_next()
        fault_point("dispatch")
        results: list[TrialResult] = list(replayed)
        cancelling = False
        while pending:
            future = done.get()
            if id(future) not in pending:
                continue
            _, spec = pending.pop(id(future))
            results.append(self._result_of(future, spec))
            if self.recorded is not None:
                self.recorded.task_run_finished()
            self.charge_all(results[-1])
            if not cancelling and (pending or waiting) and self.controller.settings.on_cap == "cancel":
                check = self.controller.check_in_flight(self.ledger, stage=f"bracket {spec.bracket} rung {spec.rung}")
                if check.stop:
                    self._record_decision(check)
                    cancelling = True
                    # The runtime stops what it can; every trial still comes back (its task run Cancelled),
                    # billed for what it used; those not yet submitted come back at once.
                    runtime.cancel([s for _, s in pending.values()] + list(waiting), check.detail)
            while waiting and len(pending) < window:
                submit_next()
        return results

    def _result_of(self, future: Any, spec: TrialSpec) -> TrialResult:
        if isinstance(future, _Finished):
            return future.result()
        future.wait()
        try:
            data = future.state.result(raise_on_failure=False)
        except Exception as exc:
            data = exc
        if isinstance(data, TrialResult):
            return data
        # The task itself crashed (not the trainable: run_trial never raises): nothing to bill we can see.
        now = time.time()
        return TrialResult(
            trial_id=spec.trial_id, bracket=spec.bracket, rung=spec.rung, budget=spec.budget, score=None,
            status=TrialStatus.FAILED, gpu_seconds=0.0, gpus=spec.gpus, started_at=now, finished_at=now,
            wall_seconds=0.0, trainable_seconds=0.0, budget_trained=0.0,
            error=f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else f"train task returned {data!r}",
        )

    # --- drivers ----------------------------------------------------------------------------------
    def run_synchronous(self, runtime: Runtime) -> None:
        assert isinstance(self.scheduler, SyncScheduler)
        for bracket in self.scheduler.brackets:
            first = bracket.rungs[0]
            if self.decide(f"bracket {bracket.index} rung 0", first.num_trials * first.budget).stop:
                return
            configs = suggest_trials(self.searcher, first.num_trials, bracket.index)
            fault_point("search")
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
                fault_point("gate")
                alive = promote_survivors(self.searcher, observations, decision, bracket.index, rung.index)
                fault_point("promote")
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
        done: queue.Queue[Any] = queue.Queue()
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
                replayed = self.replayed(spec)
                if replayed is not None:
                    future: Any = _Finished(replayed)
                    future.add_done_callback(lambda _f, fut=future: done.put(fut))
                else:
                    future = self.submit(spec, done)
                in_flight[id(future)] = (future, spec)
            if not in_flight:
                break
            future = done.get()
            if id(future) not in in_flight:
                continue
            _, spec = in_flight.pop(id(future))
            result = self._result_of(future, spec)
            if self.recorded is not None and not isinstance(future, _Finished):
                self.recorded.task_run_finished()
            self.charge_all(result)
            fault_point("asha-result")
            finished += 1
            if result.status == TrialStatus.CANCELLED:
                continue
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
                    runtime.cancel([s for _, s in in_flight.values()], check.detail)

    def run(self, runtime: Runtime) -> dict[str, Any]:
        self.runtime_note = runtime.note
        self.slots = runtime.slots
        _report("planned", units=self.scheduler.budget_units(), max_gpu_hours=self.config.budget.max_gpu_hours,
                max_cost=self.config.budget.max_cost, max_cpu_hours=self.config.budget.max_cpu_hours, mode=self.mode,
                name=self.config.name)
        heartbeat = Heartbeat(self.run_dir / "heartbeat")
        try:
            with use_runtime(runtime):
                if self.scheduler.synchronous:
                    self.run_synchronous(runtime)
                else:
                    self.run_asynchronous(runtime)
        except KeyboardInterrupt:
            self.stop_reason, self.stop_detail = str(StopReason.CANCELLED), "interrupted"
            self.ledger.adopt_all()
            self.write_result()
            raise
        finally:
            heartbeat.stop()
            self.close()
        # What the resumed driver did not reach (a cap lowered on resume) was still billed: keep it.
        self.ledger.adopt_all()
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = str(StopReason.SCHEDULE_COMPLETE), "every planned stage ran"
        result = self.write_result(final=True)
        _report("done", result=result)
        return result

    # --- result.json ------------------------------------------------------------------------------
    def _sync_study(self, final: bool, result: dict[str, Any]) -> None:
        _sync_study_of(self, final, result)

    def write_result(self, final: bool = False) -> dict[str, Any]:
        from rungflow.results import build_result, write_json_atomic

        self._last_write = time.time()
        result = redact_json(build_result(self, final=final))
        write_json_atomic(self.run_dir / "result.json", result)
        self._sync_study(final, result)
        if self.artifacts is not None:
            try:
                self.artifacts.publish(result, self.config.budget.max_gpu_hours)
            except PrefectAPIUnreachable:
                # Stop spending where nobody can watch: result.json says why and holds every finished trial.
                if self.stop_reason is None:
                    self.stop_reason = str(StopReason.CANCELLED)
                    self.stop_detail = "the Prefect API stopped answering; the sweep stopped after the stage that was running"
                write_json_atomic(self.run_dir / "result.json", redact_json(build_result(self, final=True)))
                raise
        return result


def _sync_study_of(sweep: Sweep, final: bool, result: dict[str, Any]) -> None:
    # The ledger is the truth: a study database or tracking server blip is caught up at the next write.
    if sweep.study is not None:
        try:
            sweep.study.sync(sweep.ledger.records, sweep.trials, final=final)
        except Exception as exc:
            log.warning("Optuna study %r not updated (%s: %s); retried at the next result", sweep.study.study_name,
                        type(exc).__name__, redact(str(exc)).splitlines()[0][:200])
    if sweep.tracker is not None:
        try:
            extra: dict[str, Any] = {}
            if final:
                from rungflow.results import plot_anytime
                from rungflow.tasks.artifacts import summary_markdown

                extra = {"summary_markdown": summary_markdown(result),
                         "plot": plot_anytime(result, sweep.run_dir / "anytime.png")}
            sweep.tracker.sync(sweep.ledger.records, sweep.trials, final=final, **extra)
        except Exception as exc:
            log.warning("MLflow not updated (%s: %s); retried at the next result", type(exc).__name__,
                        redact(str(exc)).splitlines()[0][:200])


class _Finished:
    """A result replayed from the ledger, shaped like the Prefect future the ASHA loop waits on."""

    def __init__(self, result: TrialResult) -> None:
        self._result = result

    def result(self) -> TrialResult:
        return self._result

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


class Heartbeat:
    """Touches ``path`` every HEARTBEAT_SECONDS from a daemon thread: the sweep's last sign of life."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="rungflow-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            self.path.write_text(f"{time.time():.3f}\n")
        except OSError as exc:  # a full disk must not stop the sweep; resume then bills from the ledger's time
            log.warning("could not write heartbeat %s: %s", self.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._beat()

    def stop(self) -> None:
        self._stop.set()


def lock_run_dir(run_dir: Path) -> Any:
    """An exclusive ``flock`` on RUN_DIR/.lock, released when the file closes or the process dies (even by SIGKILL)."""
    import fcntl

    fh = (run_dir / ".lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise ConfigError(f"run directory {run_dir} is in use by a running sweep (pid {holder}); wait for it to end, "
                          "or pass another run directory") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def last_sign_of_life(run_dir: Path) -> float:
    """When the process that last ran the sweep was last seen alive: its newest heartbeat, ledger or start stamp."""
    paths = [run_dir / "heartbeat", run_dir / "ledger.jsonl", *(run_dir / "attempts").glob("*.started")]
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return max(times) if times else time.time()


def trial_stamps(attempts_dir: Path, marker: StartMarker) -> tuple[float | None, float | None]:
    """When the attempt began and ended training (run_trial stamps both); None where it did not get there."""
    path = attempts_dir / attempt_stamp_name(marker.trial_id, marker.rung, marker.attempt)
    try:
        times = [float(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return None, None
    return (times[0] if times else None), (times[1] if len(times) > 1 else None)


def check_resumable(config_path: Path, config: SweepConfig) -> None:
    """Refuse to resume a run directory with a config that would not replay the sweep that ran there."""
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config_path} cannot be read ({type(exc).__name__}); restore it or start a new sweep "
                          "with a new run directory") from None
    try:  # compare like with like: defaults filled in on both sides
        saved = validate(saved).model_dump(mode="json")
    except (ConfigError, TypeError):
        pass
    conflicts = resume_conflicts(saved, config.model_dump(mode="json"))
    if conflicts:
        raise ConfigError(redact(
            f"{config_path.parent} holds a sweep with a different {', '.join(conflicts)}; only budget.* and runtime.* "
            "may change when resuming: use a new run directory (--out) to run a different sweep"
        ))


def write_json_atomic_config(path: Path, config: SweepConfig) -> None:
    from rungflow.results import write_json_atomic

    write_json_atomic(path, config.model_dump(mode="json"))


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.parameters.get("config", {}).get("name", "sweep"))


# Each trial's Prefect task is a thread of the flow process that waits on the runtime, which bounds how many
# trials run at once; the pool only needs to be at least as wide as the widest cluster's slots.
TRIAL_THREADS = 256


@flow(name="rungflow-sweep", flow_run_name=_flow_run_name, log_prints=True, persist_result=False,
      task_runner=ThreadPoolTaskRunner(max_workers=TRIAL_THREADS))
def sweep_flow(config: dict[str, Any], run_dir: str | None = None, warm_start: dict[str, Any] | None = None,
               refit: bool = True) -> dict[str, Any]:
    """A budget-capped Hyperband/ASHA sweep; ``config`` is the validated sweep config as a dict.

    ``warm_start``: ``{"observations": [{trial_id, config, budget, score}], "enqueue": [config, ...]}``
    from an earlier study of the same problem (see :meth:`budgets.searchers.Searcher.warm_start`).
    ``refit=False`` skips refitting the winner into ``best_model/`` (a caller that may not need it).
    """
    install_log_redaction()
    cfg = validate(config)
    sweep = Sweep.create(cfg, run_dir)
    if warm_start:
        sweep.searcher.warm_start(
            [Observation(o["trial_id"], o["config"], float(o["budget"]), o["score"]) for o in warm_start.get("observations", [])],
            enqueue=warm_start.get("enqueue", []),
        )
    sweep.artifacts = SweepArtifacts(cfg.name)
    sweep.recorded = RecordedTaskRuns.for_current_flow_run(cfg.ui.max_unrecorded_task_runs)
    try:
        runtime = runtime_of(cfg)
    except BaseException:
        sweep.close()
        raise
    result = sweep.run(runtime)
    if not refit:
        return result
    # After the sweep, not in the trial loop: refit the winner of a tabular sweep into run_dir/best_model.
    from rungflow.tasks.best_model import save_best_model

    return save_best_model(cfg, str(sweep.run_dir), result)


def runtime_of(config: SweepConfig) -> Runtime:
    rt = config.runtime
    return make_runtime(rt.kind, address=rt.address, gpus_per_trial=rt.gpus_per_trial,
                        cpus_per_trial=rt.cpus_per_trial, max_concurrent=rt.max_concurrent,
                        trial_timeout=rt.trial_timeout, max_retries=rt.max_retries,
                        memory_per_trial_gb=rt.memory_per_trial_gb, working_dir=_function_folder(config))


def _function_folder(config: SweepConfig) -> str | None:
    """A training function's folder, which travels to a remote Ray cluster as the job's working directory."""
    options = config.trainable.options
    if config.trainable.kind == "function" and options.get("entrypoint") and options.get("base_dir"):
        return str(options["base_dir"])
    return None


def run_sweep(config: SweepConfig, run_dir: str | Path | None = None, warm_start: dict[str, Any] | None = None,
              refit: bool = True) -> dict[str, Any]:
    """Run a sweep as a Prefect flow on the configured runtime; returns the result dict."""
    return sweep_flow(config.model_dump(mode="json"), str(run_dir) if run_dir is not None else None, warm_start, refit)
