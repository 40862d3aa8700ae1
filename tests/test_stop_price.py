"""Stop rules judged at the user's price: net, hindsight net, captured, shortfall."""

from __future__ import annotations

import pytest

from bench.stop_price import judge
from rungflow.budgets.ledger import SpendRecord, TrialStatus


def _rec(i: int, budget: float, score: float, hours: float) -> SpendRecord:
    return SpendRecord(trial_id=f"t{i}", bracket=0, rung=0, budget=budget, score=score, status=TrialStatus.COMPLETED,
                       gpu_seconds=hours * 3600.0, gpus=1.0, cost=0.0, started_at=0.0, finished_at=0.0,
                       metrics={"val_accuracy": score, "val_accuracy_clean": score})


# 4 GPU-h in all; full-budget results 80 after 1 h, 81 after 2 h, 81.2 after 4 h.
RECORDS = [_rec(0, 52.0, 80.0, 1.0), _rec(1, 52.0, 81.0, 1.0), _rec(2, 6.0, 90.0, 1.0), _rec(3, 52.0, 81.2, 1.0)]


def test_never_stopping_nets_zero_and_the_hindsight_stop_is_the_best_one():
    never = judge(RECORDS, None, price=0.5)
    assert never["net"] == pytest.approx(0.0)
    # Stopping after 2 h: 0.5 × 2 − 0.2 = 0.8, better than after 1 h (0.5 × 3 − 1.2 = 0.3).
    assert never["hindsight"] == pytest.approx(0.8)
    assert never["shortfall"] == pytest.approx(0.8)
    at2 = judge(RECORDS, 2, price=0.5)
    assert at2["net"] == pytest.approx(0.8) and at2["captured"] == pytest.approx(1.0) and at2["shortfall"] == pytest.approx(0.0)
    at1 = judge(RECORDS, 1, price=0.5)
    assert at1["net"] == pytest.approx(0.3) and at1["captured"] == pytest.approx(0.3 / 0.8)


def test_a_high_price_for_accuracy_makes_running_on_the_best_call():
    # At 0.05 points per GPU-h, 0.2 points are worth 4 GPU-h: no stop beats running to the end.
    j = judge(RECORDS, 1, price=0.05)
    assert j["hindsight"] == pytest.approx(0.0)
    assert j["net"] == pytest.approx(0.05 * 3 - 1.2)
    assert j["captured"] is None


def test_a_stop_before_any_full_budget_result_has_no_net():
    early = [_rec(0, 6.0, 70.0, 1.0), *RECORDS]
    j = judge(early, 1, price=0.5)
    assert j["net"] is None and j["shortfall"] is None


def _bracket_records(tops_per_bracket, hours_per_bracket=1.0):
    """One record per full-budget result, brackets in order; a bracket's hours split over its results."""
    out, i = [], 0
    for b, tops in enumerate(tops_per_bracket):
        for score in tops:
            r = _rec(i, 52.0, score, hours_per_bracket / len(tops))
            out.append(SpendRecord(**{**r.__dict__, "bracket": b}))
            i += 1
    return out


def test_record_ei_is_the_window_gain_plus_one_record_spacing_over_n_plus_one():
    from bench.stop_price import _record_ei

    # Top results 90, 89, 87, 86: mean gap 4/3 over the top 3 spacings; the window rose 2 points over 3 results.
    assert _record_ei([86, 90, 87, 89], 2.0, 3, spacings=3) == pytest.approx((2 + 4 / 3) / 4)
    # No rise and tied top results: nothing left to expect.
    assert _record_ei([90, 90, 90, 90], 0.0, 3, spacings=3) == pytest.approx(0.0)
    assert _record_ei([90, 89], 0.0, 1, spacings=3) is None


def test_cost_aware_stop_waits_while_results_still_climb_and_stops_once_flat():
    from bench.stop_price import cost_aware_stop

    # Four brackets per iteration. Climbing by 2 points a bracket at 1 GPU-h a bracket: EI stays
    # above 0.5 points/GPU-h × cost, so no stop.
    climbing = _bracket_records([[80 + 2 * b, 79 + 2 * b] for b in range(12)])
    assert cost_aware_stop(climbing, 0.5)[0] is None
    # Flat after the first iteration, with tiny gaps at the top: stopped after two flat verdicts.
    flat = _bracket_records([[80 + b, 70] for b in range(4)] + [[83.0, 70 + b * 0.001] for b in range(8)])
    stop, detail = cost_aware_stop(flat, 0.5)
    # Verdicts from bracket 4 on: EI (3 + 1)/9, (3 + 2/3)/9, (2 + 1/3)/9 against 0.5 × 0.5 GPU-h = 0.25,
    # then 1/9 and 0/9 below it: the second verdict below stops before bracket 8.
    assert stop is not None and flat[stop].bracket == 8 and "EI" in detail
    # At 10 points per GPU-h asked, a climb of 2 points per GPU-h is not worth it: stopped at the first chance.
    stop, _ = cost_aware_stop(climbing, 10.0)
    assert stop is not None and climbing[stop].bracket == 5
