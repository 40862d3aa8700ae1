"""The rung stage's in-process tasks: search, pruning gate, promotion.

They run in the flow process (the searcher's state lives there) and appear in the Prefect UI
beside each rung's mapped ``train`` runs. Each is a thin call into the pure core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from rungflow.budgets.schedulers import RungDecision, TrialScore, gate_rung
from rungflow.budgets.searchers import Observation, Searcher

__all__ = ["suggest_trials", "gate_trials", "promote_survivors"]


@task(name="search", task_run_name="search-b{bracket}", cache_policy=NO_CACHE, persist_result=False)
def suggest_trials(searcher: Searcher, count: int, bracket: int) -> list[dict[str, Any]]:
    """Propose the configurations that enter a bracket."""
    return searcher.suggest(count)


@task(name="gate", task_run_name="gate-b{bracket}-r{rung}", cache_policy=NO_CACHE, persist_result=False)
def gate_trials(scores: Sequence[TrialScore], keep: int, mode: Literal["max", "min"], bracket: int, rung: int) -> RungDecision:
    """Keep the top ``keep`` (≈ 1/η) of a rung; failed and NaN trials lose."""
    return gate_rung(scores, keep, mode)


@task(name="promote", task_run_name="promote-b{bracket}-r{rung}", cache_policy=NO_CACHE, persist_result=False)
def promote_survivors(
    searcher: Searcher, observations: Sequence[Observation], decision: RungDecision, bracket: int, rung: int
) -> list[str]:
    """Tell every result of the rung to the searcher, then send the survivors on to the next rung."""
    for obs in sorted(observations, key=lambda o: o.trial_id):
        searcher.observe(obs)
    return list(decision.promote)
