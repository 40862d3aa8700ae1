"""The line a trial that did not finish shows in the Prefect UI and the flow's log: its status once, then why."""

from __future__ import annotations

from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.tasks.train_task import _outcome


def _record(status: TrialStatus, error: str | None) -> SpendRecord:
    return SpendRecord(trial_id="t0001", bracket=0, rung=0, budget=1.0, score=None, status=status, gpu_seconds=0.0,
                       gpus=0.0, cost=0.0, started_at=0.0, finished_at=1.0, error=error)


def test_a_cancelled_trials_reason_reads_its_status_once():
    assert _outcome(_record(TrialStatus.CANCELLED, "cancelled mid-trial: 60 s elapsed, deadline 60 s")) == \
        "cancelled mid-trial: 60 s elapsed, deadline 60 s"
    assert _outcome(_record(TrialStatus.CANCELLED, "cancelled: max_gpu_hours reached")) == "cancelled: max_gpu_hours reached"


def test_a_failed_trial_is_prefixed_with_its_status_and_a_bare_status_stands_alone():
    assert _outcome(_record(TrialStatus.FAILED, "ValueError: boom")) == "failed: ValueError: boom"
    assert _outcome(_record(TrialStatus.CANCELLED, None)) == "cancelled"
