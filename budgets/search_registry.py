"""Searchers by name: ``make_searcher("bohb", space, ...)`` for any searcher the config can name.

Apart from :mod:`rungflow.budgets.searchers` so the model-based searchers can build on its base classes
without the two modules importing each other. Importing :mod:`rungflow.budgets.tpe` costs numpy only;
Optuna loads when a TPE or BOHB searcher is first built.
"""

from __future__ import annotations

from typing import Any

from rungflow.budgets.searchers import GridSearcher, RandomSearcher, Searcher
from rungflow.budgets.space import SearchSpace
from rungflow.budgets.tpe import BOHBSearcher, TPESearcher

__all__ = ["SEARCHERS", "make_searcher"]

_CLASSES: dict[str, type[Searcher]] = {"random": RandomSearcher, "grid": GridSearcher, "tpe": TPESearcher,
                                       "bohb": BOHBSearcher}
SEARCHERS: tuple[str, ...] = tuple(_CLASSES)


def make_searcher(name: str, space: SearchSpace, **kwargs: Any) -> Searcher:
    """The searcher called ``name``; options not meant for it are ignored only if None."""
    if name not in _CLASSES:
        raise ValueError(f"search.algorithm: unknown searcher {name!r}; use one of {', '.join(SEARCHERS)}")
    options = {k: v for k, v in kwargs.items() if v is not None}
    # Options that belong to one searcher are dropped for the others, so one config shape fits all.
    if name != "grid":
        options.pop("grid_points", None)
    if name != "bohb":
        options.pop("random_fraction", None)
        options.pop("min_points_in_model", None)
    if name not in ("tpe", "bohb"):
        if options.pop("cost_aware", False):
            raise ValueError(f"search.cost_aware: only tpe and bohb can rank by cost, not {name!r}; remove cost_aware or use tpe")
    return _CLASSES[name](space, **options)
