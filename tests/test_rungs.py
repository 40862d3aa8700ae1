"""Hyperband bracket arithmetic (budgets.rungs) against Li et al. (2018), Table 1."""

from __future__ import annotations

import math

import pytest

from rungflow.budgets.rungs import BracketPlan, RungPlan, bracket_plan, hyperband_plan, max_bracket_index, rung_budgets

# Li et al. 2018, Table 1: R=81, η=3. For each bracket s, the (n_i, r_i) of its rungs.
PAPER_TABLE = {
    4: [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    3: [(34, 3), (11, 9), (3, 27), (1, 81)],
    2: [(15, 9), (5, 27), (1, 81)],
    1: [(8, 27), (2, 81)],
    0: [(5, 81)],
}


def _pairs(bracket: BracketPlan) -> list[tuple[int, float]]:
    return [(r.num_trials, r.budget) for r in bracket.rungs]


# --- the paper's table -------------------------------------------------------------------------


@pytest.mark.parametrize("integer", [True, False])
def test_hyperband_plan_matches_paper_table(integer: bool) -> None:
    plan = hyperband_plan(1, 81, 3, integer=integer)
    assert [b.s for b in plan] == [4, 3, 2, 1, 0]
    for bracket in plan:
        expected = PAPER_TABLE[bracket.s]
        got = _pairs(bracket)
        assert len(got) == len(expected), bracket
        for (n, r), (en, er) in zip(got, expected):
            assert n == en
            assert r == pytest.approx(er)
        assert bracket.num_trials == expected[0][0]
        assert [r.index for r in bracket.rungs] == list(range(len(expected)))


@pytest.mark.parametrize("s", [4, 3, 2, 1, 0])
def test_bracket_plan_single_bracket_matches_paper(s: int) -> None:
    plan = bracket_plan(s, 4, min_budget=1, max_budget=81, eta=3)
    assert _pairs(plan) == [(n, float(r)) for n, r in PAPER_TABLE[s]]
    assert plan.s == s


def test_paper_table_total_trials() -> None:
    plan = hyperband_plan(1, 81, 3)
    assert sum(b.num_trials for b in plan) == 81 + 34 + 15 + 8 + 5


def test_every_bracket_ends_at_max_budget() -> None:
    for bracket in hyperband_plan(1, 81, 3):
        assert bracket.rungs[-1].budget == 81.0
        budgets = [r.budget for r in bracket.rungs]
        assert budgets == sorted(budgets)
        counts = [r.num_trials for r in bracket.rungs]
        assert counts == sorted(counts, reverse=True)


# --- s_max ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo,hi,eta,expected",
    [
        (1, 81, 3, 4),  # log_3 81 = 3.9999999… in floating point
        (1, 27, 3, 3),
        (1, 9, 3, 2),
        (1, 243, 3, 5),
        (1, 80.99, 3, 3),
        (1, 26, 3, 2),
        (2, 52, 3, 2),
        (0.1, 8.1, 3, 4),
        (1, 1000, 10, 3),  # log_10 1000 = 2.9999999…
        (1, 64, 2, 6),
        (1, 64, 4, 3),
        (5, 5, 3, 0),
        (1, 2.9, 3, 0),
    ],
)
def test_max_bracket_index(lo: float, hi: float, eta: float, expected: int) -> None:
    assert max_bracket_index(lo, hi, eta) == expected


# --- rung budgets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo,hi,eta",
    [(1, 81, 3), (1, 27, 3), (1, 9, 3), (2, 52, 3), (1, 100, 3), (1, 64, 2), (1, 5, 1.2), (1, 10, 3), (3, 3, 3)],
)
@pytest.mark.parametrize("integer", [True, False])
def test_rung_budgets_ascending_ending_at_max(lo: float, hi: float, eta: float, integer: bool) -> None:
    budgets = rung_budgets(lo, hi, eta, integer=integer)
    assert budgets, "at least one rung"
    assert all(a < b for a, b in zip(budgets, budgets[1:])), budgets
    assert budgets[-1] == pytest.approx(hi)
    assert budgets[0] >= lo - 1e-9
    if integer:
        assert all(float(b).is_integer() for b in budgets)
    assert len(budgets) <= max_bracket_index(lo, hi, eta) + 1


def test_rung_budgets_paper_values() -> None:
    assert rung_budgets(1, 81, 3) == [1.0, 3.0, 9.0, 27.0, 81.0]
    assert rung_budgets(1, 81, 3, integer=False) == pytest.approx([1.0, 3.0, 9.0, 27.0, 81.0])


def test_rung_budgets_non_integer() -> None:
    # 10 / 9 and 10 / 3 stay fractional without integer rounding.
    assert rung_budgets(1, 10, 3, integer=False) == pytest.approx([10 / 9, 10 / 3, 10])
    assert rung_budgets(1, 10, 3, integer=True) == [1.0, 3.0, 10.0]


def test_integer_rounding_merges_neighbouring_rungs() -> None:
    # 5·1.2^-8 ≈ 1.16 and 5·1.2^-7 ≈ 1.40 both round to 1 epoch; 1.67, 2.0, 2.41 to 2; and so on.
    budgets = rung_budgets(1, 5, 1.2, integer=True)
    assert max_bracket_index(1, 5, 1.2) == 8
    assert budgets == [1.0, 2.0, 3.0, 4.0, 5.0]
    # Without rounding there is one rung per exponent.
    assert len(rung_budgets(1, 5, 1.2, integer=False)) == 9


def test_bracket_plan_skips_merged_rungs() -> None:
    plan = bracket_plan(8, 8, min_budget=1, max_budget=5, eta=1.2, integer=True, num_trials=20)
    budgets = [r.budget for r in plan.rungs]
    assert budgets == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r.index for r in plan.rungs] == list(range(len(plan.rungs)))
    counts = [r.num_trials for r in plan.rungs]
    assert counts[0] == 20
    assert counts == sorted(counts, reverse=True)
    assert all(c >= 1 for c in counts)


def test_rounding_never_goes_below_min_budget() -> None:
    # 9·3^-2 = 1 and min_budget 0.5 rounds to 0: the bottom rung must stay at a real budget.
    budgets = rung_budgets(0.5, 9, 3, integer=True)
    assert budgets[0] >= 1.0
    assert budgets[-1] == 9.0


def test_integer_rounding_keeps_max_budget_as_top_rung() -> None:
    assert rung_budgets(1, 10.5, 3, integer=True)[-1] == 10.5
    assert all(b.rungs[-1].budget == 10.5 for b in hyperband_plan(1, 10.5, 3, integer=True))


# --- iterations and brackets --------------------------------------------------------------------


def test_iterations_repeat_brackets_with_increasing_index() -> None:
    one = hyperband_plan(1, 27, 3)
    three = hyperband_plan(1, 27, 3, iterations=3)
    assert len(three) == 3 * len(one)
    assert [b.index for b in three] == list(range(len(three)))
    assert [b.s for b in three] == [b.s for b in one] * 3
    for i, bracket in enumerate(three):
        assert bracket.rungs == one[i % len(one)].rungs


def test_bracket_plan_num_trials_override() -> None:
    plan = bracket_plan(2, 2, min_budget=1, max_budget=9, eta=3, num_trials=4)
    assert _pairs(plan) == [(4, 1.0), (1, 3.0), (1, 9.0)]
    assert plan.num_trials == 4


def test_budget_units_paper_brackets() -> None:
    # With checkpoint resumption each promoted trial pays only the increment to the next rung.
    by_s = {b.s: b for b in hyperband_plan(1, 81, 3)}
    assert by_s[4].budget_units() == 81 * 1 + 27 * 2 + 9 * 6 + 3 * 18 + 1 * 54  # 297
    assert by_s[3].budget_units() == 34 * 3 + 11 * 6 + 3 * 18 + 1 * 54  # 276
    assert by_s[2].budget_units() == 15 * 9 + 5 * 18 + 1 * 54  # 279
    assert by_s[1].budget_units() == 8 * 27 + 2 * 54  # 324
    assert by_s[0].budget_units() == 5 * 81  # 405


def test_budget_units_handmade_bracket() -> None:
    bracket = BracketPlan(index=0, s=1, rungs=(RungPlan(0, 2.0, 6), RungPlan(1, 5.0, 2)))
    assert bracket.budget_units() == pytest.approx(6 * 2 + 2 * 3)
    assert bracket.num_trials == 6


def test_budget_units_never_exceed_full_training() -> None:
    for bracket in hyperband_plan(1, 81, 3):
        assert bracket.budget_units() <= bracket.num_trials * 81
        assert bracket.budget_units() >= bracket.rungs[-1].num_trials * 81
        assert math.isfinite(bracket.budget_units())
