"""Where two layers share fields, one defines them and a test holds the other in step.

``BudgetConfig`` (what a user writes) and ``BudgetSettings`` (what the controller reads) name the same
knobs; a worker reports the ``SpendRecord`` the ledger bills, with only what the flow reads besides it
beside it. A field added to one side and forgotten on the other fails here, not in a sweep.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from rungflow.budgets.controller import BudgetSettings
from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.config import BUDGET_FROM_SCHEDULER, BUDGET_RENAMED, BudgetConfig, parse_duration, validate
from rungflow.flows.sweep import Sweep
from rungflow.tasks.train import TrialResult
from tests.conftest import sweep_config

SETTINGS = {f.name: f for f in dataclasses.fields(BudgetSettings)}
SETTINGS_TYPES = typing.get_type_hints(BudgetSettings)


def test_budget_config_names_every_setting_a_user_sets() -> None:
    config_names = {BUDGET_RENAMED.get(name, name) for name in BudgetConfig.model_fields}
    assert config_names == set(SETTINGS) - BUDGET_FROM_SCHEDULER
    assert not set(BUDGET_RENAMED.values()) - set(SETTINGS)


@pytest.mark.parametrize("name", sorted(BudgetConfig.model_fields))
def test_budget_config_defaults_and_types_are_the_settings(name: str) -> None:
    field = BudgetConfig.model_fields[name]
    setting = SETTINGS[BUDGET_RENAMED.get(name, name)]
    default = parse_duration(field.default) if name == "deadline" else field.default
    assert default == setting.default, name
    if name == "deadline":
        # The config also reads '4h'; the controller gets seconds.
        assert field.annotation == float | str | None and SETTINGS_TYPES[setting.name] == float | None
    else:
        assert field.annotation == SETTINGS_TYPES[setting.name], name
    assert BudgetConfig().settings() == BudgetSettings()


# A value other than the default for every key, valid together.
NON_DEFAULT: dict[str, Any] = {
    "max_gpu_hours": 3.0, "max_cost": 7.0, "deadline": "2h", "price_per_gpu_hour": 1.5, "max_cpu_hours": 4.0,
    "price_per_cpu_hour": 0.25, "min_gain_per_gpu_hour": 0.01, "window_gpu_hours": 2.0, "min_gpu_hours": 0.5,
    "patience": 3, "top_k": 2, "stop_rule": "forecast", "history_stop": True, "noisy": True, "on_cap": "finish", "target_score": 0.9,
    "window_iterations": 2, "verdict_every": "iteration", "bill": "held",
}


def test_every_budget_key_reaches_the_controller() -> None:
    assert set(NON_DEFAULT) == set(BudgetConfig.model_fields), "give the new key a non-default value here"
    settings = BudgetConfig(**NON_DEFAULT).settings()
    for name, value in NON_DEFAULT.items():
        got = getattr(settings, BUDGET_RENAMED.get(name, name))
        assert got == (parse_duration(value) if name == "deadline" else value), name
        assert got != SETTINGS[BUDGET_RENAMED.get(name, name)].default, name
    assert settings.deadline_seconds == 7200.0
    assert settings.brackets_per_iteration is None  # the scheduler's to fill


def test_a_worker_reports_the_ledgers_own_record_and_nothing_twice() -> None:
    # Only what the flow reads besides the bill rides beside the record; a field of the bill belongs in SpendRecord.
    assert [f.name for f in dataclasses.fields(TrialResult)] == ["record", "logs", "lost_attempts"]


def test_the_flow_prices_a_workers_record_and_redacts_its_error(tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path, budget={"max_gpu_hours": 10.0, "price_per_gpu_hour": 4.0}))
    sweep = Sweep.create(cfg, tmp_path / "run")
    try:
        record = SpendRecord(trial_id="t0000", bracket=0, rung=0, budget=1.0, score=None, status=TrialStatus.FAILED,
                             gpu_seconds=1800.0, gpus=1.0, cost=0.0, started_at=0.0, finished_at=1800.0,
                             error="OperationalError: could not connect to postgresql://alice:hunter2@db:5432/study")
        priced = sweep.priced(record)
    finally:
        sweep.close()
    assert priced.cost == pytest.approx(2.0)  # 0.5 GPU-hours at 4 an hour
    assert priced.error is not None and "hunter2" not in priced.error and "db:5432" in priced.error
    assert dataclasses.replace(priced, cost=0.0, error=record.error) == record  # nothing else changed
