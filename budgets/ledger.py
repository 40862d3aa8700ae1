"""The spend ledger: one append-only record per unit of spend, the single source of truth for cost.

Every (trial, rung, attempt) is charged once, whatever happens to it: completed, failed, timed
out or cancelled trials are billed for what they used. Records are JSON lines, flushed and
fsynced as they are written, so a killed sweep loses nothing it already recorded and a resumed
one reads the ledger back and never pays twice.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

__all__ = ["TrialStatus", "SpendRecord", "Ledger", "IncumbentPoint", "incumbent_curve"]

Mode = Literal["max", "min"]


class TrialStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    # The worker died under the trial (node lost, process killed); billed, then retried as a new attempt.
    LOST = "lost"


@dataclass(frozen=True)
class SpendRecord:
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

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0

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
    def from_json(cls, data: Mapping[str, Any]) -> "SpendRecord":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["status"] = TrialStatus(fields["status"])
        return cls(**fields)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class Ledger:
    """Spend records in order, optionally persisted to ``path`` (JSON lines, one per record)."""

    def __init__(self, path: str | Path | None = None, *, price_per_gpu_hour: float = 0.0) -> None:
        self.path = Path(path) if path is not None else None
        self.price_per_gpu_hour = price_per_gpu_hour
        self.records: list[SpendRecord] = []
        self.decisions: list[dict[str, Any]] = []
        self._keys: set[tuple[str, int, int]] = set()
        # Running totals: caps are checked after every result, and summing 10,000 records each time is O(n²).
        self._gpu_seconds = 0.0
        self._cost = 0.0
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A record cut short by a kill mid-write: drop the torn tail so the next append starts on
            # a fresh line (glued onto the fragment, it would be lost on the following load).
            with self.path.open("r+b") as fh:
                fh.truncate(raw.rfind(b"\n") + 1)
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
                if entry.get("type") == "spend":
                    record = SpendRecord.from_json(entry["record"])
                    if record.key not in self._keys:
                        self._add(record)
                elif entry.get("type") == "decision":
                    self.decisions.append(entry["decision"])

    def _append(self, entry: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _add(self, record: SpendRecord) -> None:
        self._keys.add(record.key)
        self.records.append(record)
        self._gpu_seconds += record.gpu_seconds
        self._cost += record.cost

    def cost_of(self, gpu_seconds: float) -> float:
        return gpu_seconds / 3600.0 * self.price_per_gpu_hour

    def charge(self, record: SpendRecord) -> bool:
        """Record one unit of spend; returns False (and charges nothing) if this key was already billed."""
        if record.key in self._keys:
            return False
        self._add(record)
        self._append({"type": "spend", "record": record.to_json()})
        return True

    def has(self, trial_id: str, rung: int, attempt: int = 0) -> bool:
        return (trial_id, rung, attempt) in self._keys

    def record_decision(self, decision: Mapping[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in decision.items()}
        self.decisions.append(clean)
        self._append({"type": "decision", "decision": clean})

    @property
    def gpu_hours(self) -> float:
        return self._gpu_seconds / 3600.0

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

    def summary(self, max_budget: float) -> dict[str, Any]:
        return {
            "gpu_hours": self.gpu_hours,
            "cost": self.cost,
            "price_per_gpu_hour": self.price_per_gpu_hour,
            "trials_started": self.trials_started(),
            "trials_completed": self.trials_completed(max_budget),
            "trials_failed": self.trials_failed(),
            "records": len(self.records),
        }


@dataclass(frozen=True)
class IncumbentPoint:
    """After ``gpu_hours`` of spend, the best ``score`` at the highest ``budget`` reached so far."""

    gpu_hours: float
    budget: float
    score: float | None
    top_k_mean: float | None


def incumbent_curve(records: Iterable[SpendRecord], mode: Mode, *, top_k: int = 1) -> list[IncumbentPoint]:
    """The anytime curve that the stop rule reads: scores only count at the highest fidelity reached.

    ``top_k_mean`` is the mean of the best ``top_k`` scores at that fidelity, which a single lucky
    noisy evaluation cannot move by more than 1/top_k of its luck.
    """
    sign = 1.0 if mode == "max" else -1.0
    spent = 0.0
    top_budget = -math.inf
    scores_at_top: list[float] = []
    curve: list[IncumbentPoint] = []
    for r in records:
        spent += r.gpu_hours
        if r.ok:
            if r.budget > top_budget + 1e-9:
                top_budget, scores_at_top = r.budget, []
            if abs(r.budget - top_budget) <= 1e-9:
                scores_at_top.append(sign * float(r.score))  # type: ignore[arg-type]
        if scores_at_top:
            best_sorted = sorted(scores_at_top, reverse=True)
            best = sign * best_sorted[0]
            k = best_sorted[: max(1, top_k)]
            curve.append(IncumbentPoint(spent, top_budget, best, sign * sum(k) / len(k)))
        else:
            curve.append(IncumbentPoint(spent, top_budget if math.isfinite(top_budget) else 0.0, None, None))
    return curve
