"""A simulated cluster on a virtual clock: the real driver, searcher, scheduler and controller, no workers.

:class:`SimulatedExecutor` is an :class:`budgets.driver.Executor` whose N slots (N workers ×
1 / ``gpus_per_trial``, so fractional GPUs pack) run each job for the seconds a :data:`Durations`
function gives it, on a :class:`VirtualClock` that jumps from one finish to the next. Jobs beyond
the free slots queue, as on Ray. Rung barriers and asynchronous promotion therefore cost what they
would on a cluster, and a sweep of 10,000 trials simulates in seconds.

A real sweep also spends driver time between synchronous stages (the gate, promote and search task
runs, ``result.json`` and the artifacts, starting the next stage's task runs), during which no trial
runs: ``stage_seconds`` charges it after each rung's barrier (gate, promote, the next bracket's search),
outside the stages' own spans, and ``setup_seconds`` once before the first trial (starting the runtime;
on Ray, the actors warming up). Each job also needs ``dispatch_seconds`` of one shared dispatcher before its trial
can start (submitting the task run, the Prefect API recording it, shipping the function, the worker
picking it up), first come first served: hidden while trials are long and slots few, it idles slots at a
stage's start and whenever trials finish faster than the dispatcher hands them out.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rungflow.budgets.driver import TrialJob
from rungflow.budgets.holding import HoldSpan
from rungflow.budgets.ledger import Ledger, SpendRecord, TrialStatus
from rungflow.budgets.scheduling import RungDecision, TrialScore, gate_rung
from rungflow.budgets.searchers import Observation, Searcher

__all__ = ["VirtualClock", "SimulatedExecutor", "Durations", "Scores", "Busy", "stage_spans", "stage_overhead",
           "setup_overhead", "worker_startup", "dispatch_overhead", "slot_spans", "critical_path", "idle_within"]

# Seconds to train ``config`` from budget ``start`` to budget ``stop``.
Durations = Callable[[Mapping[str, Any], float, float], float]
# The score at ``budget`` (None: the trial fails).
Scores = Callable[[Mapping[str, Any], float], float | None]


@dataclass
class VirtualClock:
    """Time that moves only when the simulation says so."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Busy:
    """One job's span on a slot, for utilisation and idle-at-barrier figures; ``slot`` numbers the slot it ran on
    (0 … slots − 1), so what each slot held, from its first job to its last, can be read back per slot."""

    trial_id: str
    bracket: int
    rung: int
    started_at: float
    finished_at: float
    slot: int = 0


@dataclass
class _Run:
    job: TrialJob
    notify: Callable[[Any], None]
    ready_at: float = 0.0  # when the dispatcher has handed it out
    record: SpendRecord | None = None
    slot: int = 0


@dataclass
class SimulatedExecutor:
    """``slots`` workers on ``clock``; each job takes ``durations(config, trained_to, budget)`` seconds."""

    slots: int
    clock: VirtualClock
    durations: Durations
    scores: Scores
    ledger: Ledger
    # Driver seconds per synchronous stage (see the module's docstring); asynchronous schedulers have no stages.
    stage_seconds: float = 0.0
    # Seconds from the sweep's start to its first trial (starting the runtime, Ray's actors warming up);
    # None: one stage's charge, as before.
    setup_seconds: float | None = None
    # Seconds of the shared dispatcher each job needs before its trial can start (see the module's docstring).
    dispatch_seconds: float = 0.0
    # What each trial holds and is billed for, as the driver's runtime would give it.
    gpus_per_trial: float = 1.0
    cpus_per_trial: float = 1.0
    # A slot's worker given back after this many idle seconds (None: kept to the end, as threads are); the next job
    # on that slot waits ``worker_startup_seconds`` for a new one, as the runtime's pool starts a new Ray actor.
    release_idle_after: float | None = None
    worker_startup_seconds: float = 0.0
    busy: list[Busy] = field(default_factory=list)
    _running: list[tuple[float, int, _Run]] = field(default_factory=list)
    _free_slots: list[int] = field(default_factory=list)  # a heap: the lowest free slot runs the next job
    _queued: deque[_Run] = field(default_factory=deque)
    _trained_to: dict[str, float] = field(default_factory=dict)
    _reached: dict[tuple[str, int], float] = field(default_factory=dict)
    _seq: Any = field(default_factory=itertools.count)
    _cancelled: dict[tuple[str, int], str] = field(default_factory=dict)  # trial and rung -> why
    _dispatcher_free: float = 0.0
    _set_up: bool = False
    _idle_since: dict[int, float] = field(default_factory=dict)  # a slot's worker: idle since its last job finished

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"The value of slots is {self.slots}, but must be at least 1")
        if self.setup_seconds is not None and not self.setup_seconds >= 0:
            raise ValueError(f"The value of setup_seconds is {self.setup_seconds}, but must be zero or more")
        for name in ("stage_seconds", "dispatch_seconds", "worker_startup_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"The value of {name} is {getattr(self, name)}, but must be zero or more")
        self._free_slots = list(range(self.slots))

    # --- the executor contract --------------------------------------------------------------------
    def suggest(self, searcher: Searcher, count: int, bracket: int) -> list[dict[str, Any]]:
        # Before the first stage: the sweep's set-up. A later bracket's search is part of the charge at the
        # barrier before it, so a schedule of S stages pays the set-up and S - 1 charges up to its last
        # result, as :func:`stage_overhead` and :func:`setup_overhead` measure them.
        if not self._set_up:
            self._set_up = True
            self.clock.now += self.stage_seconds if self.setup_seconds is None else self.setup_seconds
        return searcher.suggest(count)

    def ready(self) -> None:
        pass

    def start(self, job: TrialJob, notify: Callable[[Any], None]) -> Any:
        if (job.trial_id, job.rung) in self._cancelled:
            # Handed out after a cancel that named it: it comes back cancelled at once, as the runtime's do.
            run = _Run(job, notify, ready_at=self.clock.now)
            run.record = self._record(job, TrialStatus.CANCELLED, None, self.clock.now, self.clock.now, 0.0,
                                      error=f"cancelled: {self._cancelled[(job.trial_id, job.rung)]}")
            notify(run)
            return run
        self._dispatcher_free = max(self.clock.now, self._dispatcher_free) + self.dispatch_seconds
        run = _Run(job, notify, ready_at=self._dispatcher_free)
        if len(self._running) < self.slots:
            self._begin(run)
        else:
            self._queued.append(run)
        return run

    def advance(self) -> None:
        """Called when the driver waits for a result: jump to the next finish and report it."""
        if not self._running:
            raise RuntimeError("the simulated cluster has nothing running, yet the driver waits for a result")
        finish, _, run = heapq.heappop(self._running)
        heapq.heappush(self._free_slots, run.slot)
        self._idle_since[run.slot] = finish
        self.clock.now = max(self.clock.now, finish)
        while self._queued and len(self._running) < self.slots:
            self._begin(self._queued.popleft())
        run.notify(run)

    def collect(self, handle: Any, job: TrialJob) -> list[SpendRecord]:
        assert handle.record is not None
        return [handle.record]

    def cancel(self, jobs: Sequence[TrialJob], reason: str) -> None:
        """Queued jobs come back cancelled at once; running ones run to their end, as threads do."""
        keys = {(j.trial_id, j.rung) for j in jobs}
        self._cancelled.update(dict.fromkeys(keys, reason))
        keep: deque[_Run] = deque()
        for run in self._queued:
            if (run.job.trial_id, run.job.rung) in keys:
                run.record = self._record(run.job, TrialStatus.CANCELLED, None, self.clock.now, self.clock.now, 0.0,
                                          error=f"cancelled: {reason}")
                run.notify(run)
            else:
                keep.append(run)
        self._queued = keep

    def gate(self, scores: Sequence[TrialScore], keep: int, mode: str, bracket: int, rung: int) -> RungDecision:
        return gate_rung(scores, keep, mode)  # type: ignore[arg-type]

    def promote(self, searcher: Searcher, observations: Sequence[Observation], decision: RungDecision,
                bracket: int, rung: int) -> list[str]:
        for obs in sorted(observations, key=lambda o: o.trial_id):
            searcher.observe(obs)
        self._driver_busy()
        return list(decision.promote)

    def _driver_busy(self) -> None:
        # Called only at a synchronous barrier, where nothing runs: the driver's work moves the clock.
        self.clock.now += self.stage_seconds

    def reached(self, point: str) -> None:
        pass

    def publish(self) -> None:
        pass

    # --- running ----------------------------------------------------------------------------------
    def _begin(self, run: _Run) -> None:
        job, now = run.job, max(self.clock.now, run.ready_at)
        run.slot = heapq.heappop(self._free_slots)
        idle_since = self._idle_since.get(run.slot)
        if idle_since is None:
            # The first workers start together during the set-up; one first needed after a result came back (the
            # pool grows on demand) starts now.
            fresh = bool(self._idle_since)
        else:
            fresh = self.release_idle_after is not None and now - idle_since >= self.release_idle_after
        if fresh:  # a new worker (a Ray actor) starts before its trial: given back idle, or never started yet
            now += self.worker_startup_seconds
        # A clone starts where its parent's checkpoint at that rung left off; anyone else resumes from its own.
        if job.clone_from is not None and job.resume_from_rung is not None:
            start = self._reached.get((job.clone_from, job.resume_from_rung), 0.0)
        else:
            start = self._trained_to.get(job.trial_id, 0.0) if job.resume_from_rung is not None else 0.0
        trained = max(0.0, job.budget - start)
        seconds = max(0.0, float(self.durations(job.config, start, job.budget)))
        score = self.scores(job.config, job.budget)
        status = TrialStatus.COMPLETED if score is not None else TrialStatus.FAILED
        run.record = self._record(job, status, score, now, now + seconds, trained,
                                  error=None if score is not None else "failed (simulated)")
        self._trained_to[job.trial_id] = max(start, job.budget)
        self._reached[(job.trial_id, job.rung)] = max(start, job.budget)
        self.busy.append(Busy(job.trial_id, job.bracket, job.rung, now, now + seconds, run.slot))
        heapq.heappush(self._running, (now + seconds, next(self._seq), run))

    def _record(self, job: TrialJob, status: TrialStatus, score: float | None, started: float, finished: float,
                trained: float, error: str | None = None) -> SpendRecord:
        wall = finished - started
        gpu_seconds, cpu_seconds = wall * self.gpus_per_trial, wall * self.cpus_per_trial
        return SpendRecord(
            trial_id=job.trial_id, bracket=job.bracket, rung=job.rung, budget=job.budget, score=score, status=status,
            gpu_seconds=gpu_seconds, gpus=self.gpus_per_trial, cpu_seconds=cpu_seconds, cpus=self.cpus_per_trial,
            cost=self.ledger.cost_of(gpu_seconds, cpu_seconds), started_at=started, finished_at=finished,
            budget_trained=trained, attempt=job.attempt, error=error, wall_seconds=wall, trainable_seconds=wall,
            worker=f"sim-{job.trial_id}",
        )


def slot_spans(busy: Sequence[Busy]) -> dict[int, tuple[float, float]]:
    """Each slot's span from its first job's start to its last job's finish: what a runtime that keeps a worker per
    slot from its first trial to its last holds (idle time between jobs included)."""
    spans: dict[int, tuple[float, float]] = {}
    for b in busy:
        first, last = spans.get(b.slot, (b.started_at, b.finished_at))
        spans[b.slot] = (min(first, b.started_at), max(last, b.finished_at))
    return spans


def critical_path(busy: Sequence[Busy], *, asynchronous: bool, brackets_in_sequence: bool) -> float:
    """Seconds no number of slots can beat for these jobs: the longest chain of work that must run in order.

    Synchronous: a bracket's rungs run one after another and each waits for its slowest trial, so a bracket's
    chain is the sum of its rungs' longest jobs; brackets run side by side (the longest chain) or, one bracket at a
    time, one after another (the sum). Asynchronous: a trial's rungs run in order, so the longest trial's jobs.
    The driver's own time (set-up, stage charges) is not in it.
    """
    if asynchronous:
        per_trial: dict[str, float] = {}
        for b in busy:
            per_trial[b.trial_id] = per_trial.get(b.trial_id, 0.0) + (b.finished_at - b.started_at)
        return max(per_trial.values(), default=0.0)
    longest: dict[tuple[int, int], float] = {}
    for b in busy:
        key = (b.bracket, b.rung)
        longest[key] = max(longest.get(key, 0.0), b.finished_at - b.started_at)
    chains: dict[int, float] = {}
    for (bracket, _), seconds in longest.items():
        chains[bracket] = chains.get(bracket, 0.0) + seconds
    return sum(chains.values()) if brackets_in_sequence else max(chains.values(), default=0.0)


def idle_within(spans: Sequence[tuple[float, float]], busy: Sequence[Busy], slots: int) -> float:
    """Slot-seconds idle while at least one of ``spans`` is open (stages may overlap: each moment counts once)."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return 0.0
    starts = [m[0] for m in merged]
    inside = 0.0
    for b in busy:
        i = max(0, bisect.bisect_right(starts, b.started_at) - 1)
        while i < len(merged) and merged[i][0] < b.finished_at:
            inside += max(0.0, min(b.finished_at, merged[i][1]) - max(b.started_at, merged[i][0]))
            i += 1
    return max(0.0, slots * sum(end - start for start, end in merged) - inside)


def stage_spans(records: Sequence[SpendRecord], schedule: Sequence[Mapping[str, Any]]
                 ) -> dict[tuple[int, int], tuple[float, float, list[SpendRecord]]]:
    """Each synchronous stage's span, as the driver logged it (from its start to its barrier, where the log has
    them; else from its first trial's start to its last trial's finish), with its records."""
    logged = {(b["bracket"], r["rung"]): r for b in schedule if not b.get("asynchronous") for r in b.get("rungs", [])
              if "started_at" in r}
    spans: dict[tuple[int, int], tuple[float, float, list[SpendRecord]]] = {}
    for r in records:
        key = (r.bracket, r.rung)
        if key not in logged:
            continue
        first, last, members = spans.get(key, (r.started_at, r.finished_at, []))
        members.append(r)
        spans[key] = (min(first, r.started_at), max(last, r.finished_at), members)
    opening = min(spans, key=lambda k: float(logged[k]["started_at"]), default=None)
    for key, (first, last, members) in spans.items():
        rung = logged[key]
        # The first stage from its first trial: what comes before it (starting the runtime, actors warming
        # up, the first task runs) happens once a sweep, and is its set-up (:func:`setup_overhead`).
        start = first if key == opening else min(first, float(rung["started_at"]))
        spans[key] = (start, max(last, float(rung.get("finished_at", last))), members)
    return spans


def stage_overhead(records: Sequence[SpendRecord], schedule: Sequence[Mapping[str, Any]],
                   elapsed_seconds: float) -> float | None:
    """Driver seconds between synchronous stages in a real run: its wall-clock (``elapsed_seconds``, from the
    sweep's start to its last result) less its set-up (:func:`setup_overhead`) and each stage's span
    (:func:`stage_spans`), over the stages after the first; with brackets side by side, the mean from a rung's
    barrier to its bracket's next rung. None when the run had no synchronous stage
    (ASHA) or no record to measure.

    ``records`` and ``schedule`` are the run's ledger records and ``result.json`` ``schedule``.
    """
    spans = stage_spans(records, schedule)
    setup = setup_overhead(records, schedule, elapsed_seconds)
    if not spans or setup is None:
        return None
    if len(spans) == 1:
        return 0.0
    inside, reach, overlapped = 0.0, -float("inf"), False
    for first, last in sorted((first, last) for first, last, _ in spans.values()):
        overlapped |= first < reach
        inside += max(0.0, last - max(first, reach))
        reach = max(reach, last)
    if overlapped:
        # Brackets side by side: other brackets' stages cover the driver's time at a barrier, so the wall-clock
        # less the stages' spans shows none of it. Each bracket's log shows it, from a rung's barrier to the start
        # of its next rung (the gate and promote that the simulator charges there).
        gaps = [float(after["started_at"]) - float(before["finished_at"])
                for bracket in schedule if not bracket.get("asynchronous")
                for before, after in zip(bracket.get("rungs", []), bracket.get("rungs", [])[1:])
                if "finished_at" in before and "started_at" in after]
        return max(0.0, sum(gaps) / len(gaps)) if gaps else 0.0
    return max(0.0, (elapsed_seconds - setup - inside) / (len(spans) - 1))


def worker_startup(records: Sequence[SpendRecord], holds: Sequence[HoldSpan]) -> float | None:
    """Seconds a real run's workers were held before their first trial (median; None with no hold).

    A hold names the pool's worker, a record the process that ran it; each new worker is a new process, so the
    workers in the order they were acquired are the processes in the order of their first trial.
    """
    first_trial: dict[str, float] = {}
    for r in records:
        if r.worker:
            first_trial[r.worker] = min(first_trial.get(r.worker, r.started_at), r.started_at)
    starts = sorted(first_trial.values())
    waits = []
    for hold in sorted(holds, key=lambda h: h.acquired_at):
        i = bisect.bisect_left(starts, hold.acquired_at)
        if i < len(starts):  # a worker that never ran a trial (given back at the end) has none to pair with
            waits.append(starts.pop(i) - hold.acquired_at)
    return sorted(waits)[len(waits) // 2] if waits else None


def setup_overhead(records: Sequence[SpendRecord], schedule: Sequence[Mapping[str, Any]],
                   elapsed_seconds: float) -> float | None:
    """Seconds from a real run's start to its first trial's start (None with no record)."""
    if not records:
        return None
    end = max(r.finished_at for r in records)
    return max(0.0, min(r.started_at for r in records) - (end - elapsed_seconds))


def _dispatched_idle(seconds: Sequence[float], slots: int, dispatch: float, submitted_at_start: bool) -> float:
    """Slot-seconds idle when ``seconds`` run in order on ``slots`` slots, each job first taking ``dispatch`` of
    one shared dispatcher: submitted all at once (a synchronous stage) or as a slot frees (asynchronous)."""
    free = [0.0] * slots
    dispatcher, end = 0.0, 0.0
    for duration in seconds:
        slot = heapq.heappop(free)
        dispatcher = max(0.0 if submitted_at_start else slot, dispatcher) + dispatch
        finish = max(dispatcher, slot) + duration
        heapq.heappush(free, finish)
        end = max(end, finish)
    return slots * end - sum(seconds)


def dispatch_overhead(records: Sequence[SpendRecord], schedule: Sequence[Mapping[str, Any]], elapsed_seconds: float,
                      slots: int) -> float | None:
    """The dispatcher's seconds per job in a real run: the ``dispatch_seconds`` at which the simulator's
    dispatcher leaves the slots as idle inside the run's stages (after the first) as they were, with the
    trials' own durations in the order they started. An asynchronous run is one stage, from the sweep's
    start to its last result. None with no record to measure."""
    done = [r for r in records if r.finished_at >= r.started_at]
    if not done or slots < 1:
        return None
    spans = stage_spans(done, schedule)
    at_start = bool(spans)
    if not spans:
        end = max(r.finished_at for r in done)
        spans = {(0, 0): (min(end - elapsed_seconds, min(r.started_at for r in done)), end, done)}
    elif len(spans) > 1:
        # The first stage is where the runtime warms up (Ray's actors take seconds to their first trial, and
        # then a few hundredths of a second a trial): its idle is the set-up's, not the dispatcher's.
        opening = min(spans.values(), key=lambda span: span[0])
        spans = {k: v for k, v in spans.items() if v is not opening}
    stages = []
    real = 0.0
    for first, last, members in spans.values():
        durations = [r.finished_at - r.started_at for r in sorted(members, key=lambda r: r.started_at)]
        stages.append(durations)
        real += slots * (last - first) - sum(durations)

    def modelled(dispatch: float) -> float:
        return sum(_dispatched_idle(d, slots, dispatch, at_start) for d in stages)

    low, high = 0.0, max(last - first for first, last, _ in spans.values())
    if modelled(low) >= real:
        return 0.0
    if modelled(high) <= real:
        return high
    for _ in range(50):  # idle grows with the dispatcher's seconds: bisect to the run's own idle
        middle = (low + high) / 2
        low, high = (middle, high) if modelled(middle) < real else (low, middle)
    return (low + high) / 2
