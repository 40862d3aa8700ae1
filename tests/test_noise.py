"""The marginal-gain rule on known curves plus Gaussian seed-to-seed noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rungflow.budgets.controller import BudgetController, BudgetSettings, expected_top_k_mean, level_gain
from rungflow.budgets.ledger import Ledger, SpendRecord, TrialStatus

STEP_GPU_HOURS = 0.1  # one top-fidelity result per 0.1 GPU-h
THRESHOLD = 0.1  # metric units per GPU-h


def record(i: int, score: float, gpu_hours: float = STEP_GPU_HOURS) -> SpendRecord:
    return SpendRecord(trial_id=f"t{i:04d}", bracket=0, rung=0, budget=9.0, score=score, status=TrialStatus.COMPLETED,
                       gpu_seconds=gpu_hours * 3600.0, gpus=1.0, cost=0.0, started_at=0.0, finished_at=1.0)


def stop_time(scores: list[float], *, noisy: bool, top_k: int = 3, patience: int = 2) -> float | None:
    """GPU-hours at which the rule stops a sweep producing ``scores`` (checked every 5 results), or None."""
    ctl = BudgetController(
        BudgetSettings(min_gain_per_gpu_hour=THRESHOLD, window_gpu_hours=1.0, min_gpu_hours=1.0, patience=patience,
                       top_k=top_k, noisy=noisy),
        clock=lambda: 0.0,
    )
    ledger = Ledger()
    for i, score in enumerate(scores):
        ledger.charge(record(i, score))
        if (i + 1) % 5 == 0 and ctl.check_before_stage(ledger, stage=f"s{i}").stop:
            return (i + 1) * STEP_GPU_HOURS
    return None


def noisy_curve(true, sigma: float, seed: int, n: int = 200) -> list[float]:
    rng = np.random.default_rng(seed)
    return [true((i + 1) * STEP_GPU_HOURS) + sigma * float(rng.normal()) for i in range(n)]


def test_expected_top_k_mean_of_a_subsample() -> None:
    scores = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert expected_top_k_mean(scores, 5, 2) == pytest.approx(4.5)
    # Subsets of 1: every value equally likely.
    assert expected_top_k_mean(scores, 1, 1) == pytest.approx(3.0)
    # The best of 2 out of 5, by enumeration of the 10 pairs.
    pairs = [max(a, b) for i, a in enumerate(scores) for b in scores[i + 1 :]]
    assert expected_top_k_mean(scores, 2, 1) == pytest.approx(sum(pairs) / len(pairs))
    with pytest.raises(ValueError):
        expected_top_k_mean(scores, 6, 1)


def test_level_gain_compares_windows_at_equal_sample_size() -> None:
    # Previous 0.2 GPU-h: four results (1, 0, 0, 0); last 0.2 GPU-h: two results (1, 0). Both best
    # scores are 1, but the previous window had twice the draws to get lucky with: at the same
    # sample size (2) its expected best is 1 − C(3,2)/C(4,2) = 0.5, so the level rose by 0.5.
    records = [record(i, s, 0.05) for i, s in enumerate([1.0, 0.0, 0.0, 0.0])]
    records += [record(4, 1.0), record(5, 0.0)]
    assert level_gain(records, 0.2, "max") == pytest.approx(0.5 / 0.2)
    assert level_gain(records, 0.2, "min") == pytest.approx(0.0)  # in "min" mode both best scores are surely 0
    assert level_gain(records[:4], 0.2, "max") is None  # nothing before the window


def test_a_lucky_early_score_stops_the_record_rule_but_not_the_noise_aware_one() -> None:
    # A true curve rising 0.5/GPU-h (five times the threshold), and one evaluation 2 points lucky at
    # 1 GPU-h: the record stays above the curve until ~5 GPU-h, so the record gain reads 0 meanwhile.
    scores = [0.5 * (i + 1) * STEP_GPU_HOURS for i in range(80)]
    scores[9] += 2.0
    assert stop_time(scores, noisy=False, top_k=1) is not None
    assert stop_time(scores, noisy=True, top_k=1) is None


@pytest.mark.parametrize("sigma", [0.1, 0.3])
def test_a_still_improving_noisy_objective_is_not_stopped(sigma: float) -> None:
    # True gain 0.5/GPU-h, five times the threshold; 20 seeds of noise.
    stops = [stop_time(noisy_curve(lambda t: 0.5 * t, sigma, seed), noisy=True) for seed in range(20)]
    assert stops == [None] * 20


@pytest.mark.parametrize("sigma", [0.1, 0.3, 1.0])
def test_a_flat_noisy_objective_is_stopped(sigma: float) -> None:
    # True gain 0; the record creeps up only by the luck of more draws, the level not at all.
    stops = [stop_time(noisy_curve(lambda t: 1.0, sigma, seed), noisy=True) for seed in range(20)]
    assert all(s is not None for s in stops)
    assert max(s for s in stops if s is not None) <= 10.0  # within 10 GPU-h of 20


def test_a_saturating_noisy_objective_stops_after_it_flattens() -> None:
    # 1 − e^(−t/2): the gain per GPU-h falls below 0.1 at t = 2·ln 5 ≈ 3.2 GPU-h.
    flattens_at = 2 * math.log(5.0)
    for seed in range(10):
        stop = stop_time(noisy_curve(lambda t: 1 - math.exp(-t / 2), 0.05, seed), noisy=True)
        assert stop is not None and flattens_at - 1.0 <= stop <= flattens_at + 6.0, (seed, stop)
