"""The forecast stop rule end to end: a Hyperband sweep on the LCBench surrogate stops on its forecast."""

from __future__ import annotations

from pathlib import Path

import pytest

from rungflow.config import validate
from rungflow.flows.sweep import run_sweep
from tests.conftest import sweep_config

pytestmark = pytest.mark.slow


def test_forecast_rule_stops_a_surrogate_sweep_and_records_its_figures(prefect_server: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    cfg = sweep_config(
        tmp_path, name="lcbench-forecast",
        trainable={"kind": "yahpo_lcbench", "options": {"instance": "3945"}},
        search={"algorithm": "bohb", "seed": 0},
        scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 52, "eta": 3, "iterations": 4},
        runtime={"kind": "thread", "max_concurrent": 2},
        budget={"max_gpu_hours": 100, "min_gain_per_gpu_hour": 0.5, "stop_rule": "forecast", "patience": 2},
    )
    try:
        result = run_sweep(validate(cfg), tmp_path / "run")
    except Exception as exc:  # only a missing LCBench data folder is a reason to skip
        if "RUNGFLOW_YAHPO_DATA" in str(exc):
            pytest.skip(str(exc))
        raise
    for d in result["decisions"]:
        print(d["stage"], d["spent_gpu_hours"], d["gain_per_gpu_hour"], d["detail"])
    assert result["stop_reason"] == "min_gain_per_gpu_hour"
    forecasts = [d for d in result["decisions"] if "forecast:" in d["detail"]]
    assert forecasts, "no decision carried a forecast"
    last = result["decisions"][-1]
    assert last["action"] == "stop" and last["gain_per_gpu_hour"] < 0.5 and last["below_threshold_checks"] >= 2
    assert "forecast:" in last["detail"]
    # Stopped before the schedule's 4 iterations of 4 brackets had all run.
    assert len(result["schedule"]) < 16
