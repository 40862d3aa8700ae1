"""Keep or drop a history's prior at run time, on this sweep's own evidence.

A portfolio learned from other tasks can mislead (their best configurations may be this task's worst). The
portfolio's trials run in the first bracket beside cold proposals, so the sweep soon holds a fair comparison:
at the budget where the portfolio's trials first report, the best of them against the cold trials there.

- **kept** when the portfolio's best is at least the cold trials' median at that budget: the history holds here;
- **dropped** when it is below: what is left of the portfolio leaves the queue and the history's results leave
  the model (:meth:`Searcher.forget_prior`), so the search goes on as the cold model-based search would, from
  this sweep's own results.

The median, not the best, of the cold trials: a portfolio of four against a dozen random trials rarely holds
the single best of the rung even where it helps, while a portfolio whose best is below half of random draws is
worse than no prior. The verdict is taken once, before the first proposal after every portfolio trial proposed so
far and at least :data:`MIN_COLD` cold trials have a result at that budget (in a synchronous sweep: on the whole
first rung). Results and proposals come in the ledger's deterministic order, so a resumed sweep replays it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from rungflow.budgets.prior import config_key
from rungflow.budgets.searchers import Mode, Observation, Searcher

__all__ = ["PriorVerdict", "PriorDecision", "judge_prior", "PriorGuardSearcher", "MIN_COLD"]

# Fewer cold results than this say too little about the task to overrule the history.
MIN_COLD = 4


class PriorVerdict(StrEnum):
    PENDING = "pending"
    KEPT = "kept"
    DROPPED = "dropped"


@dataclass(frozen=True)
class PriorDecision:
    """The verdict and its figures: the portfolio's best and the cold trials' median at ``budget``."""

    verdict: PriorVerdict
    reason: str
    budget: float | None = None
    portfolio_best: float | None = None
    cold_median: float | None = None
    portfolio_trials: int = 0
    cold_trials: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": str(self.verdict)}


def judge_prior(portfolio_scores: Sequence[float | None], cold_scores: Sequence[float | None], mode: Mode,
                budget: float, *, min_cold: int = MIN_COLD) -> PriorDecision:
    """The verdict on the portfolio's results at ``budget`` against the cold trials' there (None: failed)."""
    sign = 1.0 if mode == "max" else -1.0
    finite = lambda xs: [float(x) for x in xs if x is not None and math.isfinite(x)]  # noqa: E731
    cold = finite(cold_scores)
    if len(cold) < min_cold:
        return PriorDecision(PriorVerdict.PENDING, f"fewer than {min_cold} cold results at budget {budget:g} to compare "
                                                   "the portfolio with", budget)
    mine = finite(portfolio_scores)
    median = statistics.median(cold)
    figures = dict(budget=budget, cold_median=median, portfolio_trials=len(portfolio_scores), cold_trials=len(cold))
    if not mine:
        return PriorDecision(PriorVerdict.DROPPED, f"every portfolio configuration failed at budget {budget:g}; the "
                                                   "search went on cold", **figures)  # type: ignore[arg-type]
    best = max(mine, key=lambda x: sign * x)
    if sign * best >= sign * median:
        return PriorDecision(PriorVerdict.KEPT, f"its best configuration scored {best:.4g} at budget {budget:g}, at or "
                                                f"above the cold trials' median {median:.4g} ({len(cold)} trials)",
                             portfolio_best=best, **figures)  # type: ignore[arg-type]
    return PriorDecision(PriorVerdict.DROPPED, f"its best configuration scored {best:.4g} at budget {budget:g}, "
                                               f"{'below' if mode == 'max' else 'above'} the cold trials' median "
                                               f"{median:.4g} ({len(cold)} trials): the history does not hold for this "
                                               "task, so the search went on cold", portfolio_best=best, **figures)  # type: ignore[arg-type]


class PriorGuardSearcher(Searcher):
    """Wraps the sweep's searcher (composition, as Ray Tune's ``ConcurrencyLimiter``) and takes the verdict.

    ``portfolio``: the history's configurations, enqueued by the warm start; ``prior_ids``: the ids of the
    history's results given to the warm start (the model's prior). A caller's own warm start is not touched.
    """

    def __init__(self, inner: Searcher, portfolio: Iterable[Mapping[str, Any]], prior_ids: Iterable[str]) -> None:
        super().__init__(inner.space, seed=inner.seed, mode=inner.mode, max_budget=inner.max_budget)
        self.inner = inner
        self.name = inner.name
        self.portfolio = [dict(c) for c in portfolio]
        self.prior_ids = list(prior_ids)
        self._keys = {config_key(c) for c in self.portfolio}
        self._proposed = 0  # portfolio configurations proposed so far
        self._budget: float | None = None
        self._mine: dict[str, float | None] = {}
        self._cold: dict[float, dict[str, float | None]] = {}  # by budget: cold results may come first (ASHA)
        self._decision = PriorDecision(PriorVerdict.PENDING, "no portfolio trial has reported yet")
        if not self.portfolio:
            self._decision = PriorDecision(PriorVerdict.KEPT, "no portfolio: the history only feeds the model")

    def warm_start(self, observations: Iterable[Observation] = (), enqueue: Iterable[Mapping[str, Any]] = ()) -> None:
        self.inner.warm_start(observations, enqueue)

    def suggest(self, count: int) -> list[dict[str, Any]]:
        self._judge()  # on all the results told so far: a whole synchronous rung, or every ASHA result yet
        out = self.inner.suggest(count)
        self._proposed += sum(config_key(c) in self._keys for c in out)
        return out

    def observe(self, observation: Observation) -> None:
        self.inner.observe(observation)
        self.observations.append(observation)
        if self._decision.verdict is not PriorVerdict.PENDING:
            return
        if config_key(observation.config) not in self._keys:
            self._cold.setdefault(observation.budget, {})[observation.trial_id] = observation.score
            return
        if self._budget is None:
            self._budget = observation.budget  # the budget the portfolio first reports at is the one judged
        if observation.budget == self._budget:
            self._mine[observation.trial_id] = observation.score

    @property
    def prior_decision(self) -> PriorDecision:
        """The verdict on what has been told so far (a sweep that ends before the next proposal is judged too)."""
        self._judge()
        return self._decision

    def _judge(self) -> None:
        if self._decision.verdict is not PriorVerdict.PENDING or self._budget is None or len(self._mine) < self._proposed:
            return
        cold = list(self._cold.get(self._budget, {}).values())
        self._decision = judge_prior(list(self._mine.values()), cold, self.mode, self._budget)
        if self._decision.verdict is PriorVerdict.DROPPED:
            self.inner.forget_prior(self.prior_ids, self.portfolio)

    def forget_prior(self, observation_ids: Iterable[str], enqueued: Iterable[Mapping[str, Any]]) -> None:
        self.inner.forget_prior(observation_ids, enqueued)
