"""Mirrors of the ledger (the Optuna study, MLflow) written off the driver's thread.

Writing one Optuna trial into an RDB costs tens of milliseconds and an MLflow run a few HTTP calls: done
inline, a sweep of quick trials would spend most of its time there. A mirror catches up with the whole
ledger each time (idempotent), so only the latest request matters: requests coalesce, one thread writes,
and the final request waits until everything is written. It is handed the ledger's live, append-only list,
not a copy, and :class:`LedgerGroups` reads only the records it has not seen: copying or regrouping 10,000
records at every result is quadratic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rungflow.budgets.ledger import SpendRecord, trial_outcome
from rungflow.redact import redact

__all__ = ["BackgroundSync", "LedgerGroups"]

log = logging.getLogger("rungflow.mirror")


class BackgroundSync:
    def __init__(self, name: str, work: Callable[..., Any]) -> None:
        self._name, self._work = name, work
        self._cond = threading.Condition()
        self._pending: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, *args: Any, final: bool = False, timeout: float = 600.0, **kwargs: Any) -> None:
        with self._cond:
            self._pending = (args, {**kwargs, "final": final})
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"rungflow-{self._name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            if final:
                self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout=timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None)
                args, kwargs = self._pending  # type: ignore[misc]
                self._pending, self._busy = None, True
            try:
                self._work(*args, **kwargs)
            except Exception as exc:  # the ledger is the truth: the next request writes what this one could not
                log.warning("%s not updated (%s: %s); retried at the next result", self._name, type(exc).__name__,
                            redact(str(exc)).splitlines()[0][:200] if str(exc) else "")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


class LedgerGroups:
    """The ledger's records grouped by trial (first-billed order), with each bracket's highest rung run.

    :meth:`catch_up` reads only records it has not seen. It is given the same growing list every time;
    a list that is not an extension of what it read (another ledger, a test's own lists) starts it over.
    """

    def __init__(self) -> None:
        self.by_trial: dict[str, list[SpendRecord]] = {}
        self.top_rung: dict[int, int] = {}
        self.bracket_of: dict[str, int] = {}
        self._seen = 0
        self._last: SpendRecord | None = None

    def catch_up(self, records: Sequence[SpendRecord]) -> tuple[list[str], set[int]]:
        """Take the new records; returns the trials they touch (first-billed order) and the brackets whose
        highest rung rose."""
        end = len(records)  # the driver may append while this runs: read up to here
        if end < self._seen or (self._seen and records[self._seen - 1] is not self._last):
            self.__init__()  # type: ignore[misc]
        touched: dict[str, None] = {}
        raised: set[int] = set()
        for index in range(self._seen, end):
            record = records[index]
            self.by_trial.setdefault(record.trial_id, []).append(record)
            self.bracket_of.setdefault(record.trial_id, record.bracket)
            touched[record.trial_id] = None
            if record.rung > self.top_rung.get(record.bracket, -1):
                self.top_rung[record.bracket] = record.rung
                raised.add(record.bracket)
        if end:
            self._seen, self._last = end, records[end - 1]
        return list(touched), raised

    def outcome(self, trial_id: str, max_budget: float, *, final: bool, asynchronous: bool) -> str | None:
        """:func:`trial_outcome` of the trial's last record so far, against its bracket's highest rung."""
        last = self.by_trial[trial_id][-1]
        return trial_outcome(last, self.top_rung[last.bracket], max_budget, final=final, asynchronous=asynchronous)
