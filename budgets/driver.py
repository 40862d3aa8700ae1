"""The sweep loop as plain Python: scheduler, searcher and controller in, jobs out to an executor.

The driver asks the controller for a verdict before each stage, the scheduler for the next jobs,
the searcher for configurations, and hands each job to an :class:`Executor` (Prefect tasks on
Ray or threads in ``flows/sweep.py``; a simulated cluster on a virtual clock in
:mod:`budgets.simulate`). It owns the stop reasons and reads time only through its injected clock.

Resume is replay: when the ledger already holds a finished record for a (trial, rung) the driver is
about to run, that record is taken instead of running it (see ``flows/sweep.py``), so searcher,
scheduler and controller see the same inputs in the same order as before the crash.
"""

from __future__ import annotations

import heapq
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rungflow.budgets.bracket_loop import run_brackets
from rungflow.budgets.controller import BudgetController, BudgetDecision, StopReason
from rungflow.budgets.forecast import Forecast, stage_forecast
from rungflow.budgets.ledger import Ledger, SpendRecord, StartMarker, TrialStatus
from rungflow.budgets.monitor import MonitorLost
from rungflow.budgets.scheduling import AsyncScheduler, RungDecision, Scheduler, Stage, TrialScore
from rungflow.budgets.searchers import Observation, Searcher

__all__ = ["TrialJob", "Executor", "SweepDriver", "MAX_RUNTIME_FAILURES"]

# Trials in a row whose worker was lost (after the runtime's own retries) before the sweep stops as
# runtime_failed, instead of spending the rest of its schedule on a dead cluster.
MAX_RUNTIME_FAILURES = 5
# Between results, result.json, the UI's artifacts and the mirrors are refreshed at most this often: each refresh
# is O(trials), per result it would be O(n²). And at most PUBLISH_SHARE of the driver's time: a refresh that takes
# 0.3 s on a loaded machine waits 6 s, so sweeps of second-long trials do not spend their driver on their UI.
PUBLISH_EVERY_SECONDS = 2.0
PUBLISH_SHARE = 0.05


@dataclass(frozen=True)
class TrialJob:
    """One attempt of one trial at one rung, as the driver hands it to an executor."""

    trial_id: str
    config: Mapping[str, Any]
    bracket: int
    rung: int
    budget: float
    resume_from_rung: int | None = None
    attempt: int = 0
    # A scheduler's clone: the trial whose checkpoint at ``resume_from_rung`` this trial starts from.
    clone_from: str | None = None


class Executor(Protocol):
    """Where the driver's jobs run, and how its stages show (Prefect task runs, a simulated cluster)."""

    slots: int

    def suggest(self, searcher: Searcher, count: int, bracket: int) -> list[dict[str, Any]]:
        """Called at the start of a synchronous bracket: the searcher's proposals for its trials."""
        ...

    def ready(self) -> None:
        """Called before each job is dispatched: return once the executor can take it."""
        ...

    def start(self, job: TrialJob, notify: Callable[[Any], None]) -> Any:
        """Start ``job``; returns a handle, and calls ``notify(handle)`` (from any thread) once it finished."""
        ...

    def advance(self) -> None:
        """Called when the driver is about to wait for a result and none has arrived: a simulated cluster
        moves its clock to the next finish; a real one has nothing to do."""
        ...

    def collect(self, handle: Any, job: TrialJob) -> list[SpendRecord]:
        """The records of a finished job: attempts whose worker was lost (each billed once), then its outcome."""
        ...

    def cancel(self, jobs: Sequence[TrialJob], reason: str) -> None:
        """Stop these jobs: queued ones never start, running ones stop where the runtime can stop them."""
        ...

    def gate(self, scores: Sequence[TrialScore], keep: int, mode: str, bracket: int, rung: int) -> RungDecision:
        """Called at a synchronous rung's barrier: who goes on."""
        ...

    def promote(self, searcher: Searcher, observations: Sequence[Observation], decision: RungDecision,
                bracket: int, rung: int) -> list[str]:
        """Called after the gate: tell the searcher the rung's results, return the survivors."""
        ...

    def reached(self, point: str) -> None:
        """Called at the loop's named points ("search", "dispatch", "gate", "promote", "asha-result")."""
        ...

    def publish(self) -> None:
        """Called after each synchronous stage and every few seconds under ASHA: report the sweep so far.

        Raises :class:`MonitorLost` when the sweep may no longer run unwatched: the driver bills what is in flight,
        then lets it go on."""
        ...


def _next(done: queue.Queue[Any], executor: Executor) -> Any:
    if done.empty():
        executor.advance()
    return done.get()


def _score(record: Any) -> float | None:
    return record.score if record.status == TrialStatus.COMPLETED else None


@dataclass
class SweepDriver:
    """The state of one sweep's decisions: searcher, scheduler, ledger, controller, trials, stop reason."""

    searcher: Searcher
    scheduler: Scheduler
    ledger: Ledger
    controller: BudgetController
    mode: str
    min_budget: float
    max_budget: float
    seed: int = 0
    gpus_per_trial: float = 1.0
    cpus_per_trial: float = 1.0
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    trial_bracket: dict[str, int] = field(default_factory=dict)
    # Per trial: the trial it was cloned from (None: the searcher proposed it) and the budget it cloned at.
    lineage: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    stop_detail: str = ""
    slots: int = 1
    # Every time the driver reads comes from here, so a test or a simulated cluster can own time.
    clock: Callable[[], float] = time.time
    max_runtime_failures: int = MAX_RUNTIME_FAILURES
    _last_publish: float = 0.0
    _publish_seconds: float = 0.0  # what the last refresh took, in real seconds (the clock may be virtual)
    _runtime_failures: int = 0
    # Resume: finished records still to replay per (trial, rung), with their position in the ledger.
    _replay: dict[tuple[str, int], SpendRecord] = field(default_factory=dict)
    _replay_order: dict[tuple[str, int], int] = field(default_factory=dict)

    def load_replay(self) -> int:
        """Take the ledger's finished records as the results to replay; returns how many there are."""
        for position, record in enumerate(self.ledger.pending):
            if self.ledger.finished(record.trial_id, record.rung) is record:
                self._replay[(record.trial_id, record.rung)] = record
                self._replay_order[(record.trial_id, record.rung)] = position
        return len(self._replay)

    # --- bookkeeping ------------------------------------------------------------------------------
    def new_trial(self, config: dict[str, Any], bracket: int, parent: str | None = None,
                  cloned_at: float | None = None) -> str:
        trial_id = f"t{len(self.trials):04d}"
        self.trials[trial_id] = config
        self.trial_bracket[trial_id] = bracket
        self.lineage[trial_id] = {"parent": parent, "cloned_at": cloned_at}
        return trial_id

    def job(self, trial_id: str, bracket: int, rung: int, budget: float, resume_from_rung: int | None,
            clone_from: str | None = None) -> TrialJob:
        return TrialJob(trial_id, self.trials[trial_id], bracket, rung, budget, resume_from_rung,
                        self.ledger.next_attempt(trial_id, rung), clone_from)

    def observation(self, result: Any) -> Observation:
        """What the searcher learns from a record (or a trial result): score, and cost per unit trained."""
        # GPU-seconds per budget unit actually trained (a promoted trial resumes, so only its new units count).
        cost = result.gpu_seconds / result.budget_trained if result.budget_trained > 0 and result.gpu_seconds > 0 else None
        return Observation(result.trial_id, self.trials[result.trial_id], result.budget, _score(result), cost=cost)

    def predicted_gpu_hours(self, units: float) -> float | None:
        """GPU-hours for ``units`` budget units at the mean cost per unit measured so far."""
        per_unit = self.ledger.gpu_seconds_per_trained_unit()
        return None if per_unit is None else per_unit * units / 3600.0

    # --- the controller ---------------------------------------------------------------------------
    def decide(self, stage: Stage, units: float, complete_below: int | None = None) -> BudgetDecision:
        """Ask the controller before ``stage``, which would buy ``units`` budget units.

        ``complete_below``: every bracket below this index has passed its last barrier (default: the stage's own
        bracket, as when brackets run one after another); the iteration window judges complete brackets only.
        """
        settings = self.controller.settings
        forecast = None
        if settings.stop_rule == "forecast" and settings.min_gain_per_gpu_hour is not None:
            forecast = self.forecast(stage)
        decision = self.controller.check_before_stage(
            self.ledger, stage=str(stage), next_stage_gpu_hours=self.predicted_gpu_hours(units),
            bracket=stage.bracket if complete_below is None else complete_below,
            expected_gain=forecast.expected_gain if forecast is not None else None,
            forecast_gpu_hours=self.predicted_gpu_hours(forecast.budget_units) if forecast is not None else None,
            forecast_detail=forecast.detail if forecast is not None else "",
        )
        self.record_decision(decision)
        return decision

    def forecast(self, stage: Stage) -> Forecast | None:
        """The expected gain of what ``stage`` starts, as the scheduler scopes it (None: no evidence yet)."""
        return stage_forecast(self.ledger.records, self.scheduler, stage, mode=self.mode,  # type: ignore[arg-type]
                              top_k=self.controller.settings.top_k, seed=self.seed + self.controller.checks)

    def on_record(self, record: SpendRecord) -> None:
        """Called after each record joins the in-memory ledger (live or replayed): a hook for progress."""

    def on_decision(self, decision: Mapping[str, Any]) -> None:
        """Called after each controller decision joins the ledger: a hook for progress."""

    def record_decision(self, decision: BudgetDecision) -> None:
        data = decision.to_json()
        self.decisions.append(data)
        self.ledger.record_decision(data)
        self.on_decision(data)
        if decision.stop and self.stop_reason is None:
            self.stop_reason, self.stop_detail = decision.reason, decision.detail

    def _cap_check(self, stage: str | None = None) -> BudgetDecision | None:
        """After a result: the stop decision if a hard cap was reached mid-stage (on_cap: cancel), else None."""
        if self.controller.settings.on_cap != "cancel":
            return None
        check = self.controller.check_in_flight(self.ledger, **({} if stage is None else {"stage": stage}))
        if not check.stop:
            return None
        self.record_decision(check)
        return check

    def _runtime_down(self, record: SpendRecord) -> bool:
        """Count lost workers in a row; at ``max_runtime_failures`` the runtime is taken as down.

        A lost trial is never replayed: a resumed sweep runs it again.
        """
        if record.status != TrialStatus.LOST:
            self._runtime_failures = 0
            return False
        self._runtime_failures += 1
        if self._runtime_failures < self.max_runtime_failures or self.stop_reason is not None:
            return False
        self.stop_reason = str(StopReason.RUNTIME_FAILED)
        self.stop_detail = (f"{self._runtime_failures} trials in a row lost their worker (last: {record.error}); "
                            "check the runtime, then `rungflow resume RUN_DIR` runs them again")
        return True

    # --- billing ----------------------------------------------------------------------------------
    def charge(self, records: Sequence[SpendRecord]) -> SpendRecord:
        """Bill a finished job's records (each once); returns its outcome, the last."""
        for record in records:
            self.ledger.charge(record)
            self.on_record(record)
        return records[-1]

    def adopt(self, record: SpendRecord) -> SpendRecord:
        """A replayed record: already on disk, it joins the in-memory ledger where it stood before the crash."""
        self.ledger.adopt(record.trial_id, record.rung, upto=record)
        self.on_record(record)
        return record

    def replayed(self, job: TrialJob) -> SpendRecord | None:
        """The record the ledger already holds for ``job``'s (trial, rung), or None: it must run."""
        return self._replay.pop((job.trial_id, job.rung), None)

    def dispatch(self, job: TrialJob, executor: Executor, notify: Callable[[Any], None]) -> Any:
        """Earlier, unfinished attempts join the ledger, then a start marker, then the executor runs it."""
        executor.ready()
        self.ledger.adopt(job.trial_id, job.rung)
        self.ledger.start(StartMarker(job.trial_id, job.rung, job.attempt, job.bracket, job.budget,
                                      self.gpus_per_trial, self.clock()))
        return executor.start(job, notify)

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, executor: Executor) -> None:
        """Run the schedule on ``executor`` until it completes or a stop rule ends it; sets ``stop_reason``."""
        self.slots = executor.slots
        if self.scheduler.synchronous:
            self._run_synchronous(executor)
        else:
            self._run_asynchronous(executor, self.scheduler)  # type: ignore[arg-type]
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = str(StopReason.SCHEDULE_COMPLETE), "every planned stage ran"

    def _publish(self, executor: Executor) -> None:
        self._last_publish = self.clock()
        began = time.perf_counter()
        try:
            executor.publish()
        except MonitorLost as lost:
            self.monitor_lost(lost)
            raise
        self._publish_seconds = time.perf_counter() - began

    def monitor_lost(self, lost: MonitorLost) -> str:
        """Record the stop (unless the executor already said why); returns the reason to cancel what runs with."""
        if self.stop_reason is None:
            self.stop_reason = str(StopReason.CANCELLED)
            self.stop_detail = f"{lost}; the sweep stopped and billed every trial it had started"
        return self.stop_detail

    def _publish_due(self) -> bool:
        return self.clock() - self._last_publish >= max(PUBLISH_EVERY_SECONDS, self._publish_seconds / PUBLISH_SHARE)

    def _run_synchronous(self, executor: Executor) -> None:
        run_brackets(self, executor, getattr(self.scheduler, "max_open_brackets", None))

    def _run_asynchronous(self, executor: Executor, scheduler: AsyncScheduler) -> None:
        plan = scheduler.brackets[0]
        self.schedule.append({"bracket": 0, "s": plan.s, "asynchronous": True,
                              "rungs": [{"rung": r.index, "budget": r.budget} for r in plan.rungs]})
        done: queue.Queue[Any] = queue.Queue()
        in_flight: dict[int, tuple[Any, TrialJob, SpendRecord | None]] = {}
        replays: list[tuple[int, int]] = []  # (ledger position, handle id) of replayed jobs not yet taken
        last_rung_of: dict[str, int] = {}
        budget_at: dict[tuple[str, int], float] = {}
        checks_every = max(1, executor.slots)
        finished = 0
        stopping = False
        try:
            while True:
                if not stopping and finished % checks_every == 0 and (finished or not in_flight):
                    units = executor.slots * plan.rungs[0].budget
                    if self.decide(Stage(results=finished, scheduler=str(scheduler.kind)), units).stop:
                        stopping = True
                while not stopping and len(in_flight) < executor.slots:
                    next_job = scheduler.next_job()
                    if next_job is None:
                        break
                    clone_from = next_job.clone_from
                    if next_job.trial_id is None and next_job.config is not None:
                        # The scheduler's own trial: it starts from ``clone_from``'s checkpoint at the rung below
                        # (not its latest: the parent may have trained on since the gate that cloned it).
                        cloned_at = budget_at.get((clone_from, next_job.rung - 1)) if clone_from is not None else None
                        trial_id = self.new_trial(dict(next_job.config), 0, parent=clone_from, cloned_at=cloned_at)
                        scheduler.on_trial(trial_id, self.trials[trial_id])
                        resume = next_job.rung - 1 if cloned_at is not None else None
                        if resume is None:
                            clone_from = None
                    elif next_job.trial_id is None:
                        configs = self.searcher.suggest(1)
                        if not configs:
                            scheduler.stop_starting()
                            break
                        trial_id = self.new_trial(configs[0], 0)
                        scheduler.on_trial(trial_id, self.trials[trial_id])
                        resume, clone_from = None, None
                    else:
                        trial_id, resume, clone_from = next_job.trial_id, last_rung_of.get(next_job.trial_id), None
                    job = self.job(trial_id, 0, next_job.rung, next_job.budget, resume, clone_from)
                    record = self.replayed(job)
                    if record is not None:
                        handle: Any = object()
                        heapq.heappush(replays, (self._replay_order.get((job.trial_id, job.rung), 0), id(handle)))
                    else:
                        handle = self.dispatch(job, executor, done.put)
                    in_flight[id(handle)] = (handle, job, record)
                if not in_flight:
                    break
                # Replayed results come back first and in the order they were billed: that is the order they came
                # back in before the crash (what was running then is running again now), so every decision that
                # reads the order (ASHA's cutoffs and ranks, the median) is made again as it was.
                handle = in_flight[heapq.heappop(replays)[1]][0] if replays else _next(done, executor)
                if id(handle) not in in_flight:
                    continue
                _, job, record = in_flight.pop(id(handle))
                result = self.adopt(record) if record is not None else self.charge(executor.collect(handle, job))
                executor.reached("asha-result")
                finished += 1
                if not stopping and self._runtime_down(result):
                    stopping = True
                    executor.cancel([j for _, j, _ in in_flight.values()], self.stop_detail)
                if result.status == TrialStatus.CANCELLED:
                    continue
                last_rung_of[job.trial_id] = job.rung
                budget_at[(job.trial_id, job.rung)] = job.budget
                scheduler.on_result(job.trial_id, job.rung, _score(result))
                self.searcher.observe(self.observation(result))
                # Throttled by time: publishing is O(trials), per result it would be O(n²).
                if self._publish_due():
                    self._publish(executor)
                check = None if stopping else self._cap_check()
                if check is not None:
                    stopping = True
                    executor.cancel([j for _, j, _ in in_flight.values()], check.detail)
        except MonitorLost as lost:
            self._drain(executor, done, in_flight, self.monitor_lost(lost))
            raise

    def _drain(self, executor: Executor, done: queue.Queue[Any],
               in_flight: dict[int, tuple[Any, TrialJob, SpendRecord | None]], reason: str) -> None:
        """Cancel what is in flight and bill each job as it comes back (those not started come back at once):
        a start marker with no spend after it would be time the workers used and nobody paid for."""
        executor.cancel([job for _, job, record in in_flight.values() if record is None], reason)
        replayed = sorted((key for key, (_, _, record) in in_flight.items() if record is not None),
                          key=lambda key: self._replay_order.get((in_flight[key][1].trial_id, in_flight[key][1].rung), 0))
        for key in replayed:  # already billed, never handed to the executor: nothing will come back for them
            self.adopt(in_flight.pop(key)[2])  # type: ignore[arg-type]
        while in_flight:
            handle = _next(done, executor)
            if id(handle) in in_flight:
                _, job, _ = in_flight.pop(id(handle))
                self.charge(executor.collect(handle, job))
