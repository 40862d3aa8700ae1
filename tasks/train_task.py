"""The Prefect task a trial runs as: ``train-<trial>-r<rung>`` in the UI, executed on the active runtime.

Apart from :mod:`rungflow.tasks.train` (what the workers run, no Prefect task there) so the runtimes can
import the trial code without the trial code importing the runtimes.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from rungflow.budgets.ledger import TrialStatus
from rungflow.redact import redact
from rungflow.tasks.runtime import active_runtime
from rungflow.tasks.train import TrialResult, TrialSpec

__all__ = ["train_trial"]


def _outcome(record: Any) -> str:
    """"cancelled: 60 s elapsed, deadline 60 s": the status once, even where the error already begins with it."""
    status = str(record.status)
    error = record.error or ""
    if not error:
        return status
    return error if error.startswith(status) else f"{status}: {error}"


def _as_state(result: TrialResult) -> Any:
    """A trial that failed shows red in the Prefect UI with its error; the result rides along as the state's data."""
    from prefect.states import Cancelled, Completed, Failed

    record = result.record
    if record.ok:
        return Completed(data=result)
    message = _outcome(record)
    if record.status == TrialStatus.CANCELLED:
        return Cancelled(message=message, data=result)
    return Failed(message=message, data=result)


@task(
    name="train",
    task_run_name="train-{spec.trial_id}-r{spec.rung}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=0,  # the runtime owns retries (from the last checkpoint); Prefect retrying too would double them
)
def train_trial(spec: TrialSpec) -> Any:
    """Train one trial to its rung's budget on the active runtime (threads or Ray actors)."""
    from prefect import get_run_logger

    result = active_runtime().execute(spec)
    logger = get_run_logger()
    for level, line in result.logs:
        logger.log(level, redact(line))
    for lost in result.lost_attempts:
        logger.warning("attempt %d: %s", lost.attempt, redact(lost.error or ""))
    if not result.ok:
        logger.warning("trial %s rung %s %s", spec.trial_id, spec.rung, redact(_outcome(result.record)))
    return _as_state(result)
