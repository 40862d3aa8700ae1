"""A pool of trial workers that holds only what it uses, and says what it held.

Workers (Ray actors, each holding a trial's GPU share; or a thread runtime's slots) are created on demand up to the
pool's size and reused, the most recently idle first so the warmest worker (its dataset and CUDA context loaded)
takes the next trial. A worker idle for ``release_after`` seconds is given back: at a rung's barrier or the tail of
a sweep its GPU share goes back to the cluster instead of being held idle. Every worker's hold, from the moment
its resources were asked for to the moment they were given back, goes to a :class:`HoldSink` (the ledger), so the
bill shows what the sweep held as well as what its trials trained (budgets/holding.py says why ``auto``
waits as long as a worker took to start).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from rungflow.budgets.holding import RELEASE_AUTO, idle_grace

__all__ = ["HoldSink", "WorkerPool"]


class HoldSink(Protocol):
    """Where a pool reports its holds (:class:`rungflow.budgets.ledger.Ledger` is one)."""

    def acquire_hold(self, worker: str, gpus: float, cpus: float, at: float | None = None) -> None: ...

    def release_hold(self, worker: str, at: float | None = None) -> None: ...


class WorkerPool:
    """Up to ``size`` workers from ``create``, reused, and destroyed with ``destroy`` once idle ``release_after``
    seconds (a number, ``auto`` or ``never``). ``acquire`` blocks while all are busy and raises what ``create``
    raises. Thread-safe: trials acquire and release from their own task threads."""

    def __init__(self, size: int, create: Callable[[], Any], destroy: Callable[[Any], None], *, gpus: float,
                 cpus: float, release_after: float | str = RELEASE_AUTO, holds: HoldSink | None = None,
                 name: str = "worker", clock: Callable[[], float] = time.time,
                 started_at: Callable[[Any], float | None] | None = None) -> None:
        self.size, self._create, self._destroy = size, create, destroy
        self.gpus, self.cpus, self.release_after, self.holds = gpus, cpus, release_after, holds
        self._clock = clock
        self._started_at = started_at
        self._names = (f"{name}-{n}" for n in itertools.count())
        self._cond = threading.Condition()
        self._idle: list[tuple[Any, float]] = []  # (worker, idle since), the most recently idle last
        self._name_of: dict[int, str] = {}
        self._count = 0
        self._startup_seconds: list[float] = []
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        self.created = 0
        self.released_idle = 0

    # --- the grace period ----------------------------------------------------------------------------
    def idle_grace(self) -> float | None:
        """Seconds an idle worker is kept; None: kept to the end."""
        measured = sorted(self._startup_seconds)
        return idle_grace(self.release_after, measured[len(measured) // 2] if measured else 0.0)

    # --- acquire / release ---------------------------------------------------------------------------
    def acquire(self) -> Any:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()[0]
                if self._count < self.size:
                    self._count += 1
                    name = next(self._names)
                    break
                self._cond.wait()
        # Held from the moment it is asked for, start-up included, unless the worker says when it started: a Ray
        # actor's hold starts where Ray's own record of the actor does, so the two bills agree.
        asked_at = self._clock()
        if self.holds is not None and self._started_at is None:
            self.holds.acquire_hold(name, self.gpus, self.cpus, asked_at)
        t0 = time.perf_counter()
        try:
            worker = self._create()
        except BaseException:
            self._forget(name, held=self._started_at is None)
            raise
        if self.holds is not None and self._started_at is not None:
            started = self._started_at(worker)
            self.holds.acquire_hold(name, self.gpus, self.cpus, asked_at if started is None else started)
        with self._cond:
            self._startup_seconds.append(time.perf_counter() - t0)
            self._name_of[id(worker)] = name
            self.created += 1
        return worker

    def release(self, worker: Any) -> None:
        """``worker`` finished its trial and is idle: the next trial takes it, or it is given back after the grace."""
        with self._cond:
            self._idle.append((worker, self._clock()))
            self._cond.notify()
            if self._reaper is None and self.idle_grace() is not None:
                self._reaper = threading.Thread(target=self._reap, name="worker-pool-reaper", daemon=True)
                self._reaper.start()

    def discard(self, worker: Any) -> None:
        """``worker`` is dead or was killed (lost, timed out, cancelled): destroyed, its hold ended, a new one may start."""
        self._destroy_quietly(worker)
        with self._cond:
            name = self._name_of.pop(id(worker), None)
        if name is not None:
            self._forget(name)

    def _forget(self, name: str, held: bool = True) -> None:
        if self.holds is not None and held:
            self.holds.release_hold(name)
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def _destroy_quietly(self, worker: Any) -> None:
        try:
            self._destroy(worker)
        except Exception:
            pass  # already gone: what matters is that the pool stops counting it

    # --- giving idle workers back --------------------------------------------------------------------
    def _reap(self) -> None:
        while not self._closed.is_set():
            with self._cond:
                grace = self.idle_grace()
                if grace is None:
                    return
                now = self._clock()
                stale = [(w, since) for w, since in self._idle if now - since >= grace]
                self._idle = [(w, since) for w, since in self._idle if now - since < grace]
                wake = min((since + grace - now for _, since in self._idle), default=grace)
            for worker, _ in stale:
                self.released_idle += 1
                self.discard(worker)
            self._closed.wait(max(0.05, min(wake, grace)))

    def close(self) -> None:
        """Give every idle worker back (busy ones are the caller's to stop first); the pool can be used again."""
        with self._cond:
            idle, self._idle = self._idle, []
        for worker, _ in idle:
            self.discard(worker)
        self._closed.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        self._reaper = None
        self._closed = threading.Event()
