"""The training-fraction family the search bench runs on: real gradient boosting, each rung a refit on a larger share."""

from __future__ import annotations

import numpy as np
import pytest

from bench.fraction_family import MAX_UNITS, FractionTable, TableSpec
from rungflow.budgets.rungs import hyperband_plan
from rungflow.budgets.search_registry import make_searcher


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> FractionTable:
    return FractionTable("hgb-1", cache_dir=tmp_path_factory.mktemp("fraction-cache"))


def test_a_table_is_drawn_from_its_name_alone():
    assert TableSpec.draw("hgb-6") == TableSpec.draw("hgb-6")
    assert TableSpec.draw("hgb-6") != TableSpec.draw("hgb-7")
    with pytest.raises(ValueError, match="named hgb-K"):
        TableSpec.draw("3945")  # an LCBench id under the wrong family


def test_more_rows_fit_better_and_cost_more(table):
    rng = np.random.default_rng(3)
    configs = [table.space.sample(rng) for _ in range(4)]
    low = [table.fit(c, 1) for c in configs]
    full = [table.fit(c, MAX_UNITS) for c in configs]
    # 74 rows against 2,000: the model is real, so the whole table must win on average.
    assert np.mean([a for a, _ in full]) > np.mean([a for a, _ in low]) + 5
    assert sum(s for _, s in full) > sum(s for _, s in low) > 0


def test_fits_are_cached_on_disk_with_their_measured_cost(table, tmp_path_factory):
    config = table.space.sample(np.random.default_rng(5))
    first = table.fit(config, 9)
    again = FractionTable("hgb-1", cache_dir=table._path.parent)
    assert again.fit(config, 9) == first  # read back, not refitted: the same seconds, to the bit
    with pytest.raises(ValueError, match="outside 1..27"):
        table.fit(config, 28)


def test_simulated_hyperband_refits_every_rung_and_bills_each_fit(table):
    from bench import search_sim as S

    bracket = next(b for b in hyperband_plan(1, MAX_UNITS, 3, iterations=1) if b.s == 1)  # 6 at 9 units, 2 at 27
    run = S.simulate("hgb-1", make_searcher("random", table.space, seed=2), seed=2, method="random",
                     brackets=[bracket], source=table)
    assert [sum(e["budget"] == b for e in run.events) for b in (9.0, 27.0)] == [6, 2]
    for e in run.events:
        # No resume across rungs: a promoted trial trains its whole share again, and pays for it.
        assert e["budget_trained"] == e["budget"]
        assert (e["clean"], e["gpu_seconds"]) == table.fit(run.configs[e["trial_id"]], e["budget"])
    at9 = sorted((e for e in run.events if e["budget"] == 9.0), key=lambda e: -e["score"])
    assert {e["trial_id"] for e in at9[:2]} == {e["trial_id"] for e in run.events if e["budget"] == 27.0}
    assert run.curve() and run.max_budget == MAX_UNITS
