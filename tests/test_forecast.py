"""The forecast stop rule's estimator on synthetic rung results whose expected gain is known."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

import rungflow.budgets.forecast as forecast_module
from rungflow.budgets.controller import BudgetController, BudgetSettings
from rungflow.budgets.forecast import RungScore, entry_scores, forecast_gain, score_changes
from rungflow.budgets.ledger import Ledger, SpendRecord, TrialStatus


def curve(trial: str, points: dict[float, float | None]) -> list[RungScore]:
    return [RungScore(trial, b, s) for b, s in points.items()]


def test_constant_transfer_gives_the_exact_gain() -> None:
    # Every trial gained exactly +0.2 from budget 3 to 9; the incumbent at 9 is 0.8.
    history = [*curve("a", {3: 0.6, 9: 0.8}), *curve("b", {3: 0.4, 9: 0.6}), *curve("d", {3: 0.5, 9: 0.7}),
               *curve("c", {3: 0.5})]
    assert score_changes(history, 3, 9) == pytest.approx([0.2, 0.2, 0.2])
    f = forecast_gain(history, rungs=[(9, 1)], candidates=[0.7], start_budget=3)
    assert f is not None
    assert f.expected_gain == pytest.approx(0.1) and f.probability_of_gain == 1.0
    assert f.incumbent == pytest.approx(0.8) and f.top_budget == 9
    assert f.budget_units == pytest.approx(6.0)
    # A candidate that ends below the incumbent buys nothing.
    assert forecast_gain(history, rungs=[(9, 1)], candidates=[0.55], start_budget=3).expected_gain == 0.0  # type: ignore[union-attr]


def test_fresh_bracket_with_gate_matches_the_exact_expectation() -> None:
    # Entries at budget 1 score 0.0 or 1.0 equally often; 1 → 3 adds 0.2 or 0.5 equally often (20
    # pairs from 0.0: mean 0.35, residuals ±0.15, scaled by √(20/19) for the fitted mean). A fresh
    # bracket of three trials keeps the best one: it ends at 1.35 ± 0.15·√(20/19) unless all three
    # drew 0.0 (probability 1/8).
    history: list[RungScore] = []
    for i in range(20):
        history += curve(f"p{i}", {1: 0.0, 3: 0.2 if i % 2 else 0.5}) + curve(f"e{i}", {1: 1.0})
    assert sorted(entry_scores(history, 1)) == [0.0] * 20 + [1.0] * 20
    spread = 0.15 * math.sqrt(20 / 19)
    # An incumbent of 1.6 at budget 3 is out of reach.
    f = forecast_gain([*history, RungScore("inc", 3, 1.6)], rungs=[(1, 3), (3, 1)], samples=40_000, seed=1)
    assert f is not None and f.expected_gain == 0.0
    # Against 1.2, only the +0.15·√(20/19) half of the 7/8 gains, by 0.15 + 0.15·√(20/19).
    f = forecast_gain([*history, RungScore("inc", 3, 1.2)], rungs=[(1, 3), (3, 1)], samples=40_000, seed=1)
    assert f is not None
    assert f.expected_gain == pytest.approx(7 / 8 * 0.5 * (0.15 + spread), abs=0.005)
    assert f.budget_units == pytest.approx(3 * 1 + 1 * 2)


def test_gaussian_transfer_matches_the_closed_form() -> None:
    # One candidate at 0.5, Δ ~ N(0.1, 0.2²) (a large empirical sample), incumbent 0.7:
    # E[max(0, 0.6 + Δ' - 0.7)] with Δ' ~ N(0, 0.2²) = σ φ(μ/σ) + μ Φ(μ/σ), μ = -0.1, σ = 0.2.
    normal = NormalDist(0.1, 0.2)
    history = [RungScore("inc", 9, 0.7)]
    for i, d in enumerate(normal.inv_cdf((j + 0.5) / 2000) for j in range(2000)):
        history += curve(f"t{i}", {3: -1.0, 9: -1.0 + float(d)})
    f = forecast_gain(history, rungs=[(9, 1)], candidates=[0.5], start_budget=3, samples=20_000)
    mu, sigma = -0.1, 0.2
    phi = math.exp(-0.5 * (mu / sigma) ** 2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(mu / sigma / math.sqrt(2)))
    assert f is not None and f.expected_gain == pytest.approx(sigma * phi + mu * big_phi, rel=0.05)


def _bracket_history(rng: np.random.Generator, brackets: int, n: int, keep: int, slope: float, noise: float) -> list[RungScore]:
    """Successive halving on a known model: score(b) = q + slope·log3(b) + noise, q ~ N(0, 1)."""
    history: list[RungScore] = []
    for k in range(brackets):
        q = rng.normal(0, 1, size=n)
        low = q + noise * rng.normal(size=n)
        for i in range(n):
            history.append(RungScore(f"b{k}t{i}", 1, float(low[i])))
        for i in np.argsort(-low)[:keep]:
            history.append(RungScore(f"b{k}t{i}", 3, float(q[i] + slope + noise * rng.normal())))
    return history


@pytest.mark.parametrize("noise", [0.1, 1.0, 2.0])
def test_transfer_line_recovers_the_regression_to_the_mean_of_a_known_noisy_model(noise: float) -> None:
    # score(b) = q + slope·[b = 3] + noise, q ~ N(0, 1), only the best third promoted on the noisy
    # low-rung score. Then E[s(3) | s(1)] = slope + s(1)/(1 + σ²): the lead of a noisy low-rung score
    # is partly luck. The line is fitted on promoted trials only (selection on the regressor), yet
    # must find β = 1/(1 + σ²), α = slope and the residual spread σ²/(1 + σ²) + σ².
    slope = 0.5
    history = _bracket_history(np.random.default_rng(3), 300, 9, 3, slope, noise)
    t = forecast_module.fit_transfer(history, 1, 3)
    assert t is not None
    shrink = 1 / (1 + noise**2)
    assert t.beta == pytest.approx(shrink, abs=0.08)
    assert t.alpha == pytest.approx(slope, abs=0.15 + 0.1 * noise)
    assert float(np.std(t.residuals)) == pytest.approx(math.sqrt(noise**2 * shrink + noise**2 + 1e-12), rel=0.12)
    # Plain score changes would carry the luck of the selection into the forecast instead.
    if noise >= 1:
        assert np.mean(score_changes(history, 1, 3)) < slope - 0.3 * noise


def test_no_evidence_gives_none() -> None:
    history = curve("a", {1: 0.5, 3: 0.6}) + curve("b", {1: 0.4})
    # No trial has been trained from 3 to 9 yet, and nobody reached 9.
    assert forecast_gain(history, rungs=[(9, 1)], candidates=[0.6], start_budget=3) is None
    # A fresh bracket needs at least three entries at its first budget (and a step three pairs).
    assert forecast_gain(history, rungs=[(3, 2)]) is None
    assert forecast_gain([], rungs=[(1, 2)]) is None
    # A remainder that ends below the highest fidelity reached cannot move the incumbent.
    f = forecast_gain(history, rungs=[(1, 2)])
    assert f is not None and f.expected_gain == 0.0
    with pytest.raises(ValueError, match="start_budget"):
        forecast_gain(history, rungs=[(3, 1)], candidates=[0.5])


def test_failed_results_are_ignored_and_min_mode_is_mirrored() -> None:
    history = [*curve("a", {3: 0.6, 9: 0.4}), *curve("b", {3: 0.5, 9: None}), *curve("c", {3: 0.7, 9: 0.5}),
               *curve("d", {3: 0.65, 9: 0.45})]
    assert score_changes(history, 3, 9) == pytest.approx([-0.2, -0.2, -0.2])
    f = forecast_gain(history, rungs=[(9, 1)], candidates=[0.5], start_budget=3, mode="min")
    assert f is not None and f.incumbent == pytest.approx(0.4) and f.expected_gain == pytest.approx(0.1)


def test_top_k_gain_is_the_rise_of_the_top_k_mean() -> None:
    history = [*curve("a", {3: 0.6, 9: 0.8}), *curve("b", {3: 0.4, 9: 0.6}), *curve("d", {3: 0.5, 9: 0.7})]
    f = forecast_gain(history, rungs=[(9, 1)], candidates=[0.9], start_budget=3, top_k=2)
    # top-2 mean goes from (0.8 + 0.7)/2 = 0.75 to (1.1 + 0.8)/2 = 0.95.
    assert f is not None and f.expected_gain == pytest.approx(0.2)


def test_same_seed_same_forecast() -> None:
    history = _bracket_history(np.random.default_rng(0), 3, 9, 3, 0.3, 0.5)
    a = forecast_gain(history, rungs=[(1, 9), (3, 3)], seed=5)
    b = forecast_gain(history, rungs=[(1, 9), (3, 3)], seed=5)
    assert a == b


def test_controller_divides_the_forecast_by_the_spend_it_buys() -> None:
    ledger = Ledger()
    ledger.charge(SpendRecord(trial_id="t0", bracket=0, rung=0, budget=9.0, score=0.5, status=TrialStatus.COMPLETED,
                              gpu_seconds=3600.0, gpus=1.0, cost=0.0, started_at=0.0, finished_at=1.0))
    ctl = BudgetController(BudgetSettings(min_gain_per_gpu_hour=0.1, stop_rule="forecast", patience=1), clock=lambda: 0.0)
    # 0.4 expected over the 4 GPU-h of the bracket's rest (the next stage alone costs 1): 0.1/GPU-h, not 0.4.
    d = ctl.check_before_stage(ledger, stage="s", next_stage_gpu_hours=1.0, expected_gain=0.3, forecast_gpu_hours=4.0,
                               forecast_detail="forecast: +0.3")
    assert d.stop and d.gain_per_gpu_hour == pytest.approx(0.075) and "forecast: +0.3" in d.detail
    assert d.next_stage_gpu_hours == 1.0


def _spend(trial: str, bracket: int, rung: int, budget: float, score: float | None) -> SpendRecord:
    return SpendRecord(trial_id=trial, bracket=bracket, rung=rung, budget=budget, score=score,
                       status=TrialStatus.COMPLETED if score is not None else TrialStatus.FAILED,
                       gpu_seconds=36.0 * budget, gpus=1.0, cost=0.0, started_at=0.0, finished_at=1.0)


def test_stage_forecast_takes_the_gates_survivors_and_the_brackets_rest() -> None:
    from rungflow.budgets.forecast import stage_forecast
    from rungflow.budgets.schedulers import ASHAScheduler, HyperbandScheduler

    hb = HyperbandScheduler(min_budget=1, max_budget=9, eta=3, integer=True)
    # Bracket 0: 9 @ 1, 3 @ 3, 1 @ 9. Its first two rungs ran; every 1 → 3 step added exactly +0.1,
    # every 3 → 9 step (bracket 1's x, y, z) +0.2.
    records = [_spend(f"t{i}", 0, 0, 1, 0.1 * i) for i in range(8)] + [_spend("t8", 0, 0, 1, None)]
    records += [_spend(f"t{i}", 0, 1, 3, 0.1 * i + 0.1) for i in (5, 6, 7)]
    records += [_spend(x, 1, 0, 3, v) for x, v in (("x", 0.2), ("y", 0.1), ("z", 0.0))]
    records += [_spend(x, 1, 1, 9, v + 0.2) for x, v in (("x", 0.2), ("y", 0.1), ("z", 0.0))]
    # Before rung 2 of bracket 0: the gate keeps t7 (0.8 at 3), which goes on to 1.0 at 9; incumbent 0.4.
    f = stage_forecast(records, hb, (0, 2))
    assert f is not None and f.expected_gain == pytest.approx(0.6) and f.budget_units == pytest.approx(6.0)
    # Before rung 1 (replayed on the same records): the gate's survivors t5..t7 (the failed t8 never
    # passes) go → 3 (+0.1), the best of them → 9 (+0.2): 1.0 again, for 3·2 + 1·6 units.
    f = stage_forecast(records, hb, (0, 1))
    assert f is not None and f.expected_gain == pytest.approx(0.6) and f.budget_units == pytest.approx(12.0)
    # Without the 1 → 3 results there is no evidence for that step.
    assert stage_forecast(records[:9] + records[12:], hb, (0, 1)) is None
    assert stage_forecast(records[:15], hb, (0, 2)) is None  # nobody has reached 9: no incumbent to improve
    asha = ASHAScheduler(min_budget=1, max_budget=9, eta=3, num_trials=50)
    f = stage_forecast(records, asha, None)
    assert f is not None and f.budget_units == pytest.approx(9 * 1 + 3 * 2 + 1 * 6)
