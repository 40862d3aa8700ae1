"""The portfolio ``rungflow automl`` starts from: ``mixed`` configurations learned across tables, shipped as data.

Learning reads earlier automl sweeps' run directories with the history reader (data only: configs and scores), one
table a sweep, and picks configurations greedily over per-table normalised scores
(:func:`rungflow.budgets.prior.greedy_portfolio` with ``standing="score"``), as AutoGluon's zero-shot portfolio,
TabRepo and auto-sklearn 2.0 do: the configuration that most raises the sum over tables of the best normalised score
the portfolio holds on each is added next, so it covers tables whose best models differ.

A sweep runs the portfolio through ``history.configs``: beside its searcher's first draws, judged on the table's own
first results and dropped where the table disagrees (:mod:`rungflow.budgets.prior_guard`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PORTFOLIO_FILE", "PORTFOLIO_SIZE", "shipped_portfolio", "learn_portfolio", "portfolio_in_space"]

PORTFOLIO_FILE = Path(__file__).with_name("automl_portfolio.json")
# Eight of the first bracket's 27 draws at most: the portfolio takes at most half the slots beside the searcher, and
# eight covers the seven default families once with room for a second configuration of the family that wins most.
PORTFOLIO_SIZE = 8


def shipped_portfolio(path: Path = PORTFOLIO_FILE) -> dict[str, Any]:
    """``{"source", "tables", "configs", ...}``: the portfolio learned on the benchmark suite's dev tables."""
    return json.loads(path.read_text(encoding="utf-8"))


def portfolio_in_space(portfolio: dict[str, Any], space: Any) -> list[dict[str, Any]]:
    """The portfolio's configurations that ``space`` holds (the families chosen, values within its ranges)."""
    return [dict(c) for c in portfolio.get("configs") or [] if space.contains(c)]


def learn_portfolio(run_dirs: Sequence[str | Path], size: int = PORTFOLIO_SIZE) -> tuple[list[dict[str, Any]], Any]:
    """Up to ``size`` configurations from automl run directories (one table each), and the space they are in.

    The space is the first run's; a run of another space or metric is a :class:`~rungflow.tasks.history.HistoryError`
    naming it, as in any history.
    """
    from rungflow.budgets.prior import greedy_portfolio
    from rungflow.config import validate
    from rungflow.tasks.history import HistoryError, load_history

    if not run_dirs:
        raise HistoryError("learn_portfolio: no run directories; give automl sweeps' run directories, one per table")
    saved = json.loads((Path(run_dirs[0]) / "config.json").read_text(encoding="utf-8"))
    saved.pop("history", None)
    config = validate({**saved, "history": {"runs": [str(p) for p in run_dirs]}})
    history = load_history(config)
    assert history is not None
    space = config.search_space()
    return greedy_portfolio(space, history.sweeps, size, standing="score"), space
