"""What a sweep holds, beside what its trials train: each worker's GPUs and CPUs from start to release.

A trial is billed the wall-clock it ran x the GPUs it held. But the worker that runs it (a Ray actor holding its
GPU share) is held longer: while it starts, and while it waits idle for the next trial, at a rung's barrier or at
the tail of a sweep. On a cluster that time is paid for and denied to everyone else. A :class:`Holds` keeps one
span per worker, from the moment it started (a Ray actor: where Ray's own record of the actor starts; the second or
so Ray takes to spawn its process is Ray's, not billed) to the moment it was given back; the ledger persists them,
the simulator keeps them for its virtual workers.

Idle workers are given back after a grace period (the runtime's ``release_idle_after``). The choice is the ski
rental problem: an idle worker costs its share each second, a new one costs its start-up (seconds on a busy node,
held too, and a trial waiting). Waiting as long as a start-up costs before giving it back never pays more than
twice the best choice made in hindsight, whatever comes next (Karlin et al., 1988); ``auto`` uses the start-up
the pool measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Bill", "HoldSpan", "Holds", "held_seconds", "idle_grace", "MIN_AUTO_RELEASE_SECONDS", "parse_release_after", "RELEASE_AUTO", "RELEASE_NEVER"]

RELEASE_AUTO = "auto"
RELEASE_NEVER = "never"
# 'auto' never gives a worker back sooner than this: between one trial's end and the next's dispatch the driver
# takes milliseconds, but on a loaded flow process it can take a second, and a worker lost to that is a start-up.
MIN_AUTO_RELEASE_SECONDS = 2.0


class Bill(StrEnum):
    """Which GPU-hours the caps and the money use."""

    TRAINED = "trained"  # wall-clock x share while a trial ran (or its own reported cost)
    HELD = "held"  # wall-clock x share while a worker held its resources, busy or idle


@dataclass(frozen=True)
class HoldSpan:
    """One worker's hold on ``gpus`` GPUs and ``cpus`` CPUs, from ``acquired_at``; ``released_at`` None while held."""

    worker: str
    gpus: float
    cpus: float
    acquired_at: float
    released_at: float | None = None

    def seconds(self, now: float) -> float:
        end = self.released_at if self.released_at is not None else now
        return max(0.0, end - self.acquired_at)

    def to_json(self) -> dict[str, Any]:
        return {"worker": self.worker, "gpus": self.gpus, "cpus": self.cpus, "acquired_at": self.acquired_at,
                "released_at": self.released_at}


class Holds:
    """Every worker's spans: closed ones summed once, open ones measured up to ``now``."""

    def __init__(self) -> None:
        self._open: dict[str, HoldSpan] = {}
        self.closed: list[HoldSpan] = []
        self._closed_gpu_seconds = 0.0
        self._closed_cpu_seconds = 0.0

    def acquire(self, worker: str, gpus: float, cpus: float, at: float) -> HoldSpan:
        if worker in self._open:
            raise ValueError(f"worker {worker!r} is already held since {self._open[worker].acquired_at}")
        span = self._open[worker] = HoldSpan(worker, gpus, cpus, at)
        return span

    def release(self, worker: str, at: float) -> HoldSpan | None:
        """Close ``worker``'s span at ``at``; None if it was not held (released twice, or never acquired)."""
        span = self._open.pop(worker, None)
        if span is None:
            return None
        closed = HoldSpan(span.worker, span.gpus, span.cpus, span.acquired_at, max(at, span.acquired_at))
        self._add_closed(closed)
        return closed

    def _add_closed(self, span: HoldSpan) -> None:
        self.closed.append(span)
        self._closed_gpu_seconds += span.seconds(math.inf) * span.gpus
        self._closed_cpu_seconds += span.seconds(math.inf) * span.cpus

    def restore(self, spans: Iterable[HoldSpan], *, open_until: float) -> None:
        """Spans read back from a ledger. One still open there was held by a process that died: it is billed up
        to ``open_until`` (the last moment that process is shown to have been alive), as an interrupted trial is."""
        for span in spans:
            self._add_closed(span if span.released_at is not None else
                             HoldSpan(span.worker, span.gpus, span.cpus, span.acquired_at, max(open_until, span.acquired_at)))

    def release_all(self, at: float) -> list[HoldSpan]:
        return [span for worker in list(self._open) if (span := self.release(worker, at)) is not None]

    @property
    def open(self) -> list[HoldSpan]:
        return list(self._open.values())

    def gpu_seconds(self, now: float) -> float:
        return self._closed_gpu_seconds + sum(s.seconds(now) * s.gpus for s in self._open.values())

    def cpu_seconds(self, now: float) -> float:
        return self._closed_cpu_seconds + sum(s.seconds(now) * s.cpus for s in self._open.values())


def idle_grace(release_after: float | str, startup_seconds: float) -> float | None:
    """Seconds an idle worker is kept (None: to the end); ``auto`` waits as long as a worker takes to start."""
    if release_after == RELEASE_NEVER:
        return None
    if release_after == RELEASE_AUTO:
        return max(MIN_AUTO_RELEASE_SECONDS, startup_seconds)
    return float(release_after)


def held_seconds(jobs: Iterable[tuple[float, float]], *, grace: float | None, startup: float, end: float) -> float:
    """Seconds one slot's worker is held for ``jobs`` (its (start, finish) spans), as the runtime's pool holds it.

    The worker is asked for ``startup`` seconds before its first job. Between jobs it waits idle; a gap of ``grace``
    or more gives it back after ``grace`` and a new one is asked for ``startup`` before the next job (a gap shorter
    than grace plus start-up is cheaper kept). After its last job it waits ``grace`` or until ``end``, the sweep's
    end. ``grace`` None keeps it to ``end``. The simulator's slots stand for the pool's workers.
    """
    spans = sorted(jobs)
    if not spans:
        return 0.0
    held = startup
    for (start, finish), following in zip(spans, [*spans[1:], None]):
        held += finish - start
        if following is None:
            tail = end - finish
            held += max(0.0, tail if grace is None else min(grace, tail))
            break
        gap = max(0.0, following[0] - finish)
        held += gap if grace is None or gap < grace else grace + startup
    return held


def parse_release_after(value: Any) -> float | str:
    """``runtime.release_idle_after``: seconds >= 0, ``auto`` or ``never``; ValueError naming the fix otherwise."""
    if isinstance(value, str) and value.strip().lower() in (RELEASE_AUTO, RELEASE_NEVER):
        return value.strip().lower()
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds, 'auto' or 'never'")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of seconds, 'auto' (wait as long as a worker takes to start) or "
                         "'never' (keep every worker to the end, billed held)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be 0 or more seconds (0 gives an idle worker back at once), 'auto' or 'never'")
    return seconds
