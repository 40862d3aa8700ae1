"""The CLI on bad input: exit status 2, one line naming the field and the fix, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

GOOD = "name: cli\ntrainable: {kind: noop}\nscheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rungflow.flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(
    ("content", "overrides", "expected"),
    [
        (GOOD, ["scheduler.eta=1"], "scheduler.eta = 1"),
        (GOOD, ["scheduler.min_budget=0"], "scheduler.min_budget = 0"),
        (GOOD, ["scheduler.min_budget=20"], "min_budget (20) is above scheduler.max_budget (9)"),
        (GOOD, ["search.algorithm=annealing"], "unknown searcher 'annealing'"),
        (GOOD, ["scheduler.kind=bayesopt"], "unknown scheduler 'bayesopt'"),
        (GOOD, ["trainable.kind=gbdt"], "unknown trainable 'gbdt'"),
        (GOOD, ["budget.max_gpu_hours=-1"], "budget.max_gpu_hours = -1"),
        (GOOD, ["budget.patience=0"], "budget.patience = 0"),
        (GOOD, ["space={}"], "space"),
        (GOOD, ["space.x.type=gaussian"], "space.x"),
        (GOOD, ["scheduler.eta"], "expected dotted.key=value"),
        (GOOD, ["scheduler.eta.x=3"], "is a value, not a section"),
        ("name: [unclosed\n", [], "not valid YAML"),
        ("- a list\n", [], "must hold a mapping"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, content: str, overrides: list[str], expected: str) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(content)
    args = ["plan", str(config)]
    for item in overrides:
        args += ["--set", item]
    run = _cli(*args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert expected in run.stderr.replace("\n", " ")
    assert run.stderr.strip().startswith("error:")


def test_missing_config_and_run_dir() -> None:
    run = _cli("plan", "does-not-exist.yaml")
    assert run.returncode == 2 and "does not exist" in run.stderr and "Traceback" not in run.stderr
    run = _cli("report", "no-such-run-dir")
    assert run.returncode == 2 and "result.json" in run.stderr and "Traceback" not in run.stderr


def test_plan_prints_the_schedule(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(GOOD)
    run = _cli("plan", str(config))
    assert run.returncode == 0, run.stderr
    assert "3 brackets, 17 trials" in run.stdout


def test_plan_with_a_cost_model_refuses_a_first_bracket_over_the_cap() -> None:
    run = _cli("plan", str(REPO / "examples" / "lcbench.yaml"), "--set", "budget.max_gpu_hours=0.01")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "first bracket alone needs" in run.stderr and "budget.max_gpu_hours" in run.stderr
