"""The bundled trainables: torch_mlp (real training), yahpo_lcbench (surrogate) and noop (instant)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from rungflow.tasks.trainables import TrainableError, TrainRequest, get_trainable_class, known_kinds


def test_registry_knows_the_bundled_kinds() -> None:
    assert {"torch_mlp", "yahpo_lcbench", "noop"} <= set(known_kinds())
    for kind in ("torch_mlp", "yahpo_lcbench", "noop"):
        assert get_trainable_class(kind).kind == kind


# --- torch_mlp ---------------------------------------------------------------------------------

MLP_CONFIG = {"lr": 3e-3, "hidden_units": 64, "num_layers": 2, "dropout": 0.1, "batch_size": 32, "weight_decay": 1e-4}


@pytest.fixture(scope="module")
def mlp():
    return get_trainable_class("torch_mlp")({"dataset": "digits"})


def test_torch_mlp_learns_digits_in_two_epochs(mlp) -> None:
    out = mlp.train(TrainRequest("t0", MLP_CONFIG, 2))
    assert out.score > 0.5
    assert out.budget_reached == 2 and out.budget_trained == 2
    assert out.metrics["epochs_trained_total"] == 2 and math.isfinite(out.metrics["train_loss"])
    assert out.gpu_seconds is None


def test_torch_mlp_resume_matches_training_from_scratch(mlp) -> None:
    first = mlp.train(TrainRequest("t1", MLP_CONFIG, 2, seed=7))
    resumed = mlp.train(TrainRequest("t1", MLP_CONFIG, 4, checkpoint=first.checkpoint, seed=7))
    scratch = mlp.train(TrainRequest("t1", MLP_CONFIG, 4, seed=7))
    assert resumed.budget_trained == 2 and resumed.budget_reached == 4
    assert resumed.score == scratch.score
    assert resumed.metrics["train_loss"] == scratch.metrics["train_loss"]


def test_torch_mlp_is_deterministic_per_seed_and_trial(mlp) -> None:
    a = mlp.train(TrainRequest("t2", MLP_CONFIG, 1, seed=3))
    b = mlp.train(TrainRequest("t2", MLP_CONFIG, 1, seed=3))
    assert (a.score, a.metrics["train_loss"]) == (b.score, b.metrics["train_loss"])


def test_torch_mlp_checkpoint_loads_weights_only(mlp) -> None:
    import torch

    out = mlp.train(TrainRequest("t3", MLP_CONFIG, 1))
    state = torch.load(io.BytesIO(out.checkpoint), weights_only=True, map_location="cpu")
    assert state["epoch"] == 1 and "model" in state and "optimizer" in state


def test_torch_mlp_checkpoint_at_budget_trains_nothing(mlp) -> None:
    done = mlp.train(TrainRequest("t4", MLP_CONFIG, 2))
    again = mlp.train(TrainRequest("t4", MLP_CONFIG, 1, checkpoint=done.checkpoint))
    assert again.budget_trained == 0 and again.budget_reached == 2 and again.score == done.score


def test_torch_mlp_default_space_configs_train(mlp) -> None:
    space = mlp.default_space()
    assert set(space.names) == {"lr", "hidden_units", "num_layers", "dropout", "batch_size", "weight_decay"}
    config = space.sample(np.random.default_rng(0))
    out = mlp.train(TrainRequest("t5", config, 1))
    assert 0.0 <= out.score <= 1.0 or math.isnan(out.score)


def test_torch_mlp_bad_dataset_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="dataset"):
        get_trainable_class("torch_mlp")({"dataset": "nope"})


def test_torch_mlp_rejects_unknown_option() -> None:
    with pytest.raises(ValidationError, match="epochs"):
        get_trainable_class("torch_mlp")({"epochs": 3})


def test_torch_mlp_foreign_checkpoint_is_a_clear_error(mlp) -> None:
    with pytest.raises(TrainableError, match="resume"):
        mlp.train(TrainRequest("t6", MLP_CONFIG, 2, checkpoint=b"not a checkpoint"))


# --- yahpo_lcbench -------------------------------------------------------------------------------

LC_CONFIG = {
    "batch_size": 91,
    "learning_rate": 0.0031622777,
    "max_dropout": 0.5,
    "max_units": 256,
    "momentum": 0.545,
    "num_layers": 3,
    "weight_decay": 0.050005,
}


@pytest.fixture(scope="module")
def lcbench(yahpo_data):
    return get_trainable_class("yahpo_lcbench")({"instance": "3945"})


def test_lcbench_scores_and_bills_surrogate_time(lcbench) -> None:
    one = lcbench.train(TrainRequest("y0", LC_CONFIG, 1))
    full = lcbench.train(TrainRequest("y0", LC_CONFIG, 52))
    for out in (one, full):
        assert 0.0 < out.score <= 100.0
        assert out.gpu_seconds is not None and out.gpu_seconds > 0
        assert out.metrics["val_accuracy"] == out.score and "val_cross_entropy" in out.metrics
    assert (one.budget_reached, full.budget_reached) == (1, 52)
    assert full.gpu_seconds > one.gpu_seconds


# Answers of yahpo-gym 1.0.2's BenchmarkSet.objective_function (numpy 1.26, onnxruntime 1.32) for
# random configurations: the direct ONNX reader must give exactly these (600 such queries matched to the bit).
YAHPO_GYM_ANSWERS = [
    ("3945", {"batch_size": 299, "learning_rate": 0.018787249753397045, "momentum": 0.47430870693945204,
              "weight_decay": 0.025899085861793406, "num_layers": 5, "max_units": 561, "max_dropout": 0.4049341374504143,
              "epoch": 51}, {"val_accuracy": 95.88215637207031, "time": 315.34991455078125}),
    ("168910", {"batch_size": 24, "learning_rate": 0.011631339428521683, "momentum": 0.6467315545684633,
                "weight_decay": 0.037591713831922766, "num_layers": 1, "max_units": 74, "max_dropout": 0.11539851048895433,
                "epoch": 24}, {"val_accuracy": 60.87240219116211, "time": 98.21410369873047}),
    ("168910", {"batch_size": 272, "learning_rate": 0.002767671199013482, "momentum": 0.19624384784413418,
                "weight_decay": 0.0452683292808068, "num_layers": 5, "max_units": 777, "max_dropout": 0.25388347854124227,
                "epoch": 32}, {"val_accuracy": 23.454082489013672, "time": 600.7449951171875}),
    ("189906", {"batch_size": 51, "learning_rate": 0.0024205647244814033, "momentum": 0.1532680035461375,
                "weight_decay": 0.06508678805212754, "num_layers": 3, "max_units": 289, "max_dropout": 0.9300296003610368,
                "epoch": 30}, {"val_accuracy": 47.51347732543945, "time": 73.39949798583984}),
]


@pytest.mark.parametrize(("instance", "config", "expected"), YAHPO_GYM_ANSWERS)
def test_lcbench_surrogate_answers_exactly_as_yahpo_gym(lcbench, instance, config, expected) -> None:
    from rungflow.tasks.trainables.lcbench_surrogate import LCBenchSurrogate
    from rungflow.tasks.trainables.yahpo_lcbench import resolve_data_path

    answer = LCBenchSurrogate(resolve_data_path(None) / "lcbench", instance).query(config)
    assert {k: answer[k] for k in expected} == expected


def test_lcbench_resume_bills_only_the_missing_epochs(lcbench) -> None:
    at10 = lcbench.train(TrainRequest("y1", LC_CONFIG, 10))
    resumed = lcbench.train(TrainRequest("y1", LC_CONFIG, 52, checkpoint=at10.checkpoint))
    scratch = lcbench.train(TrainRequest("y1", LC_CONFIG, 52))
    assert resumed.budget_trained == 42 and resumed.budget_reached == 52
    assert resumed.gpu_seconds == pytest.approx(scratch.gpu_seconds - at10.gpu_seconds)
    assert resumed.score == scratch.score
    assert json.loads(resumed.checkpoint)["epoch"] == 52
    assert lcbench.estimate_gpu_seconds(LC_CONFIG, 10, 52) == pytest.approx(resumed.gpu_seconds)


def test_lcbench_same_config_same_result(lcbench) -> None:
    a = lcbench.train(TrainRequest("y2", LC_CONFIG, 20))
    b = lcbench.train(TrainRequest("y2", LC_CONFIG, 20))
    assert (a.score, a.gpu_seconds) == (b.score, b.gpu_seconds)


def test_lcbench_clamps_budget_and_takes_space_bounds(lcbench) -> None:
    # 1e-4 is where a user would put the bound; yahpo's stored bound sits a hair above it.
    config = {**LC_CONFIG, "learning_rate": 1e-4, "batch_size": 16.0}
    out = lcbench.train(TrainRequest("y3", config, 80))
    assert out.budget_reached == 52 and math.isfinite(out.score)
    space = lcbench.default_space()
    assert space.names == ["batch_size", "learning_rate", "max_dropout", "max_units", "momentum", "num_layers", "weight_decay"]
    assert math.isfinite(lcbench.train(TrainRequest("y4", space.sample(np.random.default_rng(1)), 3)).score)


def test_lcbench_missing_parameter_is_a_clear_error(lcbench) -> None:
    config = {k: v for k, v in LC_CONFIG.items() if k != "momentum"}
    with pytest.raises(TrainableError, match="momentum"):
        lcbench.train(TrainRequest("y5", config, 5))


def test_lcbench_noisy_without_noisy_model_is_a_clear_error(lcbench) -> None:
    noisy = get_trainable_class("yahpo_lcbench")({"noisy": True})
    with pytest.raises(TrainableError, match="noisy"):
        noisy.train(TrainRequest("y6", LC_CONFIG, 5))


def test_lcbench_synthetic_noise_is_seeded_gaussian_around_the_clean_score(lcbench) -> None:
    noisy = get_trainable_class("yahpo_lcbench")({"noise_std": 0.5})
    clean = lcbench.train(TrainRequest("y9", LC_CONFIG, 20, seed=1)).score
    out = noisy.train(TrainRequest("y9", LC_CONFIG, 20, seed=1))
    assert out.metrics["val_accuracy_clean"] == clean and out.metrics["val_accuracy"] == out.score != clean
    # Deterministic per (seed, trial, epoch): a rerun and a resumed trial see the same draw.
    assert noisy.train(TrainRequest("y9", LC_CONFIG, 20, seed=1)).score == out.score
    at5 = noisy.train(TrainRequest("y9", LC_CONFIG, 5, seed=1))
    assert noisy.train(TrainRequest("y9", LC_CONFIG, 20, seed=1, checkpoint=at5.checkpoint)).score == out.score
    # std 0.5 at 50 %, 0.5·2√(p(1 − p)) at p: a binomial error's shape.
    sigma = 0.5 * 2 * math.sqrt(clean / 100 * (1 - clean / 100))
    draws = np.array([noisy.train(TrainRequest(f"n{i}", LC_CONFIG, 20, seed=1)).score for i in range(300)]) - clean
    assert abs(draws.mean()) < 0.25 * sigma and 0.8 * sigma < draws.std() < 1.2 * sigma


def test_synthetic_noise_shrinks_toward_certain_accuracies() -> None:
    from rungflow.tasks.trainables.yahpo_lcbench import synthetic_noise

    spread = lambda acc: np.std([synthetic_noise(acc, 0.7, seed) - acc for seed in range(2000)])  # noqa: E731
    assert spread(50.0) == pytest.approx(0.7, rel=0.1)
    assert spread(85.0) == pytest.approx(0.5, rel=0.1)  # the bench's setting: 0.5 points at 85 %
    assert spread(99.6) == pytest.approx(0.088, rel=0.1)
    assert synthetic_noise(100.0, 0.7, 1) == 100.0 and 0.0 <= synthetic_noise(0.01, 5.0, 3) <= 100.0


def test_lcbench_noise_options_are_checked() -> None:
    cls = get_trainable_class("yahpo_lcbench")
    with pytest.raises(ValidationError, match="zero or more"):
        cls({"noise_std": -0.1})
    with pytest.raises(ValidationError, match="either noisy .* or noise_std"):
        cls({"noisy": True, "noise_std": 0.5})


def test_lcbench_unknown_instance_lists_valid_ones() -> None:
    with pytest.raises(ValidationError, match="unknown LCBench instance '42'.*3945"):
        get_trainable_class("yahpo_lcbench")({"instance": "42"})
    assert get_trainable_class("yahpo_lcbench")({"instance": 7593}).options.instance == "7593"


def test_lcbench_missing_data_names_the_fixes(tmp_path, monkeypatch) -> None:
    cls = get_trainable_class("yahpo_lcbench")
    with pytest.raises(TrainableError, match="trainable.options.data_path"):
        cls({"data_path": str(tmp_path)}).train(TrainRequest("y7", LC_CONFIG, 1))
    monkeypatch.setenv("RUNGFLOW_YAHPO_DATA", str(tmp_path))
    with pytest.raises(TrainableError, match="RUNGFLOW_YAHPO_DATA"):
        cls({}).train(TrainRequest("y8", LC_CONFIG, 1))


# --- noop ----------------------------------------------------------------------------------------


def test_noop_score_rises_with_budget_and_peaks_at_optimum() -> None:
    noop = get_trainable_class("noop")({})
    scores = [noop.train(TrainRequest("n0", {"x": 0.5, "y": 0.5}, b)).score for b in (1, 3, 9, 27)]
    assert scores == sorted(scores) and len(set(scores)) == 4
    best = noop.train(TrainRequest("n1", {"x": 0.3, "y": 0.7}, 27)).score
    assert best > scores[-1]


def test_noop_resume_counts_budget_trained() -> None:
    noop = get_trainable_class("noop")({})
    first = noop.train(TrainRequest("n2", {"x": 0.1, "y": 0.2}, 3))
    second = noop.train(TrainRequest("n2", {"x": 0.1, "y": 0.2}, 9, checkpoint=first.checkpoint))
    assert (second.budget_reached, second.budget_trained, second.gpu_seconds) == (9, 6, None)


def test_noop_fail_and_nan_options() -> None:
    cls = get_trainable_class("noop")
    failing = cls({"fail_when_x_above": 0.5})
    with pytest.raises(RuntimeError, match="x above"):
        failing.train(TrainRequest("n3", {"x": 0.9, "y": 0.5}, 1))
    assert math.isfinite(failing.train(TrainRequest("n4", {"x": 0.4, "y": 0.5}, 1)).score)
    assert math.isnan(cls({"nan_when_x_above": 0.5}).train(TrainRequest("n5", {"x": 0.9, "y": 0.5}, 1)).score)
    with pytest.raises(ValidationError, match="sleep_seconds"):
        cls({"sleep_seconds": -1})
