"""The spend ledger: one append-only record per unit of spend, the single source of truth for cost.

Every (trial, rung, attempt) is charged once, whatever happens to it: completed, failed, timed
out or cancelled trials are billed for what they used. Records are JSON lines, flushed and
fsynced as they are written, so a killed sweep loses nothing it already recorded and a resumed
one reads the ledger back and never pays twice.

Resume by replay: a ledger opened with ``replay=True`` holds what is on disk as *pending*; the
sweep re-runs its deterministic driver from the start and, for each (trial, rung) that already has
a finished record, *adopts* that record instead of training again. ``records`` is therefore the
prefix of spend the driver has reached, and the budget controller reads the ledger it read before
the crash. A ``started`` marker is written when a trial attempt is dispatched; an attempt with a
marker but no spend record died with the process and is billed once, as ``interrupted``.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from rungflow.budgets.holding import Holds, HoldSpan

__all__ = ["TrialStatus", "FINISHED", "trial_outcome", "SpendRecord", "SetupSpend", "StartMarker", "Ledger", "IncumbentPoint", "IncumbentCurve", "incumbent_curve"]

Mode = Literal["max", "min"]


class TrialStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    # The worker died under the trial (node lost, process killed); billed, then retried as a new attempt.
    LOST = "lost"
    INTERRUPTED = "interrupted"  # lost with a killed sweep process; billed for the time it is shown to have run


# Outcomes a resumed sweep takes as they are; cancelled and interrupted attempts run again.
FINISHED: frozenset[TrialStatus] = frozenset({TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.TIMEOUT})


class _InHours:
    """GPU- and CPU-hours of whatever counts GPU- and CPU-seconds (a record, the ledger's running totals)."""

    gpu_seconds: float
    cpu_seconds: float

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0

    @property
    def cpu_hours(self) -> float:
        return self.cpu_seconds / 3600.0


@dataclass(frozen=True)
class SpendRecord(_InHours):
    """What one trial did at one rung and what it cost.

    ``gpu_seconds`` is wall-clock seconds x GPUs held (fractional GPUs bill their fraction), or the
    trainable's own cost report. ``cost`` = GPU-hours x price per GPU-hour.
    """

    trial_id: str
    bracket: int
    rung: int
    budget: float
    score: float | None
    status: TrialStatus
    gpu_seconds: float
    gpus: float
    cost: float
    started_at: float
    finished_at: float
    budget_trained: float = 0.0
    attempt: int = 0
    error: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    trainable_seconds: float = 0.0
    worker: str | None = None
    # Wall-clock x CPUs held: a CPU-only sweep's real bill, beside its GPU-hours (0 there).
    cpu_seconds: float = 0.0
    cpus: float = 0.0
    # Where it trained ("cuda:0", "cpu"), and the budget a promoted trial resumed from (None: from scratch).
    device: str = "cpu"
    resumed_from_budget: float | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.trial_id, self.rung, self.attempt)

    @property
    def ok(self) -> bool:
        return self.status == TrialStatus.COMPLETED and self.score is not None and math.isfinite(self.score)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        # JSON has no NaN; the status and error say what happened.
        data["metrics"] = {k: (float(v) if _finite(v) else None) for k, v in self.metrics.items()}
        if self.score is not None and not math.isfinite(self.score):
            data["score"] = None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpendRecord:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["status"] = TrialStatus(fields["status"])
        return cls(**fields)


@dataclass(frozen=True)
class SetupSpend(_InHours):
    """Compute the sweep spent on the user's code outside any trial, e.g. the runs of an Optuna objective that
    learn its space before the first trial. Counted in the totals (so in caps), never as a trial.

    ``key`` names the spend once: a resumed sweep that reads it back does not bill it again.
    """

    key: str
    kind: str
    runs: int
    wall_seconds: float
    gpus: float
    cpus: float
    gpu_seconds: float
    cpu_seconds: float
    cost: float
    started_at: float


@dataclass(frozen=True)
class StartMarker:
    """A trial attempt was dispatched at ``started_at``; its spend record follows when it finishes."""

    trial_id: str
    rung: int
    attempt: int
    bracket: int
    budget: float
    gpus: float
    started_at: float

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.trial_id, self.rung, self.attempt)


def trial_outcome(last: SpendRecord, bracket_top_rung: int, max_budget: float, *, final: bool,
                  asynchronous: bool = False) -> str | None:
    """What happened to a trial, from its last record; ``None`` while that may still change.

    ``full_budget``; the status of an attempt that failed or timed out; ``stopped_by_gate`` once a higher rung
    of its bracket ran (final for a synchronous gate at once; ASHA may still promote it, so only at the end);
    at the end of the sweep, ``unfinished`` for a trial whose next stage never ran, or the status of a last
    attempt that did not finish (``cancelled``, ``lost``, ``interrupted``). ``bracket_top_rung``: the highest
    rung any trial of ``last.bracket`` reached. The ledger's counts, the Optuna study and MLflow all read this.
    """
    if last.ok and last.budget >= max_budget - 1e-9:
        return "full_budget"
    if not last.ok and last.status in (TrialStatus.FAILED, TrialStatus.TIMEOUT):
        return str(last.status)
    if last.ok and bracket_top_rung > last.rung and (final or not asynchronous):
        return "stopped_by_gate"
    if final:
        return "unfinished" if last.ok else str(last.status)
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class Ledger(_InHours):
    """Spend records in order, optionally persisted to ``path`` (JSON lines, one per record).

    With ``replay=True`` the spend records on disk load as :attr:`pending` (see the module docstring).
    """

    def __init__(self, path: str | Path | None = None, *, price_per_gpu_hour: float = 0.0, price_per_cpu_hour: float = 0.0,
                 replay: bool = False, clock: Callable[[], float] = time.time, last_alive: float | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.price_per_gpu_hour = price_per_gpu_hour
        self.price_per_cpu_hour = price_per_cpu_hour
        # Reads how long the workers still held have been held; a simulator gives its virtual clock.
        self.clock = clock
        # What the workers held, busy or idle (budgets/holding.py); written from the runtime's threads.
        self.holds = Holds()
        self._holds_lock = threading.Lock()
        self.cpu_seconds = 0.0
        self.records: list[SpendRecord] = []
        self.decisions: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []
        self.setup: list[SetupSpend] = []
        self.starts: dict[tuple[str, int, int], StartMarker] = {}
        # Replay: records on disk the driver has not reached yet (file order), and how many decisions
        # on disk the replayed driver will make again (those are not written a second time).
        self.pending: list[SpendRecord] = []
        self._decisions_on_disk = 0
        self._keys: set[tuple[str, int, int]] = set()
        # Running totals of ``records``: caps are checked after every result, and summing 10,000 records
        # each time is O(n²).
        self.gpu_seconds = 0.0
        self._cost = 0.0
        self._trained_gpu_seconds = 0.0
        self._trained_units = 0.0
        self._curves: dict[tuple[str, int], IncumbentCurve] = {}  # (mode, top_k) -> the curve of records so far
        self._latest: dict[tuple[str, int], SpendRecord] = {}  # (trial, rung) -> highest attempt billed
        self._top_attempt: dict[tuple[str, int], int] = {}  # (trial, rung) -> highest attempt billed or started
        if self.path is not None and self.path.exists():
            self._load(replay, last_alive)

    def _load(self, replay: bool = False, last_alive: float | None = None) -> None:
        """Read the ledger back; ``last_alive``: when the process that wrote it was last seen alive (its heartbeat),
        up to which the workers it still held when it died are billed."""
        assert self.path is not None
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A record cut short by a kill mid-write: drop the torn tail so the next append starts on
            # a fresh line (glued onto the fragment, it would be lost on the following load).
            with self.path.open("r+b") as fh:
                fh.truncate(raw.rfind(b"\n") + 1)
        spans: dict[tuple[str, float], HoldSpan] = {}
        last_seen = 0.0  # the last moment the sweep that wrote this ledger is shown to have been alive
        with self.path.open("r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    # A line cut short by a kill mid-write: everything before it is intact.
                    continue
                kind = entry.get("type")
                if kind == "spend":
                    record = SpendRecord.from_json(entry["record"])
                    last_seen = max(last_seen, record.finished_at)
                    if record.key not in self._keys:
                        self._note(record)
                        if replay:
                            self.pending.append(record)
                        else:
                            self._extend([record])
                elif kind == "decision":
                    if replay:
                        self._decisions_on_disk += 1
                    else:
                        self.decisions.append(entry["decision"])
                elif kind == "started":
                    fields = {k: v for k, v in entry["start"].items() if k in StartMarker.__dataclass_fields__}
                    marker = StartMarker(**fields)
                    last_seen = max(last_seen, marker.started_at)
                    self.starts.setdefault(marker.key, marker)
                    self._note_attempt(marker.trial_id, marker.rung, marker.attempt)
                elif kind == "session":
                    self.sessions.append(entry["session"])
                elif kind == "setup":
                    # Spent before the first trial, so a replayed driver's totals start with it too.
                    self._add_setup(SetupSpend(**entry["setup"]))
                elif kind == "hold":
                    span = HoldSpan(**{k: v for k, v in entry["hold"].items() if k in HoldSpan.__dataclass_fields__})
                    spans[(span.worker, span.acquired_at)] = span  # the release line replaces the acquire line
                    last_seen = max(last_seen, span.acquired_at, span.released_at or 0.0)
        self.holds.restore(spans.values(), open_until=max(last_seen, last_alive or 0.0))

    def _append(self, entry: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _extend(self, records: list[SpendRecord]) -> None:
        self.records.extend(records)
        for record in records:
            self.gpu_seconds += record.gpu_seconds
            self.cpu_seconds += record.cpu_seconds
            self._cost += record.cost
            if record.budget_trained > 0:
                self._trained_gpu_seconds += record.gpu_seconds
                self._trained_units += record.budget_trained

    def incumbent(self, mode: Mode, *, top_k: int = 1) -> list[IncumbentPoint]:
        """:func:`incumbent_curve` of :attr:`records`, caught up from where the last call left it (read only)."""
        curve = self._curves.get((mode, top_k))
        if curve is None:
            curve = self._curves[(mode, top_k)] = IncumbentCurve(mode, top_k)
        return curve.extend(self.records[len(curve.points):]) if len(curve.points) < len(self.records) else curve.points

    def gpu_seconds_per_trained_unit(self) -> float | None:
        """Mean GPU-seconds per budget unit trained so far (None before anything trained)."""
        return self._trained_gpu_seconds / self._trained_units if self._trained_units > 0 else None

    def _note_attempt(self, trial_id: str, rung: int, attempt: int) -> None:
        self._top_attempt[(trial_id, rung)] = max(attempt, self._top_attempt.get((trial_id, rung), attempt))

    def _note(self, record: SpendRecord) -> None:
        self._keys.add(record.key)
        self._note_attempt(record.trial_id, record.rung, record.attempt)
        latest = self._latest.get((record.trial_id, record.rung))
        if latest is None or record.attempt >= latest.attempt:
            self._latest[(record.trial_id, record.rung)] = record

    def cost_of(self, gpu_seconds: float, cpu_seconds: float = 0.0) -> float:
        return gpu_seconds / 3600.0 * self.price_per_gpu_hour + cpu_seconds / 3600.0 * self.price_per_cpu_hour

    def charge(self, record: SpendRecord) -> bool:
        """Record one unit of spend; returns False (and charges nothing) if this key was already billed."""
        if record.key in self._keys:
            return False
        self._note(record)
        self._extend([record])
        self._append({"type": "spend", "record": record.to_json()})
        return True

    def charge_setup(self, spend: SetupSpend) -> bool:
        """Record spend outside any trial; returns False (and charges nothing) if ``spend.key`` was already billed."""
        if not self._add_setup(spend):
            return False
        self._append({"type": "setup", "setup": asdict(spend)})
        return True

    def _add_setup(self, spend: SetupSpend) -> bool:
        if any(s.key == spend.key for s in self.setup):
            return False
        self.setup.append(spend)
        self.gpu_seconds += spend.gpu_seconds
        self.cpu_seconds += spend.cpu_seconds
        self._cost += spend.cost
        return True

    def has(self, trial_id: str, rung: int, attempt: int = 0) -> bool:
        return (trial_id, rung, attempt) in self._keys

    def acquire_hold(self, worker: str, gpus: float, cpus: float, at: float | None = None) -> None:
        """A worker asked for its resources (a Ray actor was created); held from now until :meth:`release_hold`."""
        with self._holds_lock:
            span = self.holds.acquire(worker, gpus, cpus, self.clock() if at is None else at)
            self._append({"type": "hold", "hold": span.to_json()})

    def release_hold(self, worker: str, at: float | None = None) -> None:
        """The worker gave its resources back (stopped idle, lost, or the sweep ended)."""
        with self._holds_lock:
            span = self.holds.release(worker, self.clock() if at is None else at)
            if span is not None:
                self._append({"type": "hold", "hold": span.to_json()})

    def release_all_holds(self) -> None:
        with self._holds_lock:
            for span in self.holds.release_all(self.clock()):
                self._append({"type": "hold", "hold": span.to_json()})

    @property
    def gpu_hours_held(self) -> float:
        """GPU-hours the workers held, busy or idle (workers still held count up to now)."""
        return self.holds.gpu_seconds(self.clock()) / 3600.0

    @property
    def cpu_hours_held(self) -> float:
        return self.holds.cpu_seconds(self.clock()) / 3600.0

    @property
    def cost_held(self) -> float:
        now = self.clock()
        return self.cost_of(self.holds.gpu_seconds(now), self.holds.cpu_seconds(now))

    def record_decision(self, decision: Mapping[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in decision.items()}
        self.decisions.append(clean)
        if self._decisions_on_disk > 0:
            # The replayed driver makes its decisions again, in the same order: one copy on disk.
            self._decisions_on_disk -= 1
            return
        self._append({"type": "decision", "decision": clean})

    # --- resume ---------------------------------------------------------------------------------
    def record_session(self, session: Mapping[str, Any]) -> None:
        """One line per process that ran the sweep (its start, and active seconds before it)."""
        self.sessions.append(dict(session))
        self._append({"type": "session", "session": dict(session)})

    def start(self, marker: StartMarker) -> None:
        """Note that an attempt was dispatched, before it can have spent anything."""
        if marker.key in self.starts or marker.key in self._keys:
            return
        self.starts[marker.key] = marker
        self._note_attempt(marker.trial_id, marker.rung, marker.attempt)
        self._append({"type": "started", "start": asdict(marker)})

    def next_attempt(self, trial_id: str, rung: int) -> int:
        """0 for a (trial, rung) never dispatched, else one past the highest attempt billed or started."""
        top = self._top_attempt.get((trial_id, rung))
        return 0 if top is None else top + 1

    def finished(self, trial_id: str, rung: int) -> SpendRecord | None:
        """The latest attempt's record of (trial, rung) if it finished: completed, failed or timed out."""
        latest = self._latest.get((trial_id, rung))
        return latest if latest is not None and latest.status in FINISHED else None

    def unbilled_starts(self) -> list[StartMarker]:
        """Attempts dispatched but never billed: they died with the process that ran them."""
        return [m for key, m in self.starts.items() if key not in self._keys]

    def bill_pending(self, record: SpendRecord) -> bool:
        """Write ``record`` to disk now but keep it pending: the replay adopts it where the driver reaches it."""
        if record.key in self._keys:
            return False
        self._note(record)
        self.pending.append(record)
        self._append({"type": "spend", "record": record.to_json()})
        return True

    def adopt(self, trial_id: str, rung: int, upto: SpendRecord | None = None) -> list[SpendRecord]:
        """Move pending records into ``records``: every attempt of (trial, rung), and all before ``upto`` on disk.

        ``records`` stays in the order things were first billed, so the totals and the incumbent
        curve the controller reads are those it read before the crash.
        """
        if not self.pending:
            return []
        cut = next((i + 1 for i, r in enumerate(self.pending) if r is upto), 0)
        moved = [r for i, r in enumerate(self.pending) if i < cut or (r.trial_id == trial_id and r.rung == rung)]
        if moved:
            ids = {id(r) for r in moved}
            self.pending = [r for r in self.pending if id(r) not in ids]
            self._extend(moved)
        return moved

    def adopt_all(self) -> list[SpendRecord]:
        """Whatever the resumed driver did not reach still counts: nothing billed is lost."""
        moved, self.pending = self.pending, []
        self._extend(moved)
        return moved

    @property
    def cost(self) -> float:
        return self._cost

    def trials_started(self) -> int:
        return len({r.trial_id for r in self.records})

    def trials_failed(self) -> int:
        """Trials whose last record is a failure (a retried attempt that succeeded is not failed)."""
        last: dict[str, SpendRecord] = {}
        for r in self.records:
            last[r.trial_id] = r
        return sum(1 for r in last.values() if not r.ok)

    def trials_completed(self, max_budget: float) -> int:
        """Trials that reached the full budget with a valid score."""
        return len({r.trial_id for r in self.records if r.ok and r.budget >= max_budget - 1e-9})

    def trials_by_outcome(self, max_budget: float) -> dict[str, int]:
        """Every started trial counted once, by what happened to it last.

        ``stopped_by_gate``: not promoted past its last rung while others of its bracket went higher.
        ``unfinished``: its next stage never ran (the sweep stopped first, or is still running).
        """
        last: dict[str, SpendRecord] = {}
        top_rung: dict[int, int] = {}
        for r in self.records:
            last[r.trial_id] = r
            top_rung[r.bracket] = max(top_rung.get(r.bracket, r.rung), r.rung)
        out = {"full_budget": 0, "stopped_by_gate": 0, "failed": 0, "unfinished": 0}
        for r in last.values():
            outcome = trial_outcome(r, top_rung[r.bracket], max_budget, final=True)
            out[outcome if outcome in out else "failed"] += 1  # timed out, cancelled, lost: its last attempt failed
        return out

    def summary(self, max_budget: float) -> dict[str, Any]:
        now = self.clock()
        held_gpu_seconds, held_cpu_seconds = self.holds.gpu_seconds(now), self.holds.cpu_seconds(now)
        return {
            "gpu_hours": self.gpu_hours,
            "cost": self.cost,
            "gpu_hours_held": held_gpu_seconds / 3600.0,
            "cpu_hours_held": held_cpu_seconds / 3600.0,
            "cost_held": self.cost_of(held_gpu_seconds, held_cpu_seconds),
            "workers_held": len(self.holds.closed) + len(self.holds.open),
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "cpu_hours": self.cpu_hours,
            "price_per_cpu_hour": self.price_per_cpu_hour,
            "trials_started": self.trials_started(),
            "trials_completed": self.trials_completed(max_budget),
            "trials_failed": self.trials_failed(),
            "trials_by_outcome": self.trials_by_outcome(max_budget),
            "records": len(self.records),
            "setup": [{"kind": s.kind, "runs": s.runs, "wall_seconds": s.wall_seconds, "gpu_hours": s.gpu_hours,
                       "cpu_hours": s.cpu_hours, "cost": s.cost} for s in self.setup],
        }


@dataclass(frozen=True)
class IncumbentPoint:
    """After ``gpu_hours`` of spend, the best ``score`` at the highest ``budget`` reached so far."""

    gpu_hours: float
    budget: float
    score: float | None
    top_k_mean: float | None


class IncumbentCurve:
    """:func:`incumbent_curve`, extended record by record: :meth:`Ledger.incumbent` keeps one per
    (mode, top_k), so the controller's check, asked every few results, costs the new records only."""

    def __init__(self, mode: Mode, top_k: int = 1) -> None:
        self.sign = 1.0 if mode == "max" else -1.0
        self.keep = max(1, top_k)
        self.points: list[IncumbentPoint] = []
        self._spent = 0.0
        self._top_budget = -math.inf
        # The best top_k scores at the top fidelity (sign-adjusted, a min-heap) and the best of all: kept as
        # records come, so the curve costs O(n log top_k); sorting every score at the top fidelity per record
        # made one curve of a 20,000-record ledger take 12 s, and the controller builds one per check.
        self._top: list[float] = []
        self._best = -math.inf

    def extend(self, records: Iterable[SpendRecord]) -> list[IncumbentPoint]:
        sign, points = self.sign, self.points
        for r in records:
            self._spent += r.gpu_hours
            if r.ok:
                if r.budget > self._top_budget + 1e-9:
                    self._top_budget, self._top, self._best = r.budget, [], -math.inf
                if abs(r.budget - self._top_budget) <= 1e-9:
                    value = sign * float(r.score)  # type: ignore[arg-type]
                    self._best = max(self._best, value)
                    if len(self._top) < self.keep:
                        heapq.heappush(self._top, value)
                    elif value > self._top[0]:
                        heapq.heapreplace(self._top, value)
            if self._top:
                # Summed best first, as before, so every figure is the same float to the last bit.
                k = sorted(self._top, reverse=True)
                points.append(IncumbentPoint(self._spent, self._top_budget, sign * self._best, sign * sum(k) / len(k)))
            else:
                points.append(IncumbentPoint(self._spent, self._top_budget if math.isfinite(self._top_budget) else 0.0,
                                             None, None))
        return points


def incumbent_curve(records: Iterable[SpendRecord], mode: Mode, *, top_k: int = 1) -> list[IncumbentPoint]:
    """The anytime curve that the stop rule reads: scores only count at the highest fidelity reached.

    ``top_k_mean`` is the mean of the best ``top_k`` scores at that fidelity, which a single lucky
    noisy evaluation cannot move by more than 1/top_k of its luck.
    """
    return IncumbentCurve(mode, top_k).extend(records)
