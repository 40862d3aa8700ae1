"""Bad input across config, data and CLI: exit status 2, one line naming the problem and the fix, no traceback.

In-process through ``flows.cli.main`` (fast); a few through a real subprocess, as users run it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rungflow.flows.cli import main
from tests.conftest import REPO

GOOD = "name: bad-input\ntrainable: {kind: noop}\nscheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\n"


def _check(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error:")
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


# (yaml content, --set overrides, expected fragments of the message)
CONFIG_CASES = {
    "unknown top-level key": (GOOD + "sweeper: 3\n", [], ["sweeper", "unknown field; remove it"]),
    "unknown nested key": (GOOD, ["scheduler.etta=3"], ["scheduler.etta", "unknown field"]),
    "wrong type": (GOOD, ["scheduler.eta=fast"], ["scheduler.eta = 'fast'", "valid number"]),
    "negative cap": (GOOD, ["budget.max_gpu_hours=-2"], ["budget.max_gpu_hours = -2", "positive number"]),
    "negative price": (GOOD, ["budget.price_per_gpu_hour=-1"], ["budget.price_per_gpu_hour", "zero or more"]),
    "eta <= 1": (GOOD, ["scheduler.eta=1"], ["scheduler.eta = 1", "at least 2"]),
    "min_budget > max_budget": (GOOD, ["scheduler.min_budget=20"], ["min_budget (20) is above", "raise max_budget"]),
    "unknown trainable": (GOOD, ["trainable.kind=gbdt"], ["unknown trainable 'gbdt'", "use one of"]),
    "unknown searcher": (GOOD, ["search.algorithm=annealing"], ["unknown searcher 'annealing'", "use one of"]),
    "unknown scheduler": (GOOD, ["scheduler.kind=bayesopt"], ["unknown scheduler 'bayesopt'", "use one of"]),
    "empty space": (GOOD + "space: {}\n", [], ["space"]),
    "bad parameter type": (GOOD, ["space.x.type=gaussian"], ["space.x"]),
    "bad duration": (GOOD, ["budget.deadline=soon"], ["budget.deadline", "'4h'"]),
    "unknown runtime": (GOOD, ["runtime.kind=gpu"], ["runtime.kind = 'gpu'", "'thread' or 'ray'"]),
    "fractional gpus above one": (GOOD, ["runtime.gpus_per_trial=1.5"], ["runtime.gpus_per_trial", "whole GPUs"]),
    "zero trials": (GOOD, ["search.num_trials=0"], ["search.num_trials", "at least 1"]),
    "unknown trainable option": (GOOD, ["trainable.options.speed=3"], ["trainable.options.speed", "unknown field"]),
    "bad YAML syntax": ("name: [unclosed\n", [], ["not valid YAML", "line"]),
    "YAML that is a list": ("- a\n- b\n", [], ["must hold a mapping"]),
    "empty file": ("", [], ["must hold a mapping"]),
    "missing name": ("trainable: {kind: noop}\n", [], ["name", "is required"]),
    "--set without =": (GOOD, ["scheduler.eta"], ["expected dotted.key=value"]),
    "--set into a value": (GOOD, ["scheduler.eta.x=3"], ["is a value, not a section"]),
    "--set empty key": (GOOD, ["scheduler..eta=3"], ["empty key"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content, overrides, expected = CONFIG_CASES[case]
    config = tmp_path / "sweep.yaml"
    config.write_text(content)
    args = ["plan", str(config)]
    for item in overrides:
        args += ["--set", item]
    code = main(args)
    _check(code, capsys.readouterr().err, *expected)


def test_config_path_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(main(["plan", str(tmp_path / "nope.yaml")]), capsys.readouterr().err, "does not exist", "pass the path")
    _check(main(["plan", str(tmp_path)]), capsys.readouterr().err, "is a directory", "pass the path")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    _check(main(["plan", str(binary)]), capsys.readouterr().err, "not UTF-8", "save the sweep YAML as UTF-8")


def test_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lcbench.yaml"
    config.write_text(f"name: data\ntrainable: {{kind: yahpo_lcbench, options: {{data_path: {tmp_path / 'no-yahpo'}}}}}\n")
    for command in ("plan", "sweep"):
        _check(main([command, str(config), "--out", str(tmp_path / "run")] if command == "sweep" else [command, str(config)]),
               capsys.readouterr().err, "data error", "no-yahpo", "point it at the folder")
    assert not (tmp_path / "run" / "ledger.jsonl").exists(), "nothing may start on missing data"


def test_resume_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _check(main(["resume", str(run)]), capsys.readouterr().err, "does not exist", "rungflow sweep --out")
    run.mkdir()
    _check(main(["resume", str(run)]), capsys.readouterr().err, "config.json does not exist", "run directory")
    (run / "config.json").write_text('{"name": "x", "trainable": {"kind": "noop"}}')
    _check(main(["resume", str(run)]), capsys.readouterr().err, "ledger.jsonl does not exist", "rungflow sweep")
    (run / "ledger.jsonl").write_text("")
    _check(main(["resume", str(run), "--set", "budget.max_gpu_hours"]), capsys.readouterr().err,
           "expected dotted.key=value")
    _check(main(["resume", str(run), "--set", "scheduler.eta=4"]), capsys.readouterr().err,
           "only budget.*, runtime.*, storage.* and ui.* may change", "--out NEW_DIR")
    _check(main(["resume", str(run), "--set", "budget.max_gpu_hours=-1"]), capsys.readouterr().err,
           "budget.max_gpu_hours = -1")
    (run / "config.json").write_text("{not json")
    _check(main(["resume", str(run)]), capsys.readouterr().err, "not a readable JSON config", "restore it")
    (run / "config.json").write_text("[1, 2]")
    _check(main(["resume", str(run)]), capsys.readouterr().err, "must hold a mapping")


def test_cli_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _check(main(["bogus"]), capsys.readouterr().err, "invalid choice: 'bogus'", "--help")
    _check(main(["plan"]), capsys.readouterr().err, "required: config", "--help")
    _check(main(["report", "--top", "many", str(tmp_path)]), capsys.readouterr().err, "--top", "invalid int")
    (tmp_path / "result.json").write_text("{truncated")
    _check(main(["report", str(tmp_path)]), capsys.readouterr().err, "result.json cannot be read", "rungflow resume")
    config = tmp_path / "sweep.yaml"
    config.write_text(GOOD)
    afile = tmp_path / "afile"
    afile.write_text("x")
    _check(main(["sweep", str(config), "--out", str(afile)]), capsys.readouterr().err, "is a file", "--out")


def test_as_users_run_it_in_a_subprocess(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("name: [unclosed\n")
    for args, expected in ((["nonsense"], "invalid choice"), (["plan", str(config)], "not valid YAML"),
                           (["resume", str(tmp_path)], "config.json does not exist")):
        run = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        _check(run.returncode, run.stderr, expected)


# --- missing extras and pre-namespace module paths: one line before anything is spent -------------------------
_BLOCKED_CLI = "import sys\nfor name in {blocked!r}: sys.modules[name] = None\nfrom rungflow.flows.cli import main\nsys.exit(main({args!r}))"


@pytest.mark.parametrize(
    ("trainable", "blocked", "env", "expected"),
    [
        ("{kind: torch_mlp}", ["torch"], {}, "pip install 'rungflow[torch]'"),
        ("{kind: yahpo_lcbench}", ["onnxruntime"], {}, "pip install 'rungflow[lcbench]'"),
        ("{kind: autogluon, options: {data: {source: 'sklearn:breast_cancer'}}}", [], {"RUNGFLOW_AUTOGLUON_ENV": "/nonexistent"},
         "pip install 'rungflow[autogluon]'"),
        ("{kind: tasks.trainables.torch_mlp}", [], {}, "rungflow.tasks.trainables.torch_mlp"),
    ],
)
def test_a_family_without_its_extra_or_an_old_module_path_is_one_line(tmp_path: Path, trainable: str, blocked: list[str],
                                                                       env: dict[str, str], expected: str) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: extras\ntrainable: {trainable}\nscheduler: {{kind: hyperband, min_budget: 10, max_budget: 90, eta: 3}}\n")
    args = ["sweep", str(config), "--out", str(tmp_path / "run")]
    out = subprocess.run([sys.executable, "-c", _BLOCKED_CLI.format(blocked=blocked, args=args)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and expected in lines[0], out.stderr
    assert not (tmp_path / "run" / "ledger.jsonl").exists()
