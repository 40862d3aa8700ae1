"""Population-based training and median stopping in the sweep config: options, defaults, one-line errors."""

from __future__ import annotations

from typing import Any

import pytest

from rungflow.budgets.median import MedianStoppingScheduler
from rungflow.budgets.pbt import PBTScheduler
from rungflow.budgets.schedulers import make_scheduler
from rungflow.config import ConfigError, validate


def torch_pbt(**scheduler: Any) -> dict[str, Any]:
    return {"name": "pbt", "trainable": {"kind": "torch_mlp", "options": {"dataset": "iris"}},
            "scheduler": {"kind": "pbt", "max_budget": 8, "population": 4, "perturbation_interval": 2, **scheduler}}


def build(data: dict[str, Any]) -> Any:
    config = validate(data)
    lo, hi = config.budget_range()
    return make_scheduler(config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                          integer=True, iterations=1, num_trials=config.search.num_trials, mode=config.mode(),
                          **config.scheduler_options())


def test_pbt_defaults_mutate_what_torch_mlp_declares_mutable() -> None:
    scheduler = build(torch_pbt())
    assert isinstance(scheduler, PBTScheduler)
    # Floats and ints of the space that may change on resume: not the layer sizes, not the batch size.
    assert scheduler.mutations == ("lr", "dropout", "weight_decay")
    assert scheduler.budgets == [2.0, 4.0, 6.0, 8.0] and scheduler.population == 4
    assert scheduler.quantile_fraction == 0.25 and scheduler.resample_probability == 0.25 and scheduler.burn_in == 0


def test_pbt_population_defaults_to_num_trials() -> None:
    data = torch_pbt()
    del data["scheduler"]["population"]
    data["search"] = {"num_trials": 6}
    assert build(data).population == 6


def test_the_plan_counts_the_clones_as_trials() -> None:
    from rungflow.flows.cli import plan_rows

    rows, units, _ = plan_rows(validate(torch_pbt(population=8)))
    # Three gates, each replacing the bottom quarter (2 of 8); a clone resumes, so it adds no epochs.
    assert [r["new_trials"] for r in rows] == [8, 2, 2, 2] and units == 8 * 8
    rows, _, _ = plan_rows(validate(torch_pbt(population=8, burn_in=6)))
    assert [r["new_trials"] for r in rows] == [8, 0, 0, 2]


def test_median_options() -> None:
    scheduler = build({"name": "m", "trainable": {"kind": "noop"},
                       "scheduler": {"kind": "median", "min_budget": 1, "max_budget": 9, "grace_budget": 3,
                                     "min_samples": 5}})
    assert isinstance(scheduler, MedianStoppingScheduler)
    assert (scheduler.grace_budget, scheduler.min_samples, scheduler.budgets) == (3, 5, [1.0, 3.0, 9.0])


@pytest.mark.parametrize("data, field, fix", [
    (torch_pbt(population=1), "scheduler.population", "at least 2"),
    (torch_pbt(quantile_fraction=0.6), "scheduler.quantile_fraction", "at most 0.5"),
    (torch_pbt(perturbation_interval=0), "scheduler.perturbation_interval", "positive"),
    (torch_pbt(perturbation_interval=9), "scheduler.perturbation_interval", "lower it or raise max_budget"),
    (torch_pbt(perturbation_interval=1.5), "scheduler.perturbation_interval", "whole number"),
    (torch_pbt(resample_probability=2), "scheduler.resample_probability", "[0, 1]"),
    (torch_pbt(mutations=["momentum"]), "scheduler.mutations", "'momentum' is not a parameter of the space"),
    (torch_pbt(mutations=["hidden_units"]), "scheduler.mutations", "'hidden_units' is structural"),
    (torch_pbt(mutations=[]), "scheduler.mutations", "empty"),
    (torch_pbt(burn_in=8), "scheduler.burn_in", "lower it"),
    ({**torch_pbt(), "trainable": {"kind": "hgb", "options": {"data": {"source": "sklearn:iris"}}}},
     "scheduler.kind", "cannot resume"),
    ({"name": "h", "trainable": {"kind": "noop"}, "scheduler": {"kind": "hyperband", "population": 8}},
     "scheduler.population", "only scheduler.kind: pbt reads it"),
    ({"name": "m", "trainable": {"kind": "noop"}, "scheduler": {"kind": "median", "min_samples": 0}},
     "scheduler.min_samples", "at least 1"),
    ({"name": "m", "trainable": {"kind": "noop"}, "scheduler": {"kind": "median", "max_budget": 9, "grace_budget": 10}},
     "scheduler.grace_budget", "lower it"),
    ({"name": "m", "trainable": {"kind": "noop"}, "scheduler": {"kind": "asha", "grace_budget": 1}},
     "scheduler.grace_budget", "only scheduler.kind: median reads it"),
])
def test_bad_input_is_one_line_naming_the_field(data: dict[str, Any], field: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(data)
    message = str(info.value)
    assert "\n" not in message and field in message and fix in message, message


def test_a_trainable_without_mutable_parameters_is_named() -> None:
    data = {"name": "lc", "trainable": {"kind": "yahpo_lcbench", "options": {"instance": "3945"}},
            "scheduler": {"kind": "pbt", "population": 4, "perturbation_interval": 4}}
    with pytest.raises(ConfigError, match="scheduler.mutations: trainable 'yahpo_lcbench' declares no float or int"):
        validate(data)
