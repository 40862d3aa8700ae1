"""The stop-rule benchmark's yardsticks (oracle, the price a user pays) and the peers' stop rules run live.

The yardsticks are checked on hand-made ledgers whose right answers can be worked out on paper; the live
peers on the LCBench surrogate: Optuna's Terminator and Ray Tune's ExperimentPlateauStopper must end their
runs themselves, below the cap, at the first point where their own criterion holds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.common import LCBENCH_MAX_EPOCH, fmt, library_versions, wall_and_load
from bench.stopping import _outcome, best_value_at_price, oracle
from rungflow.budgets.ledger import SpendRecord, TrialStatus

TOP = float(LCBENCH_MAX_EPOCH)


def _rec(trial: str, budget: float, score: float, gpu_hours: float) -> SpendRecord:
    return SpendRecord(trial_id=trial, bracket=0, rung=0, budget=budget, score=score, status=TrialStatus.COMPLETED,
                       gpu_seconds=gpu_hours * 3600.0, gpus=1.0, cost=0.0, started_at=0.0, finished_at=0.0)


# A run of 10 GPU-h: 90 after 1 h, 95 after 2 h, a low-fidelity 99 that must not count, then +0.3 after 10 h.
RUN = [_rec("a", TOP, 90.0, 1.0), _rec("b", TOP, 95.0, 1.0), _rec("c", 1.0, 99.0, 1.0),
       *[_rec(f"x{i}", TOP, 80.0, 1.0) for i in range(6)], _rec("d", TOP, 95.3, 1.0)]


def test_oracle_is_the_first_point_within_the_allowed_loss():
    saved, at = oracle(RUN, max_loss=0.2)  # 95.3 − 95.0 = 0.3 > 0.2: only the last record is close enough
    assert (saved, at) == pytest.approx((0.0, 10.0))
    saved, at = oracle(RUN, max_loss=0.5)  # 95.0 after 2 of 10 GPU-h
    assert (saved, at) == pytest.approx((0.8, 2.0))


def test_price_shortfall_judges_a_stop_by_what_the_rest_of_the_run_bought():
    # At 0.25 points per GPU-h, stopping after 2 h (95 − 0.5 = 94.5) beats running on (95.3 − 2.5 = 92.8).
    assert best_value_at_price(RUN, 0.25) == pytest.approx(94.5)
    early = _outcome("r", 0.25, RUN, 2, 10.0, 95.3, price=0.25)
    assert early.regret == pytest.approx(0.3) and early.price_shortfall == pytest.approx(0.0)
    assert early.after_gain_per_gpu_hour == pytest.approx(0.3 / 8)  # 0.0375 < 0.25: worth stopping
    never = _outcome("r", 0.25, RUN, None, 10.0, 95.3, price=0.25)
    assert never.price_shortfall == pytest.approx(94.5 - 92.8) and never.after_gain_per_gpu_hour is None
    # Too early: after 1 h the run still had 5.3 points to give for 9 GPU-h.
    first = _outcome("r", 0.25, RUN, 1, 10.0, 95.3, price=0.25)
    assert first.price_shortfall == pytest.approx(94.5 - (90.0 - 0.25)) and first.after_gain_per_gpu_hour > 0.25
    # At 1 point per GPU-h the best stop is still after 2 h: 95 − 2.
    assert best_value_at_price(RUN, 1.0) == pytest.approx(93.0)
    # Before any full-budget result nothing can be shipped: no value.
    assert _outcome("r", 0.25, RUN, 0, 10.0, 95.3).price_shortfall is None


# --- the peers' own stop rules, live on the surrogate ---------------------------------------------------------
peers = pytest.importorskip("bench.peers")


@pytest.fixture(scope="module")
def surrogate(yahpo_data):
    return peers.Surrogate("3945")


def test_optuna_terminator_ends_the_study_itself(surrogate):
    cap = 20.0
    run = peers.run_optuna("3945", 0, cap, pruner="hyperband", terminator={"error": 0.2, "min_n_trials": 20})
    assert run.stop_reason == "terminator"
    assert run.extra["stopped_at_gpu_hours"] == pytest.approx(run.gpu_hours)  # nothing trains after the stop
    assert run.gpu_hours < cap
    full = [e for e in run.events if e["budget"] == TOP]
    assert len(full) >= 20  # the Terminator waits for min_n_trials complete trials


def test_ray_tune_plateau_stopper_ends_the_experiment_where_its_top_values_settle(surrogate, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    cap = 5.0
    run = peers.run_ray_tune("3945", 0, cap, search="random", plateau={"std": 0.1, "top": 10, "patience": 0})
    assert run.stop_reason == "plateau" and run.gpu_hours < cap
    # Recomputed from the billed results, in the order Tune reported them: the stop is the first point
    # where the 10 best values so far have a std of at most 0.1.
    scores, first = [], None
    for e in run.events:
        scores.append(e["score"])
        top = sorted(scores)[-10:]
        if len(top) == 10 and np.std(top) <= 0.1:
            first = e["cumulative_gpu_hours"]
            break
    assert first is not None and run.extra["stopped_at_gpu_hours"] == pytest.approx(first)
    # The concurrent trial may report an epoch or two before Tune acts on stop_all; never more than a few.
    assert run.gpu_hours - first <= 0.05 and not math.isnan(run.gpu_hours)


def test_live_outcomes_are_judged_against_the_full_sweep_and_kept(tmp_path, monkeypatch):
    from bench import stopping_live
    from bench.stopping import Cell, Outcome

    calls = []

    def fake_peer(instance, seed, cap):
        calls.append((instance, seed, cap))
        events = [{"budget": 3.0, "score": 99.0}, {"budget": TOP, "score": 95.1}]
        return peers.PeerRun("fake", events, 2.5, None, None, None, "plateau", 7, 0.1)

    monkeypatch.setattr(stopping_live, "LIVE_PEERS", {"fake rule": fake_peer})
    ours = Outcome("rungflow window", 0.25, True, 3.0, 95.0, 0.7, 0.3)
    cell = Cell("3945", 1, 10.0, 95.3, 1.0, outcomes={"rungflow window": ours})
    first = stopping_live.run_live([cell], tmp_path)
    again = stopping_live.run_live([cell], tmp_path)  # kept: not run twice
    assert calls == [("3945", 1, 10.0)] and first == again
    live = first[0]
    assert live.saved == pytest.approx(0.75) and live.loss == pytest.approx(0.2) and live.stopped
    text = stopping_live.live_markdown([cell], first, price=0.25)
    # Both within 0.2 points? Ours lost 0.3, so the pair does not count at equal loss.
    assert "| fake rule | 0/1 |" in text and "| **all** | fake rule | 1/1 | 75% | 0.20 |" in text
    # At a price of 1 point per GPU-hour: the peer saved 7.5 GPU-h for 0.2 points (7.30), ours 7 for 0.3 (6.70).
    assert live.net_at_price(1.0) == pytest.approx(7.3)
    priced = stopping_live.live_markdown([cell], first, price=1.0)
    assert "| 7.30 | 7.30 |" in priced and "| 6.70 | 6.70 |" in priced and priced.rstrip().endswith("| 0 / 0 / 1 |")


def test_table_figures_and_footer():
    # A peer that overshot its cap by one epoch saved a hair below zero: the table says 0%, not -0%.
    assert fmt(-0.0001, ".0%") == "0%" and fmt(-1e-5) == "0.00"
    assert fmt(-0.01) == "-0.01" and fmt(-0.5, ".0%") == "-50%" and fmt(-math.inf) == "-∞"
    meta = {"wall_seconds": 96.0, "loadavg_before": [2.5], "loadavg_after": [3.25], "machine": "x86_64, 2 CPUs"}
    assert wall_and_load(meta).endswith("x86_64, 2 CPUs.")  # results written before versions were recorded
    versions = library_versions()
    assert "optuna" in versions and "ray" in versions
    footer = wall_and_load({**meta, "versions": versions})
    assert footer.startswith("Wall time 96 s; 1-min load average 2.50 before, 3.25 after; x86_64, 2 CPUs; optuna ")
    assert f"; optuna {versions['optuna']}" in footer and f"; ray {versions['ray']}" in footer and footer.endswith(".")
