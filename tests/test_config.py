"""Sweep config validation: every bad input is a one-line ConfigError naming the field and the value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.space import SearchSpace
from rungflow.config import ConfigError, SweepConfig, apply_overrides, load_config, parse_duration, validate

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

BASE: dict[str, Any] = {
    "name": "unit",
    "trainable": {"kind": "noop"},
    "space": {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        "n": {"type": "int", "low": 1, "high": 8},
        "act": {"type": "categorical", "choices": ["relu", "tanh"]},
    },
    "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
}


def with_(*overrides: str, drop_space: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    if drop_space:
        del data["space"]
    return apply_overrides(data, list(overrides))


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate(data)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_base_config_is_valid() -> None:
    config = validate(copy.deepcopy(BASE))
    assert isinstance(config, SweepConfig)
    assert config.search_space().names == ["x", "lr", "n", "act"]


# --- bad input: (overrides, field named, value shown) -------------------------------------------------

BAD_CASES = [
    pytest.param(["scheduler.min_budget=0"], "scheduler.min_budget", "0", id="min_budget-zero"),
    pytest.param(["scheduler.max_budget=-3"], "scheduler.max_budget", "-3", id="max_budget-negative"),
    pytest.param(["scheduler.max_budget=.nan"], "scheduler.max_budget", "nan", id="max_budget-nan"),
    pytest.param(["scheduler.eta=1"], "scheduler.eta", "1", id="eta-one"),
    pytest.param(["scheduler.min_budget=10", "scheduler.max_budget=3"], "scheduler.min_budget", "10",
                 id="min-above-max"),
    pytest.param(["scheduler.iterations=0"], "scheduler.iterations", "0", id="iterations-zero"),
    pytest.param(["scheduler.min_budget=5", "scheduler.max_budget=9"], "scheduler", "eta=3", id="single-rung"),
    pytest.param(["space.x.type=normal"], "space.x", "'normal'", id="space-unknown-type"),
    pytest.param(["space.x.high="], "space.x", "high=None", id="space-high-null"),
    pytest.param(["space.x.low=abc"], "space.x", "low='abc'", id="space-low-not-a-number"),
    pytest.param(["space.x.low=5", "space.x.high=1"], "space.x", "low=5", id="space-low-above-high"),
    pytest.param(["space.lr.low=0"], "space.lr", "low=0", id="space-log-nonpositive"),
    pytest.param(["space.act.choices=[]"], "space.act", "no choices", id="space-categorical-empty"),
    pytest.param(["space.act.choices="], "space.act", "None", id="space-categorical-missing"),
    pytest.param(["space.n.low=1.5"], "space.n", "1.5", id="space-int-fractional"),
    pytest.param(["space.x.step=0.1"], "space.x", "step", id="space-unknown-key"),
    pytest.param(["space.x=0.5"], "space.x", "0.5", id="space-entry-not-a-mapping"),
    pytest.param(["search.algorithm=nope"], "search.algorithm", "'nope'", id="unknown-searcher"),
    pytest.param(["search.num_trials=0"], "search.num_trials", "0", id="num_trials-zero"),
    pytest.param(["search.grid_points=0"], "search.grid_points", "0", id="grid_points-zero"),
    pytest.param(["scheduler.kind=bayes"], "scheduler.kind", "'bayes'", id="unknown-scheduler"),
    pytest.param(["trainable.kind=gbdt"], "trainable.kind", "'gbdt'", id="unknown-trainable"),
    pytest.param(["trainable.options.sleep_seconds=-1"], "trainable.options.sleep_seconds", "-1",
                 id="trainable-option-invalid"),
    pytest.param(["trainable.options.colour=red"], "trainable.options.colour", "red", id="trainable-option-unknown"),
    pytest.param(["bogus=1"], "bogus", "1", id="unknown-top-level-key"),
    pytest.param(["scheduler.etaa=3"], "scheduler.etaa", "3", id="unknown-nested-key"),
    pytest.param(["budget.price_per_gpu_hour=-1"], "budget.price_per_gpu_hour", "-1", id="negative-price"),
    pytest.param(["budget.max_gpu_hours=0"], "budget.max_gpu_hours", "0", id="zero-max_gpu_hours"),
    pytest.param(["budget.max_cost=-5"], "budget.max_cost", "-5", id="negative-max_cost"),
    pytest.param(["budget.patience=0"], "budget.patience", "0", id="patience-zero"),
    pytest.param(["budget.top_k=0"], "budget.top_k", "0", id="top_k-zero"),
    pytest.param(["budget.window_iterations=0"], "budget.window_iterations", "0", id="window_iterations-zero"),
    pytest.param(["trainable.kind=yahpo_lcbench", "trainable.options.noise_std=-1"], "trainable.options.noise_std", "-1",
                 id="negative-noise_std"),
    pytest.param(["budget.min_gain_per_gpu_hour=-0.5"], "budget.min_gain_per_gpu_hour", "-0.5", id="negative-gain"),
    pytest.param(["budget.max_gpu_hours=2", "budget.window_gpu_hours=5"], "budget.window_gpu_hours", "5",
                 id="window-larger-than-cap"),
    pytest.param(["budget.deadline=soon"], "budget.deadline", "'soon'", id="deadline-unreadable"),
    pytest.param(["budget.deadline=0"], "budget.deadline", "0", id="deadline-zero"),
    pytest.param(["budget.stop_rule=vibes"], "budget.stop_rule", "'vibes'", id="stop_rule-unknown"),
    pytest.param(["runtime.gpus_per_trial=1.5"], "runtime.gpus_per_trial", "1.5", id="gpus-fractional-above-one"),
    pytest.param(["runtime.cpus_per_trial=0"], "runtime.cpus_per_trial", "0", id="cpus-zero"),
    pytest.param(["runtime.max_concurrent=0"], "runtime.max_concurrent", "0", id="max_concurrent-zero"),
    pytest.param(["runtime.kind=k8s"], "runtime.kind", "'k8s'", id="runtime-unknown"),
    pytest.param(["metric.mode=up"], "metric.mode", "'up'", id="metric-mode-unknown"),
    pytest.param(["name=' '"], "name", "' '", id="empty-name"),
]


@pytest.mark.parametrize("overrides,field,value", BAD_CASES)
def test_bad_input_names_field_and_value(overrides: list[str], field: str, value: str) -> None:
    message = config_error(with_(*overrides))
    assert field in message, message
    assert value in message, message


def test_empty_space_names_the_field() -> None:
    data = copy.deepcopy(BASE)
    data["space"] = {}
    message = config_error(data)
    assert message.startswith("space"), message
    assert "no parameters" in message


@pytest.mark.parametrize("bound", ["low", "high"])
def test_space_missing_bound_names_the_parameter(bound: str) -> None:
    data = copy.deepcopy(BASE)
    del data["space"]["x"][bound]
    message = config_error(data)
    assert message.startswith("space.x:"), message
    assert "'low' and 'high'" in message


def test_space_that_is_not_a_mapping() -> None:
    data = copy.deepcopy(BASE)
    data["space"] = ["x", "y"]
    message = config_error(data)
    assert "space" in message and "['x', 'y']" in message


def test_missing_required_fields() -> None:
    message = config_error({"name": "x"})
    assert "trainable" in message and "required" in message
    message = config_error({"trainable": {"kind": "noop"}})
    assert "name" in message and "required" in message


# --- --set overrides ----------------------------------------------------------------------------------


def test_override_without_equals_sign() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(copy.deepcopy(BASE), ["scheduler.eta"])
    message = str(info.value)
    assert "scheduler.eta" in message and "=" in message and "\n" not in message


def test_override_under_a_scalar() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(copy.deepcopy(BASE), ["name.first=x"])
    assert "name.first" in str(info.value) and "not a section" in str(info.value)
    with pytest.raises(ConfigError) as info:
        apply_overrides(copy.deepcopy(BASE), ["scheduler.eta.value=4"])
    assert "scheduler.eta" in str(info.value)


def test_override_with_empty_key() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(copy.deepcopy(BASE), ["scheduler..eta=4"])
    assert "scheduler..eta" in str(info.value)


def test_overrides_parse_yaml_scalars() -> None:
    data = apply_overrides(
        {}, ["a.int=3", "a.float=0.5", "a.sci=1.0e-3", "a.yes=true", "a.no=false", "a.text=hello", "a.list=[1, b]",
             "a.none=", "a.eq=x=y", "b=7"]
    )
    assert data == {
        "a": {"int": 3, "float": 0.5, "sci": 1e-3, "yes": True, "no": False, "text": "hello", "list": [1, "b"],
              "none": None, "eq": "x=y"},
        "b": 7,
    }
    assert isinstance(data["a"]["int"], int) and isinstance(data["a"]["float"], float)


def test_overrides_apply_on_load(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(BASE))
    config = load_config(
        path,
        ["search.seed=7", "budget.max_gpu_hours=0.5", "scheduler.eta=4", "scheduler.max_budget=16",
         "trainable.options.sleep_seconds=0.25", "runtime.kind=thread", "search.algorithm=random"],
    )
    assert config.search.seed == 7
    assert config.budget.max_gpu_hours == 0.5
    assert config.scheduler.eta == 4.0
    assert config.budget_range() == (1.0, 16.0)
    assert config.trainable.options == {"sleep_seconds": 0.25}
    assert config.runtime.kind == "thread"
    assert config.search.algorithm == "random"


def test_bool_override_on_example(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "lcbench.yaml", ["trainable.options.noisy=true", "search.seed=3"])
    assert config.trainable.options["noisy"] is True
    assert config.search.seed == 3


# --- files -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "does not exist" in str(info.value)


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrainable: {kind: noop\nscheduler: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "not valid YAML" in message and "line" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["- name: x\n- trainable: noop\n", "just a string\n", ""])
def test_yaml_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "mapping" in str(info.value)


def test_bad_value_in_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "budget": {"patience": 0}}))
    with pytest.raises(ConfigError, match=r"budget\.patience = 0"):
        load_config(path)


# --- good input ------------------------------------------------------------------------------------


def test_digits_example_loads() -> None:
    config = load_config(EXAMPLES / "digits.yaml")
    assert config.name == "digits-mlp"
    assert config.trainable.kind == "torch_mlp"
    assert config.search.algorithm == "bohb"
    assert config.budget_range() == (1.0, 9.0)
    assert config.mode() == "max" and config.metric_name() == "val_accuracy"
    assert config.budget.settings().price_per_gpu_hour == 2.5
    assert config.runtime.gpus_per_trial == 0.25
    assert len(config.search_space()) >= 1


def test_lcbench_example_loads() -> None:
    config = load_config(EXAMPLES / "lcbench.yaml")
    assert config.name == "lcbench-3945"
    assert config.trainable.kind == "yahpo_lcbench"
    assert config.budget_range() == (2.0, 52.0)
    assert config.scheduler.iterations == 3
    assert config.budget.settings().max_gpu_hours == 8
    assert config.runtime.kind == "thread" and config.runtime.max_concurrent == 4


def test_default_space_comes_from_the_trainable() -> None:
    config = validate(with_(drop_space=True))
    assert config.space is None
    space = config.search_space()
    assert isinstance(space, SearchSpace)
    assert space.names == ["x", "y"]  # the noop trainable's default
    assert config.budget_range() == (1.0, 9.0)


def test_defaults_come_from_the_trainable() -> None:
    config = validate({"name": "n", "trainable": {"kind": "noop"}})
    assert config.budget_range() == (1.0, 27.0)
    assert config.mode() == "max" and config.metric_name() == "score"
    assert config.scheduler.kind == "hyperband" and config.search.algorithm == "bohb"


def test_deadline_durations() -> None:
    assert parse_duration(None) is None
    assert parse_duration(90) == 90.0
    assert parse_duration("90s") == 90.0
    assert parse_duration("45m") == 2700.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1.5d") == 129600.0
    config = validate(with_("budget.deadline=4h"))
    assert config.budget.settings().deadline_seconds == 14400.0


def test_budget_settings_round_trip() -> None:
    config = validate(
        with_("budget.max_gpu_hours=4", "budget.max_cost=20", "budget.min_gain_per_gpu_hour=0.01",
              "budget.window_gpu_hours=1", "budget.patience=3", "budget.top_k=2", "budget.stop_rule=forecast",
              "budget.on_cap=finish", "budget.min_gpu_hours=0.5", "budget.window_iterations=2")
    )
    s = config.budget.settings()
    assert s.window_iterations == 2 and validate(with_()).budget.settings().window_iterations == 1
    assert (s.max_gpu_hours, s.max_cost, s.min_gain_per_gpu_hour, s.window_gpu_hours) == (4, 20, 0.01, 1)
    assert (s.patience, s.top_k, s.stop_rule, s.on_cap, s.min_gpu_hours) == (3, 2, "forecast", "finish", 0.5)


# --- a validated config must build its searcher ----------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["search.algorithm=tpe", "search.random_fraction=0.3"],
        ["search.algorithm=random", "search.min_points_in_model=5"],
        ["search.algorithm=bohb", "search.random_fraction=1.5"],
    ],
)
def test_validated_search_options_build_a_searcher(overrides: list[str]) -> None:
    try:
        config = validate(with_(*overrides))
    except ConfigError:
        return  # rejected up front: that is fine too
    lo, hi = config.budget_range()
    make_searcher(  # exactly as flows/sweep.py builds it
        config.search.algorithm, config.search_space(), seed=config.search.seed, mode=config.mode(), max_budget=hi,
        grid_points=config.search.grid_points, random_fraction=config.search.random_fraction,
        min_points_in_model=config.search.min_points_in_model,
    )
