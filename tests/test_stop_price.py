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
