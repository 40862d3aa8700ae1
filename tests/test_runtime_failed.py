"""A runtime that loses every trial stops the sweep as ``runtime_failed``, not as a completed schedule."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import rungflow.flows.sweep as sweep_module
from rungflow.budgets.ledger import TrialStatus
from rungflow.config import validate
from rungflow.tasks.runtime import Runtime, _unfinished
from rungflow.tasks.train import TrialResult, TrialSpec
from tests.conftest import sweep_config

pytestmark = pytest.mark.slow


@dataclass
class DeadRuntime(Runtime):
    """Every worker is gone: each trial comes back lost, as Ray's does once its retries are spent."""

    def execute(self, spec: TrialSpec) -> TrialResult:
        if self.is_cancelled(spec):
            return _unfinished(spec, TrialStatus.CANCELLED, 0.0, "cancelled")
        return _unfinished(spec, TrialStatus.LOST, 0.0, "worker did not start (RaySystemError: cluster is gone)")


@pytest.mark.parametrize("kind", ["hyperband", "asha"])
def test_a_dead_runtime_stops_the_sweep_as_runtime_failed(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(sweep_module, "runtime_of", lambda cfg: DeadRuntime(kind="thread", slots=2))
    cfg = validate(sweep_config(tmp_path, name=f"dead-{kind}",
                                scheduler={"kind": kind, "min_budget": 1, "max_budget": 9, "eta": 3}))
    result = sweep_module.run_sweep(cfg, tmp_path / "run", refit=False)
    assert result["stop_reason"] == "runtime_failed"
    assert "5 trials in a row lost their worker" in result["stop_detail"]
    assert "rungflow resume" in result["stop_detail"]
    records = [json.loads(line) for line in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    spends = [r["record"] for r in records if r.get("type") == "spend"]
    # It stops at the fifth loss in a row: what had not run yet is cancelled, and no later stage starts.
    assert sum(r["status"] == "lost" for r in spends) >= sweep_module.MAX_RUNTIME_FAILURES
    assert {(r["bracket"], r["rung"]) for r in spends} == {(0, 0)}
