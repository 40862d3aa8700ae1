"""A Ray Tune function trainable run unchanged: Ray Tune's own examples (tests/examples/raytune, start line changed),
its param_space samplers, rung stops and get_checkpoint resumes, bad input refused with one line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from ray import tune

import rungflow
from bench.migrate import EXAMPLES, load_example, run_rungflow
from rungflow.budgets.foreign_space import materialize, tune_param_space
from rungflow.budgets.space import SearchSpace, SpaceError
from rungflow.config import ConfigError, load_config
from rungflow.tasks.trainables import TrainableError, TrainRequest, get_trainable_class
from rungflow.tasks.trainables.function import register_callable

RAY_EXAMPLES = {e.name: e for e in EXAMPLES if e.library == "raytune"}


def _trainable(fn, **options):
    return get_trainable_class("raytune_function")({"callable": register_callable(fn, check=False), **options})


def test_param_space_samplers_become_rungflow_parameters_and_constants_stay_in_place() -> None:
    converted = tune_param_space({
        "lr": tune.loguniform(1e-4, 1e-1), "depth": tune.randint(1, 9), "leaves": tune.lograndint(2, 64),
        "batch": tune.qrandint(16, 128, 16), "drop": tune.quniform(0.0, 0.5, 0.1), "act": tune.choice(["relu", "tanh"]),
        "opt": tune.grid_search(["adam", "sgd"]), "model": {"width": tune.uniform(10, 100), "layers": 3}, "tag": "x",
    })
    space = SearchSpace.from_dict(converted.space)
    assert converted.space["depth"] == {"type": "int", "low": 1, "high": 8, "log": False}  # Ray's upper bound is exclusive
    assert converted.space["batch"]["choices"] == [16, 32, 48, 64, 80, 96, 112, 128]  # quantized: inclusive, exact values
    assert converted.space["drop"]["choices"][-1] == 0.5 and converted.grid == ("opt",)
    assert converted.space["lr"]["log"] and converted.space["leaves"] == {"type": "int", "low": 2, "high": 63, "log": True}
    assert "model/width" in space.names and "tag" not in space.names
    config = materialize({"model/width": 42.0, "lr": 0.01}, converted.layout)
    assert config["model"] == {"width": 42.0, "layers": 3} and config["tag"] == "x" and config["lr"] == 0.01


def test_bad_param_spaces_are_one_line_naming_the_key_and_the_fix() -> None:
    with pytest.raises(SpaceError, match=r"param_space.lr: grid_search lists a sampler .* either tune.grid_search\(\[fixed"):
        tune_param_space({"lr": tune.grid_search([tune.uniform(0, 1), 0.1])})
    with pytest.raises(SpaceError, match=r"param_space.x: tune.sample_from.* use one of tune.uniform"):
        tune_param_space({"x": tune.sample_from(lambda spec: 1)})
    with pytest.raises(SpaceError, match=r"param_space.x: Ray Tune's normal sampler"):
        tune_param_space({"x": tune.randn(0, 1)})
    with pytest.raises(ConfigError, match="metric: name the key your function passes to tune.report"):
        rungflow.sweep(lambda config: None, space={"x": tune.uniform(0, 1)})


def test_a_rung_stops_at_its_budget_and_a_promotion_resumes_from_get_checkpoint() -> None:
    train_func = load_example(RAY_EXAMPLES["hyperband_function"])
    trainable = _trainable(train_func, metric="episode_reward_mean", layout=tune_param_space({"height": tune.uniform(0, 100)}).layout)
    first = trainable.train(TrainRequest("t", {"height": 50.0}, 4))
    assert (first.budget_reached, first.budget_trained) == (4.0, 4.0) and first.metrics["training_iteration"] == 4
    # The example checkpoints every 3rd step (timestep 3 = iteration 4), so it resumes at timestep 4: 5 more to 9.
    again = trainable.train(TrainRequest("t", {"height": 50.0}, 9, checkpoint=first.checkpoint))
    assert (again.budget_reached, again.budget_trained) == (9.0, 5.0)
    assert again.score == pytest.approx(50 * __import__("numpy").tanh(8.0))


def test_a_function_that_never_asks_for_its_checkpoint_starts_over_and_runs_the_whole_rung() -> None:
    def never_asks(config):  # as Ray Tune's XGBoost example: it checkpoints, but never reads get_checkpoint()
        for step in range(1, 100):
            with __import__("tempfile").TemporaryDirectory() as folder:
                Path(folder, "step").write_text(str(step))
                tune.report({"score": float(step)}, checkpoint=tune.Checkpoint.from_directory(folder))

    trainable = _trainable(never_asks, metric="score")
    first = trainable.train(TrainRequest("t", {}, 4))
    again = trainable.train(TrainRequest("t", {}, 9, checkpoint=first.checkpoint))
    # Nine steps of its own from step 1, all billed; not five counted on from 4.
    assert (again.score, again.budget_reached, again.budget_trained) == (9.0, 9.0, 9.0)


def test_bad_functions_fail_their_trial_with_one_line_naming_the_fix() -> None:
    def silent(config):
        return None

    def wrong_metric(config):
        tune.report({"loss": 1.0})

    def unsupported(config):
        tune.get_context().get_trial_resources()

    def swallows(config):
        try:
            tune.report({"loss": 1.0})
        except Exception:  # a broad except in user code must not hide the problem
            pass
        tune.report({"score": 2.0})

    with pytest.raises(TrainableError, match=r"returned without calling ray.tune.report; call tune.report\(\{'score'"):
        _trainable(silent, metric="score").train(TrainRequest("t", {}, 3))
    with pytest.raises(TrainableError, match=r"ray.tune.report\(\['loss'\]\) has no 'score'.*metric= one of \['loss'\]"):
        _trainable(wrong_metric, metric="score").train(TrainRequest("t", {}, 3))
    with pytest.raises(TrainableError, match=r"'trial_resources', which rungflow does not provide; use only ray.tune.report"):
        _trainable(unsupported, metric="score").train(TrainRequest("t", {}, 3))
    with pytest.raises(TrainableError, match="has no 'score'"):
        _trainable(swallows, metric="score").train(TrainRequest("t", {}, 3))
    with pytest.raises(TrainableError, match="has no 'epoch', which counts the budget"):
        _trainable(lambda config: tune.report({"score": 1.0}), metric="score", budget_metric="epoch").train(TrainRequest("t", {}, 3))


def test_a_named_metric_counts_the_budget() -> None:
    def by_epoch(config):
        for epoch in range(0, 100, 2):  # two epochs per report
            tune.report({"score": float(epoch), "epoch": epoch})

    outcome = _trainable(by_epoch, metric="score", budget_metric="epoch").train(TrainRequest("t", {}, 6))
    assert outcome.budget_reached == 6 and outcome.budget_trained == 4 and outcome.metrics["epoch"] == 6


# --- each vendored example, unchanged but for its start line, on real Prefect (threads) ---------------------
SMALL = {"tune_basic": 3, "async_hyperband": 3, "hyperband_function": 9, "custom_func_checkpointing": 3,
         "pbt_function": 10, "xgboost": 3, "lightgbm": 3}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_ray_tune_examples_run_under_rungflow(name: str, prefect_server: str, tmp_path: Path) -> None:
    example = RAY_EXAMPLES[name]
    run = run_rungflow(example, seed=0, trials=3, out=tmp_path / "run", budget=SMALL[name],
                       runtime={"kind": "thread", "max_concurrent": 2})
    result = run["result"]
    completed = [e for e in result.events if e["status"] == "completed"]
    assert completed and run["best"] is not None, result.events
    assert all(e["budget_trained"] <= e["budget"] for e in completed)
    assert any("training_iteration" in (e.get("metrics") or {}) for e in completed)  # the other metrics are kept
    if name in ("hyperband_function", "pbt_function"):  # these two resume from get_checkpoint when promoted
        assert any(e["rung"] > 0 and e["budget_trained"] < e["budget"] for e in completed), completed


def test_a_yaml_function_entrypoint_with_one_parameter_is_a_ray_tune_function(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        from ray import tune

        def train(config):
            for i in range(10):
                tune.report({"acc": config["x"] * i})
    """))
    (tmp_path / "sweep.yaml").write_text(textwrap.dedent("""
        name: yaml-tune
        trainable: {function: "train.py:train"}
        metric: {name: acc, mode: max}
        space: {x: {type: float, low: 0, high: 1}}
        scheduler: {kind: fifo, min_budget: 2, max_budget: 2}
    """))
    config = load_config(tmp_path / "sweep.yaml")
    assert config.trainable.kind == "raytune_function" and config.trainable.options["metric"] == "acc"
    outcome = config.trainable_class()(config.trainable.options).train(TrainRequest("t", {"x": 0.5}, 2))
    assert outcome.score == 0.5


@pytest.mark.slow
def test_on_the_ray_runtime_each_worker_answers_tune_report(prefect_server: str, tmp_path: Path, ray_shutdown: None) -> None:
    run = run_rungflow(RAY_EXAMPLES["hyperband_function"], seed=1, trials=3, out=tmp_path / "run", budget=9,
                       runtime={"kind": "ray", "max_concurrent": 2})
    completed = [e for e in run["result"].events if e["status"] == "completed"]
    assert completed and any(e["rung"] > 0 and e["budget_trained"] < e["budget"] for e in completed)
    assert run["result"].best_checkpoint is not None  # the winner's ray.tune.Checkpoint, read back from the store
