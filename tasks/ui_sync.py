"""Keep the Prefect UI complete at high trial rates: hold back new trials while the server is behind.

Prefect 3 records a task run from the state events its client emits. The server's task-run recorder
takes them from a message queue that drops events once full (in-memory messaging: 10,000 per
subscription) and, by default, writes one event per database transaction. A sweep that finishes
trials faster than the server records them loses those task runs from the UI for good (measured:
3,750 of 10,000 shown). So the driver counts the train task runs it has seen finish and, once more
than ``max_unrecorded`` of them are missing from the API, waits for the server before it submits
the next trial. The sweep is never held hostage by the UI: if the server makes no progress for
``stall_seconds`` (events already lost, or the API gone), it stops waiting, says so once, and goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordedTaskRuns", "TRAIN_TASK_PREFIX", "recommended_server_settings"]

logger = logging.getLogger("rungflow.ui")

# tasks/train.py names every trial's task run ``train-{trial}-r{rung}``.
TRAIN_TASK_PREFIX = "train-"
_TERMINAL = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]


def recommended_server_settings() -> dict[str, str]:
    """Server settings under which the task-run recorder keeps up with thousands of trials a minute.

    Batched inserts (one transaction per 200 events rather than per event) and a 1 s flush, so a
    quiet sweep's states still show within a second. Applied to the server rungflow starts itself;
    the README recommends them for a user's ``prefect server start``.
    """
    return {
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    }


@dataclass
class RecordedTaskRuns:
    """Counts this flow run's finished train task runs against those the Prefect API has recorded."""

    flow_run_id: str
    max_unrecorded: int = 1000
    poll_seconds: float = 0.5
    stall_seconds: float = 20.0
    count_recorded: Callable[[], int] | None = None
    # False while the API is down (tasks/api_watch.py): no count is asked for, the sweep trains on, and waiting
    # resumes once the server is back, its events worker resending the states it could not deliver.
    api_up: Callable[[], bool] | None = None
    finished: int = 0
    recorded: int = 0
    waited_seconds: float = 0.0
    waits: int = 0
    gave_up: str | None = None
    _clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @classmethod
    def for_current_flow_run(cls, max_unrecorded: int | None) -> RecordedTaskRuns | None:
        """None outside a flow run or when the check is switched off (``ui.max_unrecorded_task_runs``: null)."""
        if not max_unrecorded:
            return None
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return None
        return cls(str(context.flow_run.id), max_unrecorded=max_unrecorded)

    def task_run_finished(self) -> None:
        """The driver saw one more train task run reach a final state."""
        self.finished += 1

    @property
    def unrecorded(self) -> int:
        return max(0, self.finished - self.recorded)

    def wait_for_server(self) -> None:
        """Return at once unless the API may be ``max_unrecorded`` behind; then wait until it is half that."""
        if self.gave_up is not None or self.finished - self.recorded <= self.max_unrecorded:
            return
        if self.api_up is not None and not self.api_up():
            return
        started = last_progress = self._clock()
        waited = False
        while True:
            try:
                recorded = self._count()
            except Exception as exc:  # the sweep's own API-loss handling decides what a dead API means
                if self.api_up is not None:
                    break  # an outage: the watch has it; the next trial asks again
                self._give_up(f"the Prefect API did not answer a task-run count ({type(exc).__name__})")
                break
            if self.api_up is not None and not self.api_up():
                break
            now = self._clock()
            if recorded > self.recorded:
                last_progress = now
            self.recorded = max(self.recorded, recorded)
            if self.unrecorded <= self.max_unrecorded // 2:
                break
            if now - last_progress > self.stall_seconds:
                self._give_up(f"the Prefect API recorded no task run for {self.stall_seconds:.0f} s with "
                              f"{self.unrecorded} finished ones missing (the server dropped their events)")
                break
            if not waited:
                waited = True
                self.waits += 1
                logger.info("waiting for the Prefect API to record %d finished task runs before starting more trials",
                            self.unrecorded)
            self._sleep(self.poll_seconds)
        self.waited_seconds += self._clock() - started

    def summary(self) -> dict[str, Any]:
        return {"finished_task_runs": self.finished, "recorded_at_last_check": self.recorded,
                "max_unrecorded": self.max_unrecorded, "waits": self.waits,
                "waited_seconds": round(self.waited_seconds, 3), "gave_up": self.gave_up}

    def _give_up(self, reason: str) -> None:
        self.gave_up = reason
        logger.warning("%s; not waiting for it any more, so the UI may miss some trials", reason)

    def _count(self) -> int:
        if self.count_recorded is not None:
            return self.count_recorded()
        from prefect.client.orchestration import get_client

        query = {"flow_runs": {"id": {"any_": [self.flow_run_id]}},
                 "task_runs": {"name": {"like_": TRAIN_TASK_PREFIX}, "state": {"type": {"any_": _TERMINAL}}}}
        with get_client(sync_client=True) as client:
            response = client.request("POST", "/task_runs/count", json=query)
        return int(response.json())
