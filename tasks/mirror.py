"""Mirrors of the ledger (the Optuna study, MLflow) written off the driver's thread.

Writing one Optuna trial into an RDB costs tens of milliseconds and an MLflow run a few HTTP calls: done
inline, a sweep of quick trials would spend most of its time there. A mirror is rebuilt from the whole
ledger each time (idempotent), so only the latest request matters: requests coalesce, one thread writes,
and the final request waits until everything is written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from rungflow.redact import redact

__all__ = ["BackgroundSync"]

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
