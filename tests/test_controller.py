"""The budget controller with an injected clock and synthetic ledgers: hard caps and the marginal-gain stop."""

from __future__ import annotations

import json

import pytest

from rungflow.budgets.controller import Action, BudgetController, BudgetSettings, StopReason, window_gain
from rungflow.budgets.ledger import Ledger, SpendRecord, TrialStatus, incumbent_curve

PRICE = 2.0


class FakeClock:
    """A list of readings; the clock reads the last one, and ``advance`` appends a later one."""

    def __init__(self, start: float = 1000.0) -> None:
        self.readings = [start]

    def __call__(self) -> float:
        return self.readings[-1]

    def advance(self, seconds: float) -> None:
        self.readings.append(self.readings[-1] + seconds)


def record(i: int, score: float | None, *, budget: float = 9.0, gpu_hours: float = 1.0,
           status: TrialStatus = TrialStatus.COMPLETED, price: float = PRICE) -> SpendRecord:
    return SpendRecord(
        trial_id=f"t{i:03d}", bracket=0, rung=0, budget=budget, score=score, status=status,
        gpu_seconds=gpu_hours * 3600.0, gpus=1.0, cost=gpu_hours * price, started_at=0.0, finished_at=1.0,
    )


def ledger_of(*records: SpendRecord, price: float = PRICE) -> Ledger:
    ledger = Ledger(price_per_gpu_hour=price)
    for r in records:
        assert ledger.charge(r)
    return ledger


def controller(clock: FakeClock | None = None, mode: str = "max", **settings) -> tuple[BudgetController, FakeClock]:
    clock = clock or FakeClock()
    settings.setdefault("price_per_gpu_hour", PRICE)
    return BudgetController(BudgetSettings(**settings), mode=mode, clock=clock), clock  # type: ignore[arg-type]


# --- hard caps -------------------------------------------------------------------------------------


def test_max_gpu_hours_stops() -> None:
    ctl, _ = controller(max_gpu_hours=3.0)
    ledger = ledger_of(record(0, 0.1, gpu_hours=1.5), record(1, 0.2, gpu_hours=1.0))
    decision = ctl.check_before_stage(ledger, stage="b0-r1")
    assert decision.action == Action.CONTINUE and decision.reason is None
    ledger.charge(record(2, 0.3, gpu_hours=0.5))
    decision = ctl.check_before_stage(ledger, stage="b0-r2")
    assert decision.stop
    assert decision.reason == "max_gpu_hours" == StopReason.MAX_GPU_HOURS
    assert decision.spent_gpu_hours == pytest.approx(3.0)
    assert "3" in decision.detail and "cap" in decision.detail


def test_max_cost_stops() -> None:
    ctl, _ = controller(max_cost=5.0)
    ledger = ledger_of(record(0, 0.1, gpu_hours=2.0))  # cost 4.0
    assert not ctl.check_before_stage(ledger, stage="s1").stop
    ledger.charge(record(1, 0.2, gpu_hours=0.5))  # cost 5.0
    decision = ctl.check_before_stage(ledger, stage="s2")
    assert decision.stop and decision.reason == "max_cost"
    assert decision.spent_cost == pytest.approx(5.0)


def test_deadline_stops() -> None:
    clock = FakeClock(start=500.0)
    ctl, _ = controller(clock=clock, deadline_seconds=3600.0)
    ledger = ledger_of(record(0, 0.1))
    clock.advance(3599.0)
    decision = ctl.check_before_stage(ledger, stage="s1")
    assert not decision.stop
    assert decision.elapsed_seconds == pytest.approx(3599.0)
    clock.advance(1.0)
    decision = ctl.check_before_stage(ledger, stage="s2")
    assert decision.stop and decision.reason == "deadline"
    assert decision.elapsed_seconds == pytest.approx(3600.0)
    assert decision.checked_at == pytest.approx(4100.0)


def test_started_at_can_be_given_for_a_resumed_sweep() -> None:
    clock = FakeClock(start=10_000.0)
    ctl = BudgetController(BudgetSettings(deadline_seconds=60.0), clock=clock, started_at=9_900.0)
    decision = ctl.check_in_flight(ledger_of())
    assert decision.stop and decision.reason == "deadline"


def test_gpu_cap_is_checked_before_cost_and_deadline() -> None:
    clock = FakeClock()
    ctl, _ = controller(clock=clock, max_gpu_hours=1.0, max_cost=1.0, deadline_seconds=1.0)
    clock.advance(10.0)
    decision = ctl.check_before_stage(ledger_of(record(0, 0.5, gpu_hours=2.0)), stage="s")
    assert decision.reason == "max_gpu_hours"


def test_stage_that_would_cross_the_gpu_cap_is_refused_before_it_starts() -> None:
    ctl, _ = controller(max_gpu_hours=4.0)
    ledger = ledger_of(record(0, 0.5, gpu_hours=3.0))
    ok = ctl.check_before_stage(ledger, stage="small", next_stage_gpu_hours=0.5)
    assert not ok.stop and ok.next_stage_gpu_hours == 0.5
    refused = ctl.check_before_stage(ledger, stage="big", next_stage_gpu_hours=1.5)
    assert refused.stop and refused.reason == "max_gpu_hours"
    assert refused.next_stage_gpu_hours == 1.5
    assert "predicted" in refused.detail
    # Nothing was spent: the refusal came before the stage.
    assert refused.spent_gpu_hours == pytest.approx(3.0)


def test_stage_that_would_cross_the_cost_cap_is_refused_before_it_starts() -> None:
    ctl, _ = controller(max_cost=10.0)
    ledger = ledger_of(record(0, 0.5, gpu_hours=3.0))  # cost 6.0; the next hour costs 2.0
    assert not ctl.check_before_stage(ledger, stage="s1", next_stage_gpu_hours=1.0).stop
    refused = ctl.check_before_stage(ledger, stage="s2", next_stage_gpu_hours=2.5)  # 6 + 5 > 10
    assert refused.stop and refused.reason == "max_cost"
    assert "predicted" in refused.detail


def test_no_caps_no_rule_continues() -> None:
    ctl, clock = controller()
    clock.advance(1e9)
    decision = ctl.check_before_stage(ledger_of(record(0, 0.5, gpu_hours=1e6)), stage="s")
    assert not decision.stop
    assert decision.gain_per_gpu_hour is None and decision.threshold is None


# --- the marginal-gain rule --------------------------------------------------------------------------


def run_checks(ctl: BudgetController, scores: list[float | None], **record_kwargs) -> list:
    """Charge one record per score (1 GPU-hour each) and check before every next stage."""
    ledger = ledger_of()
    decisions = []
    for i, score in enumerate(scores):
        ledger.charge(record(i, score, **record_kwargs))
        decisions.append(ctl.check_before_stage(ledger, stage=f"s{i}"))
        if decisions[-1].stop:
            break
    return decisions


def test_gain_rule_stops_after_patience_consecutive_checks() -> None:
    # Window 2 GPU-h: the gain at check n is (best_n - best_{n-2}) / 2.
    ctl, _ = controller(min_gain_per_gpu_hour=0.25, window_gpu_hours=2.0, patience=2)
    scores = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 2.75, 3.0, 3.125, 3.25, 3.375, 10.0]
    decisions = run_checks(ctl, scores)
    gains = [d.gain_per_gpu_hour for d in decisions]
    # No window before 2 GPU-h of history; then 0.5/GPU-h, then at 0.375 (above), 0.25 (equal: not below), ...
    assert gains[:2] == [None, None]
    assert gains[2:] == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.375, 0.25, 0.1875, 0.125])
    assert [d.below_threshold_checks for d in decisions] == [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
    assert len(decisions) == 10  # stopped at the second below-threshold check, before spending on 10.0
    assert [d.stop for d in decisions] == [False] * 9 + [True]
    last = decisions[-1]
    assert last.reason == "min_gain_per_gpu_hour" == StopReason.MIN_GAIN
    assert last.threshold == 0.25
    assert last.best == 3.25
    assert last.spent_gpu_hours == pytest.approx(10.0)
    assert "2 consecutive" in last.detail


def test_gain_rule_with_patience_one_stops_at_first_dip() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=0.25, window_gpu_hours=2.0, patience=1)
    decisions = run_checks(ctl, [0.0, 0.5, 1.0, 1.25, 1.25, 5.0])
    assert [d.gain_per_gpu_hour for d in decisions][2:] == pytest.approx([0.5, 0.375, 0.125])
    assert [d.stop for d in decisions] == [False, False, False, False, True]


def test_single_noisy_dip_does_not_stop_with_patience_two() -> None:
    # Two isolated dips below the threshold, each followed by an improvement.
    ctl, _ = controller(min_gain_per_gpu_hour=0.25, window_gpu_hours=2.0, patience=2)
    scores = [0.0, 1.0, 2.0, 2.1, 2.2, 3.0, 3.1, 3.2, 4.0]
    decisions = run_checks(ctl, scores)
    gains = [d.gain_per_gpu_hour for d in decisions]
    assert gains[2:] == pytest.approx([1.0, 0.55, 0.1, 0.45, 0.45, 0.1, 0.45])
    assert [d.below_threshold_checks for d in decisions] == [0, 0, 0, 0, 1, 0, 0, 1, 0]
    assert not any(d.stop for d in decisions)


def test_noisy_lucky_evaluation_is_damped_by_top_k() -> None:
    scores = [1.0, 1.0, 1.0, 3.0]  # flat, then one lucky evaluation
    # top_k=1: the lucky score alone looks like 1.0/GPU-h of progress and resets the count.
    ctl, _ = controller(min_gain_per_gpu_hour=0.5, window_gpu_hours=2.0, patience=2, top_k=1)
    decisions = run_checks(ctl, scores)
    assert [d.below_threshold_checks for d in decisions] == [0, 0, 1, 0]
    assert decisions[-1].gain_per_gpu_hour == pytest.approx(1.0) and not decisions[-1].stop
    # top_k=3: it moves the top-3 mean by 2/3 only, 1/3 per GPU-h over 2 h: still below, so the rule fires.
    ctl, _ = controller(min_gain_per_gpu_hour=0.5, window_gpu_hours=2.0, patience=2, top_k=3)
    decisions = run_checks(ctl, scores)
    assert decisions[-1].stop
    assert decisions[-1].gain_per_gpu_hour == pytest.approx(1 / 3)
    assert decisions[-1].best == 3.0


def test_gain_rule_in_min_mode() -> None:
    ctl, _ = controller(mode="min", min_gain_per_gpu_hour=0.25, window_gpu_hours=2.0, patience=1)
    decisions = run_checks(ctl, [3.0, 2.0, 1.0, 0.9, 0.85])
    gains = [d.gain_per_gpu_hour for d in decisions]
    assert gains[2:4] == pytest.approx([1.0, 0.55])
    assert decisions[-1].stop
    assert decisions[-1].gain_per_gpu_hour == pytest.approx(0.075)
    assert decisions[-1].best == 0.85


def test_warm_up_is_respected() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=1.0, window_gpu_hours=1.0, min_gpu_hours=5.0, patience=1)
    decisions = run_checks(ctl, [0.5] * 8)  # flat: gain 0 wherever it is measured
    assert [d.stop for d in decisions] == [False, False, False, False, True]
    for d in decisions[:4]:
        assert "warm-up" in d.detail
        assert d.gain_per_gpu_hour is None
        assert d.below_threshold_checks == 0
    assert decisions[-1].spent_gpu_hours == pytest.approx(5.0)
    assert decisions[-1].gain_per_gpu_hour == pytest.approx(0.0)


def test_fidelity_change_inside_window_resets_the_rule() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=0.5, window_gpu_hours=2.0, patience=2)
    ledger = ledger_of()
    # Flat at budget 3: one check below the threshold.
    for i, score in enumerate([0.5, 0.5, 0.5]):
        ledger.charge(record(i, score, budget=3.0))
    first = ctl.check_before_stage(ledger, stage="r0")
    assert first.gain_per_gpu_hour == pytest.approx(0.0) and first.below_threshold_checks == 1 and not first.stop
    # The first result at budget 9 (a worse score, as at a new fidelity): no comparable evidence, continue.
    ledger.charge(record(3, 0.4, budget=9.0))
    second = ctl.check_before_stage(ledger, stage="r1")
    assert second.gain_per_gpu_hour is None
    assert not second.stop and second.below_threshold_checks == 0
    assert second.best == 0.4  # the incumbent is the best at the highest fidelity
    # Still inside the window of the change.
    ledger.charge(record(4, 0.4, budget=9.0))
    third = ctl.check_before_stage(ledger, stage="r2")
    assert third.gain_per_gpu_hour is None and not third.stop
    # Once the window lies entirely at budget 9, flat results count again.
    ledger.charge(record(5, 0.4, budget=9.0))
    fourth = ctl.check_before_stage(ledger, stage="r3")
    assert fourth.gain_per_gpu_hour == pytest.approx(0.0) and fourth.below_threshold_checks == 1
    ledger.charge(record(6, 0.4, budget=9.0))
    assert ctl.check_before_stage(ledger, stage="r4").stop


def test_low_rung_luck_does_not_count_as_gain() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, window_gpu_hours=2.0, patience=1)
    ledger = ledger_of(*(record(i, 0.5, budget=9.0) for i in range(3)))
    ledger.charge(record(3, 0.99, budget=1.0))  # a lucky low-fidelity score
    decision = ctl.check_before_stage(ledger, stage="s")
    assert decision.best == 0.5
    assert decision.gain_per_gpu_hour == pytest.approx(0.0)
    assert decision.stop


def test_default_window_is_a_third_of_spend() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=0.01, patience=1)
    ledger = ledger_of(*(record(i, float(i), gpu_hours=1.0) for i in range(9)))
    decision = ctl.check_before_stage(ledger, stage="s")
    curve = incumbent_curve(ledger.records, "max")
    assert decision.gain_per_gpu_hour == pytest.approx(window_gain(curve, 3.0, "max")) == pytest.approx(1.0)


def test_forecast_rule() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, stop_rule="forecast", patience=1)
    ledger = ledger_of(record(0, 0.5))
    go = ctl.check_before_stage(ledger, stage="s1", next_stage_gpu_hours=2.0, expected_gain=0.4)
    assert not go.stop and go.gain_per_gpu_hour == pytest.approx(0.2)
    unknown = ctl.check_before_stage(ledger, stage="s2", next_stage_gpu_hours=2.0, expected_gain=None)
    assert not unknown.stop and unknown.gain_per_gpu_hour is None
    stop = ctl.check_before_stage(ledger, stage="s3", next_stage_gpu_hours=2.0, expected_gain=-1.0)
    assert stop.stop and stop.reason == "min_gain_per_gpu_hour" and stop.gain_per_gpu_hour == 0.0


def test_window_gain_edge_cases() -> None:
    assert window_gain([], 1.0, "max") is None
    curve = incumbent_curve([record(0, 1.0), record(1, 2.0), record(2, 4.0)], "max")
    assert window_gain(curve, 0.0, "max") is None
    assert window_gain(curve, 5.0, "max") is None  # the window reaches before the first result
    assert window_gain(curve, 2.0, "max") == pytest.approx(1.5)
    assert window_gain(curve, 1.0, "max") == pytest.approx(2.0)


# --- in-flight checks --------------------------------------------------------------------------------


def test_check_in_flight_only_applies_hard_caps() -> None:
    ctl, clock = controller(min_gain_per_gpu_hour=100.0, window_gpu_hours=1.0, patience=1, max_gpu_hours=10.0,
                            deadline_seconds=60.0)
    flat = ledger_of(*(record(i, 0.5) for i in range(5)))
    decision = ctl.check_in_flight(flat)
    assert not decision.stop and decision.stage == "in-flight"
    assert decision.gain_per_gpu_hour is None
    assert ctl.checks == 0 and ctl.below_threshold_checks == 0
    # The same ledger before a stage trips the gain rule.
    assert ctl.check_before_stage(flat, stage="s").reason == "min_gain_per_gpu_hour"
    # Hard caps apply in flight.
    over = ledger_of(*(record(i, 0.5, gpu_hours=2.5) for i in range(4)))
    assert ctl.check_in_flight(over, stage="b1-r0").reason == "max_gpu_hours"
    clock.advance(61.0)
    assert ctl.check_in_flight(flat).reason == "deadline"


def test_check_in_flight_ignores_predictions() -> None:
    ctl, _ = controller(max_gpu_hours=2.0)
    assert not ctl.check_in_flight(ledger_of(record(0, 0.5, gpu_hours=1.99))).stop


# --- decisions ---------------------------------------------------------------------------------------


def test_decisions_carry_their_figures_and_serialise() -> None:
    clock = FakeClock(start=0.0)
    ctl, _ = controller(clock=clock, min_gain_per_gpu_hour=0.25, window_gpu_hours=2.0, patience=1, max_cost=100.0)
    ledger = ledger_of(*(record(i, s, gpu_hours=1.0) for i, s in enumerate([0.0, 0.5, 0.6, 0.65])))
    clock.advance(42.0)
    decision = ctl.check_before_stage(ledger, stage="b0-r2", next_stage_gpu_hours=1.5)
    assert decision.stop and decision.reason == "min_gain_per_gpu_hour"
    assert decision.stage == "b0-r2"
    assert decision.spent_gpu_hours == pytest.approx(4.0)
    assert decision.spent_cost == pytest.approx(8.0)
    assert decision.elapsed_seconds == pytest.approx(42.0)
    assert decision.best == 0.65
    assert decision.gain_per_gpu_hour == pytest.approx(0.075)
    assert decision.threshold == 0.25
    assert decision.next_stage_gpu_hours == 1.5
    assert decision.below_threshold_checks == 1
    data = decision.to_json()
    assert data["action"] == "stop"
    assert data["reason"] == "min_gain_per_gpu_hour"
    assert set(data) >= {"spent_gpu_hours", "spent_cost", "best", "gain_per_gpu_hour", "threshold", "reason", "detail"}
    back = json.loads(json.dumps(data))
    assert back["gain_per_gpu_hour"] == pytest.approx(0.075)
    # Decisions are what the ledger records.
    ledger.record_decision(data)
    assert ledger.decisions[-1]["action"] == "stop"
    go = ctl.check_in_flight(ledger)
    assert go.to_json()["action"] == "continue" and go.to_json()["reason"] is None


def test_failed_records_count_as_spend_not_progress() -> None:
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, window_gpu_hours=2.0, patience=2)
    decisions = run_checks(ctl, [0.5, 0.6, None, None, None])
    # The failures cost GPU-hours and moved nothing: 0.05/GPU-h, then 0, and the rule fires.
    assert [d.gain_per_gpu_hour for d in decisions][2:] == pytest.approx([0.05, 0.0])
    assert decisions[-1].stop
    assert decisions[-1].best == 0.6
    assert decisions[-1].spent_gpu_hours == pytest.approx(4.0)


def test_a_window_spent_on_lower_rungs_only_is_no_evidence() -> None:
    # A Hyperband bracket: one full-budget result, then 3 GPU-h on the next bracket's lower rungs.
    # Those cannot have moved the incumbent yet: no evidence, however long the window is flat.
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, window_gpu_hours=1.0, patience=1)
    ledger = ledger_of(record(0, 0.5, budget=9.0))
    for i in range(1, 4):
        ledger.charge(record(i, 0.9, budget=1.0))
        decision = ctl.check_before_stage(ledger, stage=f"b1-r0-{i}")
        assert not decision.stop and decision.gain_per_gpu_hour is None
        assert "highest fidelity" in decision.detail
    # The bracket's top rung brings a full-budget result that does not improve: now it counts.
    ledger.charge(record(4, 0.45, budget=9.0))
    decision = ctl.check_before_stage(ledger, stage="b1-r2")
    assert decision.stop and decision.gain_per_gpu_hour == pytest.approx(0.0)
    # A failed attempt at the highest fidelity is evidence too: it was spent there.
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, window_gpu_hours=1.0, patience=1)
    ledger = ledger_of(record(0, 0.5, budget=9.0), record(1, None, budget=9.0, status=TrialStatus.FAILED))
    assert ctl.check_before_stage(ledger, stage="s").stop


def test_patience_counts_distinct_evidence_not_repeated_checks() -> None:
    # Checks come before every stage; two checks that see the same full-budget results are one piece
    # of evidence. Lower-rung spend in between neither counts nor resets.
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, window_gpu_hours=2.0, patience=2)
    ledger = ledger_of(*(record(i, 0.5, budget=9.0) for i in range(3)))
    first = ctl.check_before_stage(ledger, stage="b0-end")
    assert first.below_threshold_checks == 1 and not first.stop
    ledger.charge(record(3, 0.7, budget=1.0))  # the next bracket's first rung
    again = ctl.check_before_stage(ledger, stage="b1-r1")
    assert again.gain_per_gpu_hour == pytest.approx(0.0) and again.below_threshold_checks == 1 and not again.stop
    assert "no new result at the highest fidelity" in again.detail
    ledger.charge(record(4, 0.7, budget=3.0))
    ledger.charge(record(5, 0.7, budget=3.0))
    ledger.charge(record(6, 0.7, budget=3.0))
    held = ctl.check_before_stage(ledger, stage="b1-r2")
    assert held.gain_per_gpu_hour is None and held.below_threshold_checks == 1 and not held.stop
    ledger.charge(record(7, 0.45, budget=9.0))  # the bracket's full-budget result: no better
    assert ctl.check_before_stage(ledger, stage="b2-r0").stop


# --- target stop ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, scores, target", [("max", (0.80, 0.93), 0.90), ("min", (0.30, 0.08), 0.10)])
def test_target_score_stops_at_the_first_full_budget_result_that_reaches_it(mode: str, scores, target: float) -> None:
    ctl = BudgetController(BudgetSettings(target_score=target), mode=mode, clock=FakeClock(), full_budget=9.0)  # type: ignore[arg-type]
    good_low_fidelity = 0.99 if mode == "max" else 0.01
    ledger = ledger_of(record(0, good_low_fidelity, budget=3.0), record(1, scores[0]))
    # A low-fidelity score past the target is a forecast, not a model: no stop.
    assert not ctl.check_before_stage(ledger, stage="s1").stop and not ctl.check_in_flight(ledger).stop
    ledger.charge(record(2, scores[1]))
    for decision in (ctl.check_in_flight(ledger), ctl.check_before_stage(ledger, stage="s2")):
        assert decision.stop and decision.reason == "target_score" == StopReason.TARGET
        assert "t002" in decision.detail and f"{target:.4g}" in decision.detail


# --- the window in Hyperband iterations ----------------------------------------------------------------


def hyperband_run(ctl: BudgetController, tops: list[float], *, pass_bracket: bool = True) -> list:
    """One bracket per score: 1 GPU-h at budget 3 (score − 1), then 1 GPU-h at budget 9 (the score).

    The controller is asked before every stage, as the flow does, with the stage's bracket.
    """
    ledger, decisions = ledger_of(), []
    for b, top in enumerate(tops):
        for rung, budget, score in ((0, 3.0, top - 1.0), (1, 9.0, top)):
            d = ctl.check_before_stage(ledger, stage=f"bracket {b} rung {rung}", bracket=b if pass_bracket else None)
            decisions.append(d)
            if d.stop:
                return decisions
            ledger.charge(SpendRecord(trial_id=f"t{b}-{rung}", bracket=b, rung=rung, budget=budget, score=score,
                                      status=TrialStatus.COMPLETED, gpu_seconds=3600.0, gpus=1.0, cost=PRICE,
                                      started_at=0.0, finished_at=1.0))
    return decisions


def iteration_controller(**settings) -> BudgetController:
    settings = {"min_gain_per_gpu_hour": 0.1, "brackets_per_iteration": 2, "verdict_every": "iteration", **settings}
    return controller(**settings)[0]


def test_iteration_window_stops_after_patience_flat_iterations_and_counts_each_once() -> None:
    # Two brackets (4 GPU-h) an iteration. Iteration 1 gains 2 points (0.5/GPU-h), 2 and 3 none.
    ctl = iteration_controller(patience=2)
    decisions = hyperband_run(ctl, [1, 2, 3, 4, 4, 4, 4, 4, 9, 9])
    assert decisions[-1].stop and decisions[-1].stage == "bracket 8 rung 0"  # the first stage of iteration 4
    assert decisions[-1].spent_gpu_hours == pytest.approx(16.0)
    assert decisions[-1].best == 4 and "2 completed iterations" in decisions[-1].detail
    # Warm-up: no verdict before two iterations are complete.
    assert all(d.gain_per_gpu_hour is None for d in decisions[:8])
    assert "completed brackets the window needs" in decisions[0].detail
    # Iteration 1's verdict at every stage of iteration 2, iteration 2's (counted once) during iteration 3.
    assert [d.gain_per_gpu_hour for d in decisions[8:]] == pytest.approx([0.5] * 4 + [0.0] * 5)
    assert [d.below_threshold_checks for d in decisions[8:]] == [0] * 4 + [1] * 4 + [2]


def test_iteration_window_does_not_stop_on_a_flat_stretch_shorter_than_patience() -> None:
    # Flat for one iteration (a single dip below the threshold), then climbing again: never stops.
    ctl = iteration_controller(patience=2)
    decisions = hyperband_run(ctl, [1, 2, 3, 4, 4, 4, 5, 6, 6, 6, 7, 8])
    assert not any(d.stop for d in decisions)
    assert max(d.below_threshold_checks for d in decisions) == 1


def test_iteration_window_sees_progress_that_a_short_window_misses() -> None:
    # Four brackets an iteration; only the last bracket of each iteration finds a better model (the
    # late climbs of LCBench 7593): +1 point per 8 GPU-h iteration, 0.125/GPU-h, above 0.1.
    tops = [float(i // 4 + (i % 4 == 3)) for i in range(24)]
    short, _ = controller(min_gain_per_gpu_hour=0.1, window_gpu_hours=2.0, patience=2)
    assert hyperband_run(short, tops)[-1].stop  # two flat 2-GPU-h windows inside one iteration
    ctl = iteration_controller(patience=2, brackets_per_iteration=4)
    decisions = hyperband_run(ctl, tops)
    assert not any(d.stop for d in decisions)
    assert decisions[-1].gain_per_gpu_hour == pytest.approx(0.125)
    # A bigger window in iterations, and patience 1: the same verdicts.
    ctl = iteration_controller(patience=1, brackets_per_iteration=4, window_iterations=2)
    assert not any(d.stop for d in hyperband_run(ctl, tops))


def test_iteration_window_without_the_stage_bracket_waits_for_the_next_iteration_to_start() -> None:
    # Without the bracket the controller cannot tell a finished iteration from one about to start,
    # so the verdict comes one stage later: at the second stage of iteration 4.
    ctl = iteration_controller(patience=2)
    decisions = hyperband_run(ctl, [1, 2, 3, 4, 4, 4, 4, 4, 9, 9], pass_bracket=False)
    assert decisions[-1].stop and decisions[-1].stage == "bracket 8 rung 1"


def test_iteration_window_gives_way_to_a_window_in_gpu_hours_and_to_schedulers_without_iterations() -> None:
    tops = [1, 2, 3, 4, 4, 4, 4, 4, 9, 9]
    fixed = iteration_controller(patience=2, window_gpu_hours=2.0)
    assert hyperband_run(fixed, tops)[-1].stage == "bracket 6 rung 0"  # two flat 2-GPU-h windows
    asha = iteration_controller(patience=2, brackets_per_iteration=None)  # window: a third of the spend
    assert "iteration" not in hyperband_run(asha, tops)[-1].detail


def test_iteration_window_in_noisy_mode_takes_the_level_gain_too() -> None:
    # The record stays flat after a lucky 10 in iteration 1, but the level of the results keeps rising.
    tops = [1, 10, 3, 4, 5, 6, 7, 8, 9, 9.5, 9.8, 9.9]
    plain = iteration_controller(patience=2)
    assert hyperband_run(plain, tops)[-1].stop
    noisy = iteration_controller(patience=2, noisy=True)
    decisions = hyperband_run(noisy, tops)
    assert not any(d.stop for d in decisions) and "level" in decisions[-1].detail


def test_sliding_iteration_window_judges_every_completed_bracket() -> None:
    # Converged in bracket 2, the first of iteration 1: the sliding window (one iteration, judged per
    # bracket) sees brackets 3–4 flat and stops before bracket 5; verdicts per iteration see iteration
    # 1 rise and wait for iteration 2 to end.
    tops = [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    sliding = iteration_controller(patience=1, verdict_every="bracket")
    decisions = hyperband_run(sliding, tops)
    assert decisions[-1].stop and decisions[-1].stage == "bracket 5 rung 0"
    assert decisions[-1].spent_gpu_hours == pytest.approx(10.0) and "1 completed brackets" in decisions[-1].detail
    aligned = iteration_controller(patience=1)
    assert hyperband_run(aligned, tops)[-1].stage == "bracket 6 rung 0"
    # The default is the sliding window.
    assert BudgetSettings().verdict_every == "bracket" and BudgetSettings().window_iterations == 1
    # A rise once an iteration, anywhere in it, keeps every one-iteration window above the threshold.
    climbing = [float(i // 4 + (i % 4 == 3)) for i in range(24)]
    sliding = iteration_controller(patience=1, verdict_every="bracket", brackets_per_iteration=4)
    decisions = hyperband_run(sliding, climbing)
    assert not any(d.stop for d in decisions)
    assert min(d.gain_per_gpu_hour for d in decisions if d.gain_per_gpu_hour is not None) == pytest.approx(0.125)


def test_sliding_window_does_not_stop_on_a_flat_stretch_shorter_than_patience() -> None:
    # Defaults: one iteration (2 brackets) sliding, patience 2. Flat for exactly one iteration
    # (brackets 4–5), then rising: one verdict below the threshold, never a stop.
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, brackets_per_iteration=2)
    decisions = hyperband_run(ctl, [1, 2, 3, 4, 4, 4, 5, 6, 7, 8])
    assert not any(d.stop for d in decisions)
    assert [d.below_threshold_checks for d in decisions if d.stage.endswith("rung 0")][4:] == [0, 0, 1, 0, 0, 0]
    # Flat one bracket longer: stopped at the second flat verdict.
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, brackets_per_iteration=2)
    decisions = hyperband_run(ctl, [1, 2, 3, 4, 4, 4, 4, 6, 7, 8])
    assert decisions[-1].stop and decisions[-1].stage == "bracket 7 rung 0" and "2 completed brackets" in decisions[-1].detail


def test_sliding_window_waits_for_an_iteration_before_the_window() -> None:
    # Flat for the whole first iteration and one bracket more, then a big rise: the window needs an
    # iteration before it, so the first verdict comes before bracket 4 (2 brackets an iteration) and
    # sees the rise of bracket 3.
    ctl, _ = controller(min_gain_per_gpu_hour=0.1, brackets_per_iteration=2)
    decisions = hyperband_run(ctl, [1, 1, 1, 9, 9.5, 10, 10.5, 11])
    assert not any(d.stop for d in decisions)
    first = next(d for d in decisions if d.gain_per_gpu_hour is not None)
    assert first.stage == "bracket 4 rung 0" and first.gain_per_gpu_hour == pytest.approx(8 / 4)
    assert "3 of the 4 completed brackets" in decisions[6].detail
