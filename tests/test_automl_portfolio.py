"""automl's portfolio learned across tables: the greedy over per-table normalised scores, the shipped file, and a
real ``rungflow.automl`` run that starts from a portfolio, judges it, and records it (thread runtime, a bundled
table, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rungflow
from rungflow.budgets.prior import PastSweep, greedy_portfolio, utilities
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import SearchSpace
from rungflow.config import ConfigError
from rungflow.flows.automl import automl_config
from rungflow.flows.cli import main
from rungflow.results import history_line
from rungflow.tasks.automl_portfolio import PORTFOLIO_SIZE, learn_portfolio, shipped_portfolio

FAMILIES = ["hgb", "linear"]


def _table() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    return frame


def _space(tmp_path: Path, families: list[str] | None = None) -> SearchSpace:
    return automl_config(_table(), "diagnosis", out=tmp_path / "space", runtime="thread", families=families,
                         portfolio="off").config.search_space()


def test_scores_are_normalised_per_table_between_median_and_best() -> None:
    obs = [Observation(f"t{i}", {"x": float(i)}, 1.0, s) for i, s in enumerate([0.5, 0.6, 0.7, 0.9])]
    obs.append(Observation("t9", {"x": 9.0}, 3.0, 0.1))  # reached the higher rung: above every first-rung trial
    u = utilities(obs, "max", standing="score")
    # First band: median 0.65, best 0.9; the best there stands just below anything of the second band.
    assert u["t3"][1] == pytest.approx((1.0 / 2) ** 4)
    assert u["t2"][1] == pytest.approx(((0.01 + 0.99 * 0.05 / 0.25) / 2) ** 4)
    assert u["t0"][1] == u["t1"][1] == pytest.approx((0.01 / 2) ** 4)  # at or below the median: the floor
    assert u["t9"][1] == pytest.approx(1.0)


def test_greedy_covers_tables_whose_best_configurations_differ() -> None:
    space = SearchSpace.from_dict({"family": {"type": "categorical", "choices": ["a", "b"]},
                                   "x": {"type": "float", "low": 0.0, "high": 1.0}})
    a, b, middling = {"family": "a", "x": 0.1}, {"family": "b", "x": 0.9}, {"family": "a", "x": 0.5}

    def table(name: str, scores: dict[str, float]) -> PastSweep:
        configs = {"a": a, "b": b, "m": middling}
        return PastSweep(name, tuple(Observation(k, configs[k], 1.0, s) for k, s in scores.items()), "max")

    # Two tables where a is best and one where b is: a comes first, then b, never the middling one.
    sweeps = [table("t1", {"a": 0.9, "b": 0.5, "m": 0.8}), table("t2", {"a": 0.8, "b": 0.6, "m": 0.7}),
              table("t3", {"a": 0.2, "b": 0.9, "m": 0.5})]
    assert greedy_portfolio(space, sweeps, 2, standing="score") == [a, b]


def test_the_shipped_portfolio_fits_automls_default_space(tmp_path: Path) -> None:
    shipped = shipped_portfolio()
    space = _space(tmp_path)
    assert len(shipped["tables"]) == 16 and 4 <= len(shipped["configs"]) <= PORTFOLIO_SIZE
    assert all(space.contains(c) for c in shipped["configs"]), shipped["configs"]
    plan = automl_config(_table(), "diagnosis", out=tmp_path / "run", runtime="thread", portfolio="on")
    assert plan.portfolio["used"] and plan.config.history is not None
    assert plan.config.history.configs == shipped["configs"] and plan.config.history.model == "off"
    # Off by default (it did not pay on the dev tables): the default run starts cold and says so.
    default = automl_config(_table(), "diagnosis", out=tmp_path / "default", runtime="thread")
    assert not default.portfolio["used"] and default.config.history is None and "off" in default.portfolio["line"]


def test_only_the_families_the_user_chose_else_one_line_and_a_cold_start(tmp_path: Path) -> None:
    space = _space(tmp_path)
    rng = np.random.default_rng(0)
    hgb = [c for c in (space.sample(rng) for _ in range(200)) if c["family"] == "hgb"][:2]
    xgb = [c for c in (space.sample(rng) for _ in range(200)) if c["family"] == "xgboost"][:1]
    given = {"source": "a test portfolio", "configs": [*hgb, *xgb]}
    plan = automl_config(_table(), "diagnosis", out=tmp_path / "a", runtime="thread", families=FAMILIES, portfolio=given)
    assert plan.config.history.configs == hgb
    assert "2 configurations of a test portfolio (1 of another family left out)" in plan.portfolio["line"]
    plan = automl_config(_table(), "diagnosis", out=tmp_path / "b", runtime="thread", families=["linear"], portfolio=given)
    assert plan.config.history is None and not plan.portfolio["used"]
    assert plan.portfolio["line"] == ("portfolio: none of the 3 configurations of a test portfolio is in this search "
                                      "space (families linear); the search started cold")
    with pytest.raises(ConfigError, match=r"^--portfolio 'nowhere.json': not a readable portfolio file"):
        automl_config(_table(), "diagnosis", out=tmp_path / "c", runtime="thread", portfolio="nowhere.json")


def test_cli_refuses_a_bad_portfolio_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    (tmp_path / "p.json").write_text('{"configs": "hgb"}')
    assert main(["automl", str(path), "--label", "diagnosis", "--portfolio", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --portfolio") and "has no 'configs' list" in err and len(err.strip().splitlines()) == 1


def test_automl_runs_the_portfolio_beside_the_searcher_and_learns_one_from_its_run(prefect_server: str,
                                                                                    tmp_path: Path) -> None:
    # Linear models only, the cheapest family: the first bracket (27 trials, the portfolio in its last slots) finishes
    # within the time limit even on a busy machine, so the portfolio is judged.
    space = _space(tmp_path, ["linear"])
    rng = np.random.default_rng(1)
    configs = [space.sample(rng) for _ in range(2)]
    result = rungflow.automl(_table(), label="diagnosis", time_limit=8, runtime="thread", families=["linear"],
                             out=tmp_path / "run", seed=2, portfolio={"source": "a test portfolio", "configs": configs})
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    history = saved["history"]
    assert history["configs_source"] == "a test portfolio" and history["portfolio"] == configs
    assert len(history["portfolio_trials"]) == 2  # both ran, beside the searcher's own draws
    assert history["prior"]["verdict"] in ("kept", "dropped") and history["prior"]["cold_trials"] >= 4
    assert saved["portfolio"]["used"] and saved["portfolio"] == result.raw["portfolio"]
    assert history_line(history).startswith("history: a test portfolio (2 configs); 2 portfolio configs tried")
    # The run is history for a portfolio of its own: data only, its best configuration first.
    learned, learned_space = learn_portfolio([tmp_path / "run"], 3)
    assert 1 <= len(learned) <= 3 and all(learned_space.contains(c) for c in learned)
    top = max(e["budget"] for e in saved["events"] if e["score"] is not None)
    best = max(e["score"] for e in saved["events"] if e["score"] is not None and e["budget"] == top)
    assert learned[0] in [saved["trials"][e["trial_id"]] for e in saved["events"]
                          if e["budget"] == top and e["score"] == best]
