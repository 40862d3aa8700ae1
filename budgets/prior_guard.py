"""Keep or drop a history's prior at run time, on this sweep's own evidence.

A portfolio learned from other tasks can mislead (their best configurations may be this task's worst), and even a
harmless one costs time when it takes the place of the searcher's own proposals: BOHB's later proposals depend on
its first ones (its random stream and its model's first points). So the portfolio runs *beside* the searcher, not
instead of it:

- **interleaved**: while the prior is pending, the portfolio takes every other slot, starting with the first
  (P, own, P, own, ...), in the slots where the searcher's own proposals would have gone; the searcher is still
  asked for every slot, so its random stream stays where a cold sweep's is and only the displaced draws are lost;
- **held apart**: the portfolio trials' results are kept from the searcher's model until the verdict;
- **judged** at the budget where the portfolio first reports, once every portfolio trial proposed so far and at
  least :data:`MIN_COLD` of the searcher's own trials have a result there (in a synchronous sweep: the first rung of
  the first bracket), its best against the best of the searcher's own draws there:

  - **kept** when the portfolio's best is at least as good: its results join the model, the history holds here;
  - **dropped** when it is worse, or every portfolio trial failed: what is left of the portfolio leaves the queue,
    its results never reach the model, and the history's own results leave it too
    (:meth:`Searcher.forget_prior`): the search goes on from the searcher's own results, as it would cold.

The best, not the median, of the searcher's draws: configurations that survived other tasks' gates beat the median
random draw on most tasks whether or not they are good here (an upside-down history's portfolio is the worst of
the survivors and still beats it), so a median test keeps almost every portfolio. Results and proposals come in the
ledger's deterministic order, so a resumed sweep replays the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from rungflow.budgets.prior import config_key
from rungflow.budgets.searchers import Mode, Observation, Searcher

__all__ = ["PriorVerdict", "PriorDecision", "judge_prior", "PriorGuardSearcher", "MIN_COLD"]

# Fewer of the searcher's own results than this say too little about the task to overrule the history.
MIN_COLD = 4


class PriorVerdict(StrEnum):
    PENDING = "pending"
    KEPT = "kept"
    DROPPED = "dropped"


@dataclass(frozen=True)
class PriorDecision:
    """The verdict and its figures: the portfolio's best and the best of the searcher's own trials at ``budget``."""

    verdict: PriorVerdict
    reason: str
    budget: float | None = None
    portfolio_best: float | None = None
    cold_best: float | None = None
    portfolio_trials: int = 0
    cold_trials: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": str(self.verdict)}


def judge_prior(portfolio_scores: Sequence[float | None], cold_scores: Sequence[float | None], mode: Mode,
                budget: float, *, min_cold: int = MIN_COLD) -> PriorDecision:
    """The verdict on the portfolio's results at ``budget`` against the searcher's own there (None: failed)."""
    sign = 1.0 if mode == "max" else -1.0
    finite = lambda xs: [float(x) for x in xs if x is not None and math.isfinite(x)]  # noqa: E731
    cold = finite(cold_scores)
    if len(cold) < min_cold:
        return PriorDecision(PriorVerdict.PENDING, f"fewer than {min_cold} cold results at budget {budget:g} to compare "
                                                   "the portfolio with", budget)
    mine = finite(portfolio_scores)
    cold_best = max(cold, key=lambda x: sign * x)
    figures = dict(budget=budget, cold_best=cold_best, portfolio_trials=len(portfolio_scores), cold_trials=len(cold))
    if not mine:
        return PriorDecision(PriorVerdict.DROPPED, f"every portfolio configuration failed at budget {budget:g}; the "
                                                   "search went on cold", **figures)  # type: ignore[arg-type]
    best = max(mine, key=lambda x: sign * x)
    if sign * best >= sign * cold_best:
        return PriorDecision(PriorVerdict.KEPT, f"its best configuration scored {best:.4g} at budget {budget:g}, at or "
                                                f"{'above' if mode == 'max' else 'below'} the best of the cold trials "
                                                f"beside it, {cold_best:.4g} ({len(cold)} trials)",
                             portfolio_best=best, **figures)  # type: ignore[arg-type]
    return PriorDecision(PriorVerdict.DROPPED, f"its best configuration scored {best:.4g} at budget {budget:g}, "
                                               f"{'below' if mode == 'max' else 'above'} the best of the cold trials "
                                               f"beside it, {cold_best:.4g} ({len(cold)} trials): the history does not "
                                               "hold for this task, so the search went on cold", portfolio_best=best,
                         **figures)  # type: ignore[arg-type]


class PriorGuardSearcher(Searcher):
    """Wraps the sweep's searcher (composition, as Ray Tune's ``ConcurrencyLimiter``), runs the portfolio beside it
    and takes the verdict.

    ``portfolio``: the history's configurations (in the warm start's ``enqueue`` they are the guard's to propose; any
    other enqueued configuration, a caller's own warm start, is proposed first as before); ``prior_ids``: the ids of
    the history's results given to the warm start (the model's prior).
    """

    def __init__(self, inner: Searcher, portfolio: Iterable[Mapping[str, Any]], prior_ids: Iterable[str]) -> None:
        super().__init__(inner.space, seed=inner.seed, mode=inner.mode, max_budget=inner.max_budget)
        self.inner = inner
        self.name = inner.name
        self.portfolio = [dict(c) for c in portfolio]
        self.prior_ids = list(prior_ids)
        self._keys = {config_key(c) for c in self.portfolio}
        self._queue: list[dict[str, Any]] = []  # portfolio configurations not proposed yet
        self._own_queue: list[dict[str, Any]] = []  # the caller's own enqueued configurations
        self._proposed = 0  # portfolio configurations proposed so far
        self._own_proposed = 0  # the searcher's own proposals since the portfolio's first
        self._held: list[Observation] = []  # the portfolio's results, kept from the model until the verdict
        self._budget: float | None = None
        self._mine: dict[str, float | None] = {}
        self._cold: dict[float, dict[str, float | None]] = {}  # by budget: cold results may come first (ASHA)
        self._decision = PriorDecision(PriorVerdict.PENDING, "no portfolio trial has reported yet")
        if not self.portfolio:
            self._decision = PriorDecision(PriorVerdict.KEPT, "no portfolio: the history only feeds the model")

    def warm_start(self, observations: Iterable[Observation] = (), enqueue: Iterable[Mapping[str, Any]] = ()) -> None:
        if not self.portfolio:
            self.inner.warm_start(observations, enqueue)
            return
        enqueue = [dict(c) for c in enqueue if self.space.contains(c)]
        self._queue = [c for c in enqueue if config_key(c) in self._keys]
        self._own_queue = [c for c in enqueue if config_key(c) not in self._keys]
        self.inner.warm_start(observations)

    def suggest(self, count: int) -> list[dict[str, Any]]:
        self._judge()  # on all the results told so far: a whole synchronous rung, or every ASHA result yet
        if not self.portfolio:
            return self.inner.suggest(count)
        out, self._own_queue = self._own_queue[:count], self._own_queue[count:]
        own = self.inner.suggest(count - len(out)) if count > len(out) else []
        # The portfolio's share of these slots: never more than the searcher's own proposals so far, these included.
        share = min(len(self._queue), (self._own_proposed + len(own) - self._proposed) // 2 if len(own) > 1
                    else int(self._proposed < self._own_proposed))
        share = max(share, 0)
        kept = len(own) - share
        self._own_proposed += kept
        self._proposed += share
        # Its configurations take the last slots: the searcher's first draws run as they would cold, and the
        # displaced ones are the draws it would have made last.
        return out + own[:kept] + [self._queue.pop(0) for _ in range(share)]

    def observe(self, observation: Observation) -> None:
        self.observations.append(observation)
        mine = config_key(observation.config) in self._keys
        if not mine:
            self.inner.observe(observation)
        elif self._decision.verdict is PriorVerdict.KEPT:
            self.inner.observe(observation)
        elif self._decision.verdict is PriorVerdict.PENDING:
            self._held.append(observation)
        if self._decision.verdict is not PriorVerdict.PENDING:
            return
        if not mine:
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
        if self._decision.verdict is PriorVerdict.KEPT:
            for observation in self._held:
                self.inner.observe(observation)
        elif self._decision.verdict is PriorVerdict.DROPPED:
            self._queue = []
            self.inner.forget_prior(self.prior_ids, self.portfolio)
        if self._decision.verdict is not PriorVerdict.PENDING:
            self._held = []

    def forget_prior(self, observation_ids: Iterable[str], enqueued: Iterable[Mapping[str, Any]]) -> None:
        gone = {config_key(c) for c in enqueued}
        self._queue = [c for c in self._queue if config_key(c) not in gone]
        self._own_queue = [c for c in self._own_queue if config_key(c) not in gone]
        self.inner.forget_prior(observation_ids, enqueued)
