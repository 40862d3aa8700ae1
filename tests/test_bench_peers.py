"""The Ray Tune and Optuna adapters of ``python -m bench compare`` bill and stop exactly as rungflow does.

A tiny cap on one LCBench instance: every billed GPU-second must be the surrogate's own time for the
epochs each trial ran (re-queried here, independently of the adapter), the cap must stop the run
within one epoch per concurrent trial, and pruning must actually have cut trials short.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from bench.common import LCBENCH_MAX_EPOCH, incumbent_curve
from bench.compare import score_events

pytest.importorskip("onnxruntime")
peers = pytest.importorskip("bench.peers")

INSTANCE = "3945"
CAP_GPU_HOURS = 0.12  # ~75 epochs on 3945: a few trials, some pruned, in seconds
# Ray Tune runs 2 trials at once, but one may report all its epochs while the other's worker is still loading
# the surrogate; alone it can spend up to ~0.68 GPU-h on 3945 (52 epochs, the dearest of 400 random configs),
# so under a smaller cap "at least 2 trials" depends on who starts first. Above it a second trial must report.
TUNE_CAP_GPU_HOURS = 0.7


@pytest.fixture(scope="module")
def surrogate(yahpo_data):
    return peers.Surrogate(INSTANCE)


def _check_billing(run, surrogate, concurrency: int, cap_gpu_hours: float = CAP_GPU_HOURS) -> None:
    by_trial: dict[str, list[dict]] = defaultdict(list)
    for e in run.events:
        by_trial[e["trial_id"]].append(e)
    expected_seconds = 0.0
    max_epoch_seconds = 0.0
    for trial_id, events in by_trial.items():
        epochs = [int(e["budget"]) for e in events]
        assert epochs == list(range(1, len(epochs) + 1)), f"{run.method} trial {trial_id} billed epochs {epochs}"
        config = run.configs[trial_id]
        # The bill rungflow's LCBenchTrainable would send: cumulative surrogate time, never falling.
        spent = 0.0
        for e in events:
            t = max(float(surrogate._trainable._query(config, int(e["budget"]))["time"]), spent)
            assert e["gpu_hours"] * 3600 == pytest.approx(t - spent, rel=1e-9, abs=1e-9)
            max_epoch_seconds = max(max_epoch_seconds, t - spent)
            spent = t
        expected_seconds += spent
    assert run.gpu_hours * 3600 == pytest.approx(expected_seconds, rel=1e-9)
    cumulative = [e["cumulative_gpu_hours"] for e in run.events]
    assert cumulative == sorted(cumulative) and cumulative[-1] == pytest.approx(run.gpu_hours)
    # Stopped by the cap, and not much past it: at most one more epoch per trial running at once.
    assert run.stop_reason == "max_gpu_hours"
    assert cap_gpu_hours <= run.gpu_hours <= cap_gpu_hours + concurrency * max_epoch_seconds / 3600
    # The pruner/scheduler did its job: some trial stopped before 52 epochs.
    assert any(len(v) < LCBENCH_MAX_EPOCH for v in by_trial.values()), f"{run.method}: no trial was pruned"
    assert run.best_config is not None and set(run.best_config) == set(config)


@pytest.mark.parametrize("method", ["optuna-tpe+hyperband", "optuna-tpe+sha"])
def test_optuna_bills_surrogate_time_and_stops_at_cap(method, surrogate):
    run = peers.run_peer(method, INSTANCE, 0, CAP_GPU_HOURS)
    _check_billing(run, surrogate, concurrency=1)


@pytest.mark.parametrize("method", ["tune-optuna+asha", "tune-random+asha"])
def test_ray_tune_bills_surrogate_time_and_stops_at_cap(method, surrogate, monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    run = peers.run_peer(method, INSTANCE, 0, TUNE_CAP_GPU_HOURS)
    _check_billing(run, surrogate, concurrency=peers.CONCURRENCY, cap_gpu_hours=TUNE_CAP_GPU_HOURS)
    assert run.trials >= 2


def test_scoring_uses_only_full_budget_results():
    events = [
        {"status": "completed", "budget": 1.0, "score": 99.0, "cumulative_gpu_hours": 0.1},
        {"status": "completed", "budget": 52.0, "score": 90.0, "cumulative_gpu_hours": 0.5},
        {"status": "completed", "budget": 52.0, "score": 95.0, "cumulative_gpu_hours": 1.0},
    ]
    curve, reach, at = score_events(events, G=10.0, target=94.5, fractions=(0.01, 0.05, 0.2))
    assert [(p.gpu_hours, p.best) for p in curve] == [(0.5, 90.0), (1.0, 95.0)]
    assert reach == pytest.approx(0.1)
    assert at == {"0.01": None, "0.05": 90.0, "0.2": 95.0}
    assert score_events(events[:2], G=10.0, target=94.5, fractions=())[1] is None
    assert incumbent_curve(events, LCBENCH_MAX_EPOCH)[-1].best == 95.0 and not math.isnan(reach)
