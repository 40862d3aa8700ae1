"""An Optuna objective run unchanged: Optuna's own examples (tests/examples/optuna, start line changed), the space
the objective defines (conditional branches too), rung stops through should_prune, bad input refused with one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import rungflow
from bench.migrate import EXAMPLES, run_rungflow
from rungflow.budgets.ledger import Ledger
from rungflow.config import ConfigError
from rungflow.tasks.trainables import TrainableError, TrainRequest, get_trainable_class
from rungflow.tasks.trainables.function import register_callable
from rungflow.tasks.trainables.optuna_objective import probe_objective

OPTUNA_EXAMPLES = {e.name: e for e in EXAMPLES if e.library == "optuna"}


def _trainable(fn, mode: str = "max"):
    return get_trainable_class("optuna_objective")({"callable": register_callable(fn, check=False), "mode": mode})


def conditional(trial):
    family = trial.suggest_categorical("family", ["svm", "tree"])
    if family == "svm":
        c = trial.suggest_float("c", 1e-3, 1e3, log=True)
        kernel = trial.suggest_categorical("kernel", ["rbf", "poly"])
        if kernel == "poly":
            trial.suggest_int("degree", 2, 5)
        return -abs(c - 1.0)
    depth = trial.suggest_int("depth", 2, 8, step=2)
    return float(depth)


def stepwise(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    value = 0.0
    for step in range(20):
        value = x * (step + 1)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value + 100.0  # the full run's own final metric


def test_the_space_is_the_one_the_objective_defines_conditional_branches_included() -> None:
    space, reports = probe_objective(conditional)
    assert not reports
    assert space["c"]["when"] == {"family": ["svm"]} and space["kernel"]["when"] == {"family": ["svm"]}
    assert space["degree"]["when"] == {"family": ["svm"], "kernel": ["poly"]}
    assert space["depth"] == {"type": "categorical", "choices": [2, 4, 6, 8], "when": {"family": ["tree"]}}
    assert probe_objective(stepwise) == ({"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}, True)


def test_a_rung_ends_where_should_prune_says_so_and_a_promotion_runs_again_from_step_zero() -> None:
    trainable = _trainable(stepwise)
    rung = trainable.train(TrainRequest("t", {"x": 0.5}, 4))
    assert rung.score == pytest.approx(0.5 * 4) and (rung.budget_reached, rung.budget_trained) == (4.0, 4.0)
    promoted = trainable.train(TrainRequest("t", {"x": 0.5}, 12, checkpoint=rung.checkpoint))
    assert promoted.budget_trained == 12.0  # no checkpoint: the 4 steps already paid for run (and are billed) again
    full = get_trainable_class("optuna_objective")({**trainable.options.model_dump(), "full_budget": 20}).train(
        TrainRequest("t", {"x": 0.5}, 20))
    assert full.score == pytest.approx(0.5 * 20 + 100.0)  # it returned: the objective's own value


def test_bad_objectives_are_one_line_naming_the_problem_and_the_fix() -> None:
    def twice(trial):
        trial.suggest_float("x", 0, 1)
        if trial.suggest_categorical("flip", [True, False]):
            return 1.0
        return trial.suggest_int("x", 0, 10)

    def text(trial):
        trial.suggest_float("x", 0, 1)
        return "good"

    def impatient(trial):
        trial.suggest_float("x", 0, 1)
        if trial.should_prune():
            raise optuna.TrialPruned()
        return 1.0

    def nosy(trial):
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, 0)
        return trial.study.best_value

    with pytest.raises(TrainableError, match=r"suggests 'x' as float \[0.0, 1.0\] and as int \[0, 10\]; give each distribution"):
        probe_objective(twice)
    with pytest.raises(TrainableError, match=r"returned str 'good'; return one number"):
        probe_objective(text)
    with pytest.raises(TrainableError, match=r"should_prune\(\) was called before any trial.report\(value, step\)"):
        probe_objective(impatient)
    with pytest.raises(ConfigError, match=r"should_prune\(\) was called before any trial.report"):
        rungflow.sweep(impatient, metric="value", mode="max")  # refused before anything is spent
    with pytest.raises(TrainableError, match=r"trial.study.best_value|trial.best_value|rungflow does not provide"):
        _trainable(nosy).train(TrainRequest("t", {"x": 0.5}, 3))


def test_the_probe_runs_are_billed_once_and_their_results_are_the_first_trials(prefect_server: str,
                                                                               tmp_path: Path) -> None:
    calls = []

    def slow_branches(trial):  # never reports, so each probe runs it whole: once per branch
        kind = trial.suggest_categorical("kind", ["a", "b"])
        x = trial.suggest_float("x", 0.0, 1.0)
        calls.append((kind, x))
        time.sleep(0.15)
        return x if kind == "a" else 1.0 - x

    out = tmp_path / "run"
    result = rungflow.sweep(slow_branches, metric="value", mode="max", search={"num_trials": 3, "seed": 0},
                            runtime={"kind": "thread", "max_concurrent": 2, "cpus_per_trial": 2}, out=out)
    assert calls[:2] == [("a", 0.5), ("b", 0.5)]  # the probe: one run per branch of "kind", each to its return
    assert len(calls) == 3  # the two probe runs are the first two trials; only the third runs the objective
    from_probe = [e for e in result.events if e["metrics"].get("from_space_probe")]
    assert len(from_probe) == 2 and [e["score"] for e in from_probe] == [0.5, 0.5]  # x = 0.5 on either branch
    (setup,) = result.ledger["setup"]
    assert setup["kind"] == "space_probe" and setup["runs"] == 2 and setup["wall_seconds"] >= 0.3
    assert setup["cpu_hours"] == pytest.approx(setup["wall_seconds"] * 2 / 3600)  # at a trial's share: 2 CPUs
    trials_cpu_hours = sum(e["cpu_hours"] for e in result.events)
    assert result.ledger["cpu_hours"] == pytest.approx(trials_cpu_hours + setup["cpu_hours"])
    # Their seconds were billed in the setup: their records hold only the trial's own overhead, no objective run.
    assert all(e["trainable_seconds"] < 0.1 for e in from_probe), from_probe
    assert [e["trainable_seconds"] >= 0.15 for e in result.events].count(True) == 1
    assert result.ledger["trials_started"] == 3  # the setup is spend, not a trial

    # Read back (a resume), nothing is billed twice; run again in this process, the space is reused and costs nothing.
    again = rungflow.sweep(slow_branches, metric="value", mode="max", search={"num_trials": 3, "seed": 0},
                           runtime={"kind": "thread", "max_concurrent": 2, "cpus_per_trial": 2}, out=out)
    assert again.ledger["setup"] == result.ledger["setup"] and len(Ledger(out / "ledger.jsonl").setup) == 1
    assert len(calls) == 3  # the resumed sweep replayed its trials, probed nothing
    assert again.raw["trials"] == result.raw["trials"]  # the same proposals, the probe's configurations first


def test_a_first_report_in_the_probe_is_a_first_rung_of_one_step() -> None:
    def stepwise_branches(trial):
        kind = trial.suggest_categorical("kind", ["a", "b"])
        for step in range(3):
            trial.report(step + (kind == "a"), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 10.0

    trainable = _trainable(stepwise_branches)
    trainable.probe()
    assert trainable.first_configs(first_budget=1) == [{"kind": "a"}, {"kind": "b"}]
    assert trainable.first_configs(first_budget=3) == []  # a first rung of 3 steps: the searcher's draws come first
    # A later rung (more steps) runs the objective; the first rung of one step is the probe's first report, once.
    assert trainable.train(TrainRequest("t0", {"kind": "a"}, 2)).metrics["reported_steps"] == 2
    reused = trainable.train(TrainRequest("t1", {"kind": "a"}, 1))
    assert (reused.score, reused.budget_reached, reused.metrics.get("from_space_probe")) == (1.0, 1.0, 1.0)
    assert "from_space_probe" not in trainable.train(TrainRequest("t2", {"kind": "a"}, 1)).metrics


PLAN_OBJECTIVE = """
import pathlib, time

def objective(trial):
    kind = trial.suggest_categorical("kind", ["a", "b"])
    x = trial.suggest_float("x", 0.0, 1.0)
    with open(pathlib.Path(__file__).with_name("runs.txt"), "a") as runs:
        runs.write(kind + "\\n")
    time.sleep(0.15)
    return x if kind == "a" else 1.0 - x
"""


def test_plan_shows_the_probe_runs_and_counts_them_in_the_predicted_spend(tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text(PLAN_OBJECTIVE)
    config = tmp_path / "sweep.yaml"
    config.write_text("name: plan-probe\ntrainable: {function: objective.py:objective}\nmetric: {name: value, mode: max}\n"
                      "search: {num_trials: 4}\nruntime: {kind: thread, cpus_per_trial: 2}\n")
    run = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "plan", str(config)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "runs.txt").read_text().split() == ["a", "b"]  # one probe per branch, and only one probe
    probe = re.search(r"the space probe runs the objective 2 times: ([0-9.]+) s here, billed as setup spend at a "
                      r"trial's share \(0 GPUs, 2 CPUs\): 0 GPU-hours, ([0-9.e-]+) CPU-hours", run.stdout)
    assert probe is not None, run.stdout
    seconds, cpu_hours = float(probe[1]), float(probe[2])
    assert 0.3 <= seconds < 5 and cpu_hours == pytest.approx(seconds * 2 / 3600, abs=0.006 * 2 / 3600)  # seconds printed to 0.01
    assert f"predicted: 0 GPU-hours and {probe[2]} CPU-hours of setup" in run.stdout
    assert "1 brackets, 4 trials" in run.stdout  # never reports, so it runs whole: FIFO, as rungflow.sweep gives it


# --- each vendored example, unchanged but for its start line, on real Prefect (threads) ---------------------
SMALL = {"quadratic": 1, "pruning": 9, "sklearn_simple": 1, "sklearn_additional_args": 1, "lightgbm_simple": 1,
         "lightgbm_integration": 9, "xgboost_simple": 1, "xgboost_integration": 9}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_optuna_examples_run_under_rungflow(name: str, prefect_server: str, tmp_path: Path) -> None:
    example = OPTUNA_EXAMPLES[name]
    run = run_rungflow(example, seed=0, trials=2, out=tmp_path / "run", budget=SMALL[name],
                       runtime={"kind": "thread", "max_concurrent": 2})
    result = run["result"]
    completed = [e for e in result.events if e["status"] == "completed"]
    assert len({e["trial_id"] for e in result.events}) >= 2 and completed and run["best"] is not None, result.events
    assert result.metric.name == example.metric
    if example.scheduler == "median":  # reported steps count the budget; at the full budget it runs to its return
        below = [e for e in completed if e["budget"] < SMALL[name]]
        assert below and all(e["metrics"]["reported_steps"] == e["budget"] for e in below)
