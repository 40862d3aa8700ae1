"""Synchronous brackets run several at a time: each rung still ends at its own barrier, but a free slot never waits.

Hyperband's brackets are independent samples of the space, and within a bracket only the rung's barrier orders the
work. Run one bracket after another and every barrier idles the slots its slowest trial does not use: on one GPU
shared four ways, 38 % of slot time; on 64 GPUs, almost all of it. So, as Ray Tune's synchronous HyperBand and
HpBandSter's BOHB do, a slot that would go idle takes a job from the next bracket (and from the next iteration's
brackets, the plan's bracket order being the order they open in):

- jobs of brackets already open go first, oldest bracket first, so an early bracket's promoted trials never queue
  behind a later bracket's fresh ones;
- a new bracket opens only when a slot is free and no open bracket has a job to hand out, so the searcher proposes
  as late as it can, with every result that has come back by then (``scheduler.max_open_brackets`` bounds how many
  brackets are open at once; one is the sequential schedule);
- every rung's gate is the same :func:`budgets.scheduling.gate_rung` over the same trials: what a bracket keeps
  depends on its own results only, so per bracket the schedule buys what the sequential one buys.

The searcher is told a rung's results at its barrier and asked for a bracket's configurations when the bracket
opens. Both happen in the order results come back, so for a given completion order the schedule is one and the
same; a resumed sweep replays its ledger's results in the order they were billed (the order they came back), which
reproduces the decisions made before the crash. With one slot, or one bracket open at a time, the order is the
sequential schedule's, whatever the completion order.
"""

from __future__ import annotations

import heapq
import queue
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rungflow.budgets.controller import StopReason
from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.budgets.monitor import MonitorLost
from rungflow.budgets.scheduling import Stage, TrialScore

if TYPE_CHECKING:
    from rungflow.budgets.rungs import BracketPlan

# The driver (budgets.driver.SweepDriver), its executor and its jobs (TrialJob): typed loosely here because the
# driver imports this module, and the two importing each other would make one module of them.
SweepDriver = Executor = TrialJob = Any

__all__ = ["OpenBracket", "run_brackets"]


@dataclass
class OpenBracket:
    """One bracket between its search and its last barrier: the rung it is on and that rung's jobs."""

    plan: BracketPlan
    log: dict[str, Any]
    position: int = 0
    alive: list[str] = field(default_factory=list)
    waiting: deque[TrialJob] = field(default_factory=deque)
    outstanding: int = 0  # dispatched (or being replayed), not yet back
    jobs: int = 0
    results: list[SpendRecord] = field(default_factory=list)
    stage_start: float = 0.0

    @property
    def index(self) -> int:
        return self.plan.index

    @property
    def at_barrier(self) -> bool:
        return not self.waiting and self.outstanding == 0


@dataclass
class _InFlight:
    handle: Any
    job: TrialJob
    bracket: OpenBracket
    replayed: SpendRecord | None = None


class _Loop:
    """The state of one run of :func:`run_brackets`; see the module's docstring for the rules it keeps."""

    def __init__(self, driver: SweepDriver, executor: Executor, max_open: int | None) -> None:
        self.driver, self.executor = driver, executor
        self.max_open = max_open if max_open is not None else len(driver.scheduler.brackets)
        self.plans = deque(driver.scheduler.brackets)
        self.open: list[OpenBracket] = []  # in the order they opened, which is bracket order
        self.in_flight: dict[int, _InFlight] = {}
        self.done: queue.Queue[Any] = queue.Queue()
        self.replays: list[tuple[int, int]] = []  # (ledger position, handle id) of replayed jobs not yet taken
        # Started, not yet finished: enough to keep every slot busy while the next trials' runs are set up,
        # and no more, so a 10,000-trial rung neither floods the executor nor holds 10,000 handles.
        self.window = 2 * executor.slots + 8
        self.stopping = False  # no new stage starts (a stop verdict, a stop reason, the searcher exhausted)
        self.cancelling = False  # a hard cap or a dead runtime: what is running comes back cancelled
        self.exhausted = False

    # --- opening brackets and rungs ---------------------------------------------------------------
    def open_next(self) -> None:
        d, plan = self.driver, self.plans.popleft()
        first = plan.rungs[0]
        units = first.num_trials * first.budget + self.running_units()
        if d.decide(Stage(plan.index, 0), units, self.complete_below(plan.index)).stop:
            self.stopping = True
            return
        configs = self.executor.suggest(d.searcher, first.num_trials, plan.index)
        self.executor.reached("search")
        if not configs:
            self.exhausted = self.stopping = True
            return
        bracket = OpenBracket(plan, {"bracket": plan.index, "s": plan.s, "rungs": []})
        bracket.alive = [d.new_trial(c, plan.index) for c in configs]
        d.schedule.append(bracket.log)
        self.open.append(bracket)
        self.start_rung(bracket)

    def running_units(self) -> float:
        """Budget units the open brackets' current rungs still have to train: what the ledger has not billed yet,
        added to a stage's own prediction so a hard cap sees what is already committed."""
        units = 0.0
        for b in self.open:
            rungs = b.plan.rungs
            step = rungs[b.position].budget - (rungs[b.position - 1].budget if b.position else 0.0)
            units += (len(b.waiting) + b.outstanding) * step
        return units

    def complete_below(self, opening: int) -> int:
        """The lowest bracket still running (or ``opening``, about to): every bracket below it is complete."""
        return min([b.index for b in self.open] + [opening])

    def start_rung(self, bracket: OpenBracket) -> None:
        d, rung = self.driver, bracket.plan.rungs[bracket.position]
        resume = bracket.plan.rungs[bracket.position - 1].index if bracket.position else None
        bracket.waiting = deque(d.job(t, bracket.index, rung.index, rung.budget, resume) for t in bracket.alive)
        bracket.jobs, bracket.results = len(bracket.waiting), []
        bracket.stage_start = d.clock()

    def next_job_bracket(self) -> OpenBracket | None:
        return next((b for b in self.open if b.waiting), None)

    def fill(self) -> None:
        """Hand out jobs until the window is full or nothing is left that may start now."""
        dispatched = False
        while True:
            bracket = self.next_job_bracket()
            if bracket is not None and len(self.in_flight) < self.window:
                self.dispatch(bracket)
                dispatched = True
                continue
            # A new bracket only for a slot that would otherwise idle: proposing later means proposing knowing more.
            if (bracket is None and not self.stopping and self.plans and len(self.open) < self.max_open
                    and len(self.in_flight) < self.executor.slots):
                self.open_next()
                continue
            break
        if dispatched:
            self.executor.reached("dispatch")

    def dispatch(self, bracket: OpenBracket) -> None:
        d, job = self.driver, bracket.waiting.popleft()
        bracket.outstanding += 1
        record = d.replayed(job)
        if record is not None:
            handle: Any = object()
            heapq.heappush(self.replays, (d._replay_order.get((job.trial_id, job.rung), 0), id(handle)))
        else:
            handle = d.dispatch(job, self.executor, self.done.put)
        self.in_flight[id(handle)] = _InFlight(handle, job, bracket, record)

    # --- results ----------------------------------------------------------------------------------
    def next_result(self) -> _InFlight | None:
        # Replayed results come back first and in the order they were billed: that is the order they came back
        # in before the crash, and what was running then is running again now, so nothing live came back before them.
        if self.replays:
            _, key = heapq.heappop(self.replays)
            return self.in_flight.pop(key)
        if self.done.empty():
            self.executor.advance()
        return self.in_flight.pop(id(self.done.get()), None)

    def take(self, entry: _InFlight) -> None:
        d, bracket, job = self.driver, entry.bracket, entry.job
        if entry.replayed is not None:
            record = d.adopt(entry.replayed)
        else:
            record = d.charge(self.executor.collect(entry.handle, job))
        bracket.outstanding -= 1
        bracket.results.append(record)
        if not self.cancelling and d._runtime_down(record):
            self.cancel_all(d.stop_detail)
        if not self.cancelling and (self.in_flight or self.next_job_bracket() is not None):
            check = d._cap_check(str(Stage(job.bracket, job.rung)))
            if check is not None:
                # The executor stops what it can; every job still comes back, billed for what it used;
                # those not yet started come back at once.
                self.cancel_all(check.detail)
        if bracket.at_barrier:
            self.barrier(bracket)
        elif self.driver._publish_due():
            # Mid-rung too, throttled: a rung of many long trials would otherwise show the UI, the Optuna study
            # and result.json nothing until its barrier, and leave all of it to write after the last trial.
            d._publish(self.executor)

    def cancel_all(self, reason: str) -> None:
        self.cancelling = self.stopping = True
        live = [e.job for e in self.in_flight.values() if e.replayed is None]
        self.executor.cancel(live + [j for b in self.open for j in b.waiting], reason)

    def barrier(self, bracket: OpenBracket) -> None:
        """A rung's last result is back: gate it, tell the searcher, and start the next rung or close the bracket."""
        d, ex, rung = self.driver, self.executor, bracket.plan.rungs[bracket.position]
        bracket.log["rungs"].append(
            {"rung": rung.index, "budget": rung.budget, "num_trials": bracket.jobs, "planned_trials": rung.num_trials,
             "started_at": bracket.stage_start, "finished_at": d.clock()}
        )
        results = bracket.results
        observations = [d.observation(r) for r in results if r.status != TrialStatus.CANCELLED]
        last = bracket.position == len(bracket.plan.rungs) - 1
        keep = 0 if last else bracket.plan.rungs[bracket.position + 1].num_trials
        scores = [TrialScore(r.trial_id, r.score if r.status == TrialStatus.COMPLETED else None) for r in results]
        decision = ex.gate(scores, keep, d.mode, bracket.index, rung.index)
        ex.reached("gate")
        bracket.alive = ex.promote(d.searcher, observations, decision, bracket.index, rung.index)
        ex.reached("promote")
        d._publish(ex)
        if d.stop_reason is not None:
            self.stopping = True
        if self.stopping or last or not bracket.alive:
            self.open.remove(bracket)
            return
        bracket.position += 1
        units = len(bracket.alive) * (bracket.plan.rungs[bracket.position].budget - rung.budget) + self.running_units()
        stage = Stage(bracket.index, bracket.plan.rungs[bracket.position].index)
        if d.decide(stage, units, self.complete_below(bracket.index)).stop:
            self.stopping = True
            self.open.remove(bracket)
            return
        self.start_rung(bracket)

    def run(self) -> None:
        try:
            self.fill()
            while self.in_flight:
                self.take(self.next_result_or_skip())
                self.fill()
        except MonitorLost as lost:
            self.drain(self.driver.monitor_lost(lost))
            raise
        if self.exhausted and self.driver.stop_reason is None:
            self.driver.stop_reason = str(StopReason.SCHEDULE_COMPLETE)
            self.driver.stop_detail = "the search space is exhausted"

    def drain(self, reason: str) -> None:
        """Stop where the loop is: cancel every job in flight (in any bracket) and bill each as it comes back, those
        not started at once. Nothing is gated or published: a start marker with no spend after it would be time the
        workers used and nobody paid for."""
        self.cancel_all(reason)
        for bracket in self.open:
            bracket.waiting.clear()
        while self.in_flight:
            entry = self.next_result_or_skip()
            if entry.replayed is not None:
                self.driver.adopt(entry.replayed)
            else:
                self.driver.charge(self.executor.collect(entry.handle, entry.job))

    def next_result_or_skip(self) -> _InFlight:
        while True:
            entry = self.next_result()
            if entry is not None:
                return entry


def run_brackets(driver: SweepDriver, executor: Executor, max_open: int | None = None) -> None:
    """Run a synchronous scheduler's brackets on ``executor``, up to ``max_open`` at a time (None: as many as
    the free slots take); sets the driver's stop reason when a stop ends the sweep."""
    _Loop(driver, executor, max_open).run()

