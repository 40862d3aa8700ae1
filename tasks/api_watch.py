"""Ride out a Prefect server restart: the sweep trains on while the API is down, for up to ``ui.api_outage_seconds``.

Nothing a trial needs goes through the Prefect API. Prefect 3 creates task runs in the flow process
and reports their states as events, which its events client holds and resends once the server's
websocket answers again; the ledger, ``result.json``, the Optuna study and MLflow never touch Prefect.
What does need the API is the sweep's own bookkeeping in the UI (artifacts, the task-run count in
:mod:`rungflow.tasks.ui_sync`) and the flow run's final state. So a daemon thread probes ``/health``;
while it fails, those calls are skipped rather than left to Prefect's client retries (seconds each,
from the driver's thread), and once it answers again the next publish brings every artifact up to
date from ``result.json``. Only an outage longer than the allowance stops the sweep, at its next stage,
with one line naming ``PREFECT_API_URL``; a sweep that finishes during an outage waits for the server
(within the same allowance) so its flow run can end Completed and its final artifacts be written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rungflow.budgets.monitor import MonitorLost

__all__ = ["PrefectAPIWatch", "PrefectAPIUnreachable"]

log = logging.getLogger("rungflow.api")


class PrefectAPIUnreachable(MonitorLost):
    """The Prefect API stayed down past the allowance; ``str()`` is one line naming PREFECT_API_URL and the fix.

    A :class:`MonitorLost`: the driver stops, bills every trial in flight, then lets it go on."""


def _health(url: str, timeout: float) -> bool:
    import httpx

    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class PrefectAPIWatch:
    """Whether the Prefect API at ``url`` answers, probed every ``probe_seconds`` from a daemon thread.

    ``allowed_seconds``: how long an outage may last before :meth:`check` raises. Outages are kept
    (start, end, seconds) for ``result.json``.
    """

    def __init__(self, url: str | None, allowed_seconds: float, probe_seconds: float = 1.0, timeout: float = 2.0,
                 probe: Callable[[], bool] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.url, self.allowed_seconds, self.probe_seconds, self.timeout = url, allowed_seconds, probe_seconds, timeout
        self._probe = probe or (lambda: url is None or _health(url, timeout))
        self._clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.back_at = -float("inf")
        self._raise_exceptions: bool | None = None
        self.outages: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the probe ----------------------------------------------------------------------------------
    def start(self) -> PrefectAPIWatch:
        if self.url is not None and self._thread is None:
            self._noise = _OutageNoise(self)
            for name in _NOISY:
                logging.getLogger(name).addFilter(self._noise)
            self._thread = threading.Thread(target=self._run, name="rungflow-api-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            for name in _NOISY:
                logging.getLogger(name).removeFilter(self._noise)
            self._quiet_log_shipper(False)

    def _run(self) -> None:
        while not self._stop.wait(self.probe_seconds):
            self.probe()

    def probe(self) -> bool:
        """Probe now; note the start or the end of an outage. True when the API answered."""
        up = self._probe()
        now = self._clock()
        with self._lock:
            if not up and self.down_since is None:
                self.down_since = now
                self._quiet_log_shipper(True)
                log.warning("the Prefect API at PREFECT_API_URL=%s stopped answering; the sweep keeps training and "
                            "keeps every result in its run directory, and stops only if it stays down for more than "
                            "%g s (ui.api_outage_seconds)", self.url, self.allowed_seconds)
            elif up and self.down_since is not None:
                seconds = now - self.down_since
                self.outages.append({"started_at": self.down_since, "ended_at": now, "seconds": round(seconds, 1)})
                self.down_since = None
                self.back_at = now
                self._quiet_log_shipper(False)
                log.warning("the Prefect API at PREFECT_API_URL=%s answers again after %.0f s; the UI catches up",
                            self.url, seconds)
        return up

    def _quiet_log_shipper(self, quiet: bool) -> None:
        """Prefect's log shipper writes "--- Error logging to API ---" to stderr for every batch it cannot send
        while the API is down (those lines never reach the UI; RUN_DIR/sweep.log has them all). It writes only
        while ``logging.raiseExceptions`` is set."""
        if quiet:
            self._raise_exceptions = logging.raiseExceptions
            logging.raiseExceptions = False
        elif self._raise_exceptions is not None:
            logging.raiseExceptions = self._raise_exceptions
            self._raise_exceptions = None

    # --- what the sweep asks ------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        """As of the last probe (or a failed call reported through :meth:`failed`)."""
        return self.down_since is None

    def down_for(self) -> float:
        since = self.down_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    def failed(self) -> None:
        """A call to the API just failed to connect: the outage starts now if the probe has not seen it yet."""
        with self._lock:
            if self.down_since is None:
                self.down_since = self._clock()
                self._quiet_log_shipper(True)
                log.warning("the Prefect API at PREFECT_API_URL=%s stopped answering; the sweep keeps training "
                            "(for up to %g s of outage, ui.api_outage_seconds)", self.url, self.allowed_seconds)

    def check(self) -> bool:
        """True when the API answers; False during an outage within the allowance; past it, raise."""
        if self.up:
            return True
        if self.down_for() > self.allowed_seconds:
            raise PrefectAPIUnreachable(self.message())
        return False

    def wait_until_up(self) -> bool:
        """Block until the API answers again (True if it had to wait), or raise once the outage passes the allowance."""
        if self.up:
            return False
        log.warning("the sweep is done; waiting up to %.0f s more for the Prefect API at PREFECT_API_URL=%s to record "
                    "its flow run's end", max(0.0, self.allowed_seconds - self.down_for()), self.url)
        while not self.probe():
            if self.down_for() > self.allowed_seconds:
                raise PrefectAPIUnreachable(self.message())
            time.sleep(min(self.probe_seconds, 1.0))
        return True

    def message(self) -> str:
        return (f"PREFECT_API_URL={self.url} did not answer for {self.down_for():.0f} s, more than ui.api_outage_seconds="
                f"{self.allowed_seconds:g}")

    def summary(self) -> dict[str, Any]:
        outages = list(self.outages)
        if self.down_since is not None:
            outages.append({"started_at": self.down_since, "ended_at": None, "seconds": round(self.down_for(), 1)})
        return {"allowed_outage_seconds": self.allowed_seconds, "outages": outages}


# Prefect's own lines during an outage: its events client warns that it cannot connect and its queue service
# logs each undelivered event in full (a screenful per trial), though the client keeps the event and resends
# it once the server answers. The watch's two lines (down, back) say it once.
_NOISY = ("prefect.events.clients", "prefect._internal.concurrency")


class _OutageNoise(logging.Filter):
    def __init__(self, watch: PrefectAPIWatch) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        # A reconnect that gave up just as the server came back still belongs to the outage.
        if self.watch.up and time.time() - self.watch.back_at > 30:
            return True
        message = str(record.msg)
        return not (message.startswith("Unable to connect to") or "failed to process item" in message)
