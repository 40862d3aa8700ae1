"""The stop rule learned from earlier sweeps: what it learns, when it judges, and how the product uses it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings, StopReason
from rungflow.budgets.history_stop import (
    HistoryStopRule,
    gain_per_log_result,
    learn,
    record_spacing,
    stop_rule_in_use,
    top_fidelity_scores,
)
from rungflow.budgets.ledger import Ledger, SpendRecord, TrialStatus
from rungflow.config import ConfigError, validate
from tests.conftest import sweep_config

# --- what it learns -----------------------------------------------------------------------------------


def test_kappa_is_the_incumbents_rise_in_record_spacings_per_log_result() -> None:
    # At n = 3 the best three (3, 2, 1) are 1 apart; the 4th result lifts the best by 1 over log(4/3).
    assert gain_per_log_result([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1 / math.log(4 / 3))
    # A sweep whose best never moves after its first results still gains nothing, however spread its results.
    assert gain_per_log_result([5.0, 1.0, 3.0, 0.0, 4.0, 2.0]) == 0.0
    assert gain_per_log_result([1.0, 2.0, 3.0]) is None  # too short to measure
    assert gain_per_log_result([2.0, 2.0, 2.0, 2.0]) is None  # results that never differ: no scale
    assert record_spacing([0.0, 9.0, 8.0, 7.0, 6.0, 1.0]) == pytest.approx(1.0)  # (9 − 6) / 3: the top only


def test_top_fidelity_scores_keep_order_drop_failures_and_sign_by_mode() -> None:
    results = [(9.0, 0.5), (1.0, 0.9), (9.0, None), (9.0, 0.25), (9.0, float("nan")), (9.0, 0.75)]
    assert top_fidelity_scores(results, "max") == [0.5, 0.25, 0.75]
    assert top_fidelity_scores(results, "min") == [-0.5, -0.25, -0.75]


def test_too_little_history_learns_nothing_and_the_controllers_own_rule_stays() -> None:
    long_sweep = [1.0, 2.0, 3.0, 4.0, 4.5]
    assert learn([long_sweep]) is None  # one earlier sweep
    assert learn([long_sweep, [1.0, 2.0, 3.0]]) is None  # the second too short to measure
    rule = learn([long_sweep, [3.0, 2.0, 1.0, 5.0, 5.0]], margin=1.0)
    assert rule is not None and rule.sweeps == 2
    assert rule.kappa == pytest.approx(sorted(rule.per_sweep)[0] / 2 + sorted(rule.per_sweep)[1] / 2)
    assert HistoryStopRule.from_json(json.loads(json.dumps(rule.to_json()))) == rule

    none, why = stop_rule_in_use(None, enabled=True, min_gain_per_gpu_hour=0.5, stop_rule="window")
    assert none is None and not why["used"] and "fewer than 2 earlier sweeps" in why["why"] and "window" in why["why"]
    off, why = stop_rule_in_use(rule.to_json(), enabled=False, min_gain_per_gpu_hour=0.5, stop_rule="forecast")
    assert off is None and "budget.history_stop is false" in why["why"] and "forecast" in why["why"]
    no_price, why = stop_rule_in_use(rule.to_json(), enabled=True, min_gain_per_gpu_hour=None, stop_rule="window")
    assert no_price is None and "no min_gain_per_gpu_hour" in why["why"]
    used, why = stop_rule_in_use(rule.to_json(), enabled=True, min_gain_per_gpu_hour=0.5, stop_rule="window")
    assert used == rule and why["used"] and why["sweeps"] == 2


def test_the_estimate_scales_with_the_spacing_and_waits_for_evidence() -> None:
    rule = HistoryStopRule(kappa=2.0, sweeps=3)
    assert rule.estimate([1.0, 2.0], 4, 1.0) is None  # two results: no scale yet
    assert rule.estimate([1.0, 2.0, 3.0], 0, 1.0) is None  # a slice without a full-budget result: no rate
    est = rule.estimate([1.0, 2.0, 3.0, 4.0], 4, 2.0)
    assert est is not None and est.spacing == pytest.approx(1.0)
    assert est.expected_gain == pytest.approx(2.0 * 1.0 * math.log(8 / 4)) and est.gain_per_gpu_hour == est.expected_gain / 2
    tight = rule.estimate([1.0, 2.0, 3.9, 3.95, 3.97, 4.0], 4, 2.0)  # the best bunched together: little left to find
    assert tight is not None and tight.spacing == pytest.approx(0.1 / 3)
    assert tight.expected_gain < est.expected_gain / 10


# --- in the controller -----------------------------------------------------------------------------


def _record(i: int, bracket: int, score: float, budget: float = 9.0, gpu_hours: float = 1.0) -> SpendRecord:
    return SpendRecord(trial_id=f"t{i:03d}", bracket=bracket, rung=0, budget=budget, score=score,
                       status=TrialStatus.COMPLETED, gpu_seconds=gpu_hours * 3600.0, gpus=1.0, cost=0.0, started_at=0.0,
                       finished_at=1.0)


def _judge_brackets(ctl: BudgetController, scores_by_bracket: list[list[float]]) -> list[Any]:
    """Before each bracket, as the driver asks: one stage per bracket of full-budget results of 1 GPU-h each."""
    ledger, decisions, i = Ledger(), [], 0
    for bracket, scores in enumerate(scores_by_bracket):
        decisions.append(ctl.check_before_stage(ledger, stage=f"bracket {bracket}", bracket=bracket))
        if decisions[-1].stop:
            break
        for score in scores:
            ledger.charge(_record(i, bracket, score))
            i += 1
    return decisions


FLAT = [[0.70, 0.80, 0.90], [0.85, 0.60], [0.88, 0.50], [0.89, 0.70], [0.75, 0.80], [0.86, 0.30], [0.80, 0.82]]


def test_a_flat_sweep_stops_by_the_history_rule_and_says_so() -> None:
    settings = BudgetSettings(min_gain_per_gpu_hour=0.01, patience=2, brackets_per_iteration=2, history_stop=True)
    decisions = _judge_brackets(BudgetController(settings, full_budget=9.0,
                                                 history_stop=HistoryStopRule(kappa=1.0, sweeps=4)), FLAT)
    stop = decisions[-1]
    assert stop.stop and stop.reason == StopReason.HISTORY_GAIN == "history_gain_per_gpu_hour"
    assert "history, 4 earlier sweeps" in stop.detail and "for 2 completed brackets" in stop.detail
    # The slice judged is the last iteration (two brackets, four full-budget results at 4 GPU-h).
    assert "the next 4 top-fidelity results (4 GPU-h)" in stop.detail
    assert stop.gain_per_gpu_hour is not None and stop.gain_per_gpu_hour < 0.01
    assert "not yet enough to judge" in decisions[0].detail  # no full-budget result yet: no verdict either way


def test_a_kind_of_sweep_that_keeps_gaining_keeps_going_and_false_turns_it_off() -> None:
    settings = BudgetSettings(min_gain_per_gpu_hour=0.01, patience=2, brackets_per_iteration=2, history_stop=True)
    keen = BudgetController(settings, full_budget=9.0, history_stop=HistoryStopRule(kappa=50.0, sweeps=4))
    assert not any(d.stop for d in _judge_brackets(keen, FLAT))
    off = BudgetController(BudgetSettings(min_gain_per_gpu_hour=0.01, patience=2, brackets_per_iteration=2,
                                          history_stop=False), full_budget=9.0,
                           history_stop=HistoryStopRule(kappa=1.0, sweeps=4))
    assert off.history_stop is None
    assert all("history" not in d.detail for d in _judge_brackets(off, FLAT))


def test_history_stop_is_a_checked_boolean(tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path, budget={"min_gain_per_gpu_hour": 0.5, "history_stop": False}))
    assert cfg.budget.settings().history_stop is False
    with pytest.raises(ConfigError) as err:
        validate(sweep_config(tmp_path, budget={"min_gain_per_gpu_hour": 0.5, "history_stop": "sometimes"}))
    assert "budget.history_stop" in str(err.value) and "\n" not in str(err.value)


# --- in a real sweep ---------------------------------------------------------------------------------

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0, "high": 1.0}}
BILLED = {"kind": "noop", "options": {"gpu_seconds_per_unit": 3600.0}}  # one GPU-hour per epoch: spend is exact


@pytest.fixture(scope="module")
def earlier_runs(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One real earlier sweep, and a copy of it as a second (two are the least the rule learns from)."""
    import shutil

    from rungflow.flows.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("earlier")
    cfg = validate(sweep_config(tmp, name="earlier", space=SPACE, trainable=BILLED,
                                budget={"max_gpu_hours": 10_000.0}))
    run_sweep(cfg, tmp / "run", refit=False)
    shutil.copytree(tmp / "run", tmp / "copy")
    return [tmp / "run", tmp / "copy"]


def test_a_sweep_with_history_and_a_price_stops_by_what_the_earlier_sweeps_gained(
        earlier_runs: list[Path], tmp_path: Path) -> None:
    from rungflow.flows.cli_render import summary_lines
    from rungflow.flows.sweep import run_sweep

    cfg = validate(sweep_config(tmp_path, name="new-sweep", space=SPACE, trainable=BILLED,
                                history={"runs": [str(r) for r in earlier_runs], "portfolio": 0},
                                scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3,
                                           "iterations": 4},
                                budget={"max_gpu_hours": 10_000.0, "min_gain_per_gpu_hour": 0.01, "history_stop": True}))
    from rungflow.flows.cli_plan import history_plan_line

    assert "the marginal-gain stop judged by what 2 earlier sweeps still gained" in history_plan_line(cfg)
    result = run_sweep(cfg, cfg.run_dir(), refit=False)
    stop = result["history"]["stop"]
    assert stop["used"] and stop["sweeps"] == 2, stop
    saved = json.loads((cfg.run_dir() / "history.json").read_text())["summary"]["stop_rule"]
    assert saved["sweeps"] == 2 and saved["kappa"] == stop["kappa"]  # a resume judges by the same rule
    # Noop scores move by hundredths while an iteration costs about 60 GPU-hours: far below 0.01 per GPU-hour.
    assert result["stop_reason"] == "history_gain_per_gpu_hour", result["stop_detail"]
    assert "history, 2 earlier sweeps" in result["stop_detail"]
    line = next(x for x in summary_lines(result) if x.startswith("history:"))
    assert "the marginal-gain stop judged by what 2 earlier sweeps still gained" in line
