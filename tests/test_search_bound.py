"""The perfect-gate bound on Hyperband + random's time to target (bench/search_bound.py)."""

from __future__ import annotations

import math

import pytest

from bench.search_bound import bracket_ends, median_spend


def test_bracket_ends_count_samples_and_resumed_epochs_of_the_ladder() -> None:
    ends = bracket_ends(iterations=1)
    # s = 3: 27 at 2 epochs, 9 on to 6, 3 on to 17, 1 on to 52; then s = 2, 1, 0 (4 full-budget trials).
    first = 27 * 2 + 9 * 4 + 3 * 11 + 1 * 35
    assert ends[0] == (27, pytest.approx(first / (128 * 52)))
    assert [n for n, _ in ends] == [27, 39, 45, 49]
    assert ends[-1][1] == pytest.approx((first + (12 * 6 + 4 * 11 + 35) + (6 * 17 + 2 * 35) + 4 * 52) / (128 * 52))


def test_median_spend_is_where_the_mean_reach_probability_passes_one_half() -> None:
    ends = bracket_ends(iterations=2)
    assert median_spend([1.0], ends) == ends[0][1]
    assert median_spend([0.0], ends) == math.inf
    # Half the runs certain from the first bracket, half never: the mean is ½ from the first bracket on.
    assert median_spend([1.0, 0.0], ends) == ends[0][1]
    # q with 1 − (1 − q)^39 just over ½: reached at the second bracket's end, not the first.
    q = 1 - 0.5 ** (1 / 39) + 1e-6
    assert median_spend([q], ends) == ends[1][1]
