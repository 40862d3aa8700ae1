"""Where two layers share fields, one defines them and a test holds the other in step.

``BudgetConfig`` (what a user writes) and ``BudgetSettings`` (what the controller reads) name the same
knobs; a ``TrialResult`` (what a worker reports) becomes a ``SpendRecord`` (what the ledger bills) in
one function. A field added to one side and forgotten on the other fails here, not in a sweep.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from rungflow.budgets.controller import BudgetSettings
from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.config import BUDGET_FROM_SCHEDULER, BUDGET_RENAMED, BudgetConfig, parse_duration
from rungflow.flows.sweep import spend_record
from rungflow.tasks.train import TrialResult

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
    "patience": 3, "top_k": 2, "stop_rule": "forecast", "noisy": True, "on_cap": "finish", "target_score": 0.9,
    "window_iterations": 2, "verdict_every": "iteration",
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


def _distinct(field: dataclasses.Field[Any], n: int) -> Any:
    """A value for ``field`` that no other field of the result shares, so a swapped field shows."""
    if field.name == "status":
        return TrialStatus.FAILED
    if field.name in ("trial_id", "error", "device", "worker"):
        return f"{field.name}-{n}"
    if field.name == "metrics":
        return {"loss": 0.125 + n}
    if field.name in ("logs", "lost_attempts"):
        return ()
    if field.name in ("bracket", "rung", "attempt"):
        return n
    return 100.0 + n


def test_a_trial_result_becomes_a_record_field_for_field() -> None:
    result = TrialResult(**{f.name: _distinct(f, i) for i, f in enumerate(dataclasses.fields(TrialResult))})
    record = spend_record(result, cpus=2.5, cost=9.75)
    shared = {f.name for f in dataclasses.fields(SpendRecord)} & {f.name for f in dataclasses.fields(TrialResult)}
    for name in shared:
        assert getattr(record, name) == getattr(result, name), name
    # The rest the ledger knows and the worker does not: how many CPUs were held, and the price.
    assert {f.name for f in dataclasses.fields(SpendRecord)} - shared == {"cost", "cpus"}
    assert (record.cpus, record.cost) == (2.5, 9.75)


def test_the_record_of_a_result_redacts_its_error() -> None:
    fields = {f.name: _distinct(f, i) for i, f in enumerate(dataclasses.fields(TrialResult))}
    fields["error"] = "OperationalError: could not connect to postgresql://alice:hunter2@db:5432/study"
    record = spend_record(TrialResult(**fields), cpus=1.0, cost=0.0)
    assert record.error is not None and "hunter2" not in record.error and "db:5432" in record.error
