"""Search algorithms: what to try next.

The searcher base classes and the model-free searchers; :mod:`rungflow.budgets.search_registry` builds
any searcher by name. A searcher only proposes configurations (:meth:`Searcher.suggest`) and learns from results
(:meth:`Searcher.observe`). It never decides how long a trial runs (that is the scheduler's job)
nor whether to keep spending (the budget controller's).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rungflow.budgets.space import SearchSpace

__all__ = [
    "Observation",
    "Searcher",
    "RandomSearcher",
    "GridSearcher",
]

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class Observation:
    """One result of one trial at one budget; ``score`` is None when the trial failed (error, NaN, inf).

    ``cost``: GPU-seconds per budget unit this result was billed (None: unknown), for cost-aware search.
    """

    trial_id: str
    config: Mapping[str, Any]
    budget: float
    score: float | None
    cost: float | None = None

    @property
    def failed(self) -> bool:
        return self.score is None or not math.isfinite(self.score)


class Searcher(ABC):
    """Proposes configurations from a :class:`SearchSpace`.

    ``max_budget`` tells multi-fidelity searchers which budget is the full one; ``mode`` says
    whether a larger score is better. The same seed and the same sequence of calls give the same
    proposals.
    """

    name: str = "searcher"

    def __init__(self, space: SearchSpace, *, seed: int = 0, mode: Mode = "max", max_budget: float = 1.0) -> None:
        self.space = space
        self.seed = seed
        self.mode = mode
        self.max_budget = max_budget
        self.observations: list[Observation] = []
        self.priors: list[Observation] = []
        self._enqueued: list[dict[str, Any]] = []

    @abstractmethod
    def suggest(self, count: int) -> list[dict[str, Any]]:
        """Called when the scheduler needs ``count`` new trials; may return fewer when the space is exhausted."""

    def observe(self, observation: Observation) -> None:
        """Called once per trial per rung, in a deterministic order, as soon as the result is known."""
        self.observations.append(observation)

    def warm_start(self, observations: Iterable[Observation] = (), enqueue: Iterable[Mapping[str, Any]] = ()) -> None:
        """Called once, before the first :meth:`suggest`, with an earlier study of the same problem.

        ``enqueue``: configurations proposed first, in order (Optuna's ``enqueue_trial`` semantics),
        e.g. last week's best. ``observations``: that study's results, kept in :attr:`priors`, which
        model-based searchers fit on beside their own (their trial ids get a ``prior-`` prefix so they
        never merge with this study's trials). Configurations outside the space are dropped.
        """
        self.priors = [Observation(f"prior-{o.trial_id}", dict(o.config), o.budget, o.score)
                       for o in observations if self.space.contains(o.config)]
        self._enqueued = [dict(c) for c in enqueue if self.space.contains(c)]

    def forget_prior(self, observation_ids: Iterable[str], enqueued: Iterable[Mapping[str, Any]]) -> None:
        """Called when a warm start's prior is dropped mid-sweep: those of its results (ids as given to
        :meth:`warm_start`) leave the model, those configurations leave the queue; what this sweep observed
        itself stays, so the search goes on as it would have cold."""
        gone = {f"prior-{i}" for i in observation_ids}
        self.priors = [o for o in self.priors if o.trial_id not in gone]
        dropped = [dict(c) for c in enqueued]
        self._enqueued = [c for c in self._enqueued if c not in dropped]

    def _pop_enqueued(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` enqueued configurations, removed from the queue: what suggest returns first."""
        out, self._enqueued = self._enqueued[:count], self._enqueued[count:]
        return out


class RandomSearcher(Searcher):
    """Independent uniform samples (log-uniform for log parameters)."""

    name = "random"

    def __init__(self, space: SearchSpace, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        self._rng = np.random.default_rng(self.seed)

    def suggest(self, count: int) -> list[dict[str, Any]]:
        out = self._pop_enqueued(count)
        return out + [self.space.sample(self._rng) for _ in range(count - len(out))]


class GridSearcher(Searcher):
    """The Cartesian grid in a seeded shuffled order, so a truncated grid still covers the space."""

    name = "grid"

    def __init__(self, space: SearchSpace, *, grid_points: int = 4, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        grid = space.grid(grid_points)
        order = np.random.default_rng(self.seed).permutation(len(grid))
        self._grid = [grid[i] for i in order]
        self._next = 0

    @property
    def size(self) -> int:
        return len(self._grid)

    def suggest(self, count: int) -> list[dict[str, Any]]:
        first = self._pop_enqueued(count)
        out = self._grid[self._next : self._next + count - len(first)]
        self._next += len(out)
        return first + out
