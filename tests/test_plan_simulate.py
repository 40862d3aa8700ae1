"""``rungflow plan --simulate``: the real driver on a simulated cluster, its figures and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rungflow.budgets.rungs import hyperband_plan
from rungflow.flows.cli import main
from tests.conftest import sweep_config


def _config(tmp_path: Path, **overrides) -> Path:
    cfg = sweep_config(tmp_path, name="plan-sim", runtime={"kind": "thread", "max_concurrent": 2, "gpus_per_trial": 1},
                       budget={"price_per_gpu_hour": 2.0}, **overrides)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_one_worker_runs_the_plan_back_to_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    out = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json")
    units = sum(b.budget_units() for b in hyperband_plan(1, 9, 3))
    assert out["wall_seconds"] == pytest.approx(units * 10)
    assert out["gpu_hours"] == pytest.approx(units * 10 / 3600)
    assert out["cost"] == pytest.approx(out["gpu_hours"] * 2.0)
    assert out["utilisation"] == pytest.approx(1.0) and out["barrier_idle_fraction"] == pytest.approx(0.0)
    assert out["trials"] == sum(b.num_trials for b in hyperband_plan(1, 9, 3))
    assert out["stop_reason"] == "schedule_complete" and out["best_score"] is not None
    assert len(out["events"]) == sum(len(b.rungs) and sum(r.num_trials for r in b.rungs) for b in hyperband_plan(1, 9, 3))


def test_fractional_gpus_pack_and_barriers_idle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)
    whole = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--workers", "4")
    quarter = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--workers", "4",
                    "--set", "runtime.gpus_per_trial=0.25")
    assert whole["slots"] == 4 and quarter["slots"] == 16
    assert quarter["wall_seconds"] < whole["wall_seconds"]
    assert whole["barrier_idle_fraction"] > 0 and whole["utilisation"] < 1
    asha = _json(capsys, "plan", str(path), "--simulate", "--seconds-per-unit", "10", "--json", "--workers", "4",
                 "--set", "scheduler.kind=asha")
    assert asha["barrier_idle_fraction"] == 0.0


def test_side_by_side_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(_config(tmp_path)), "--simulate", "--seconds-per-unit", "1", "--workers", "8"]) == 0
    out = capsys.readouterr().out
    assert "hyperband:" in out and "asha:" in out and "utilisation" in out and "idle at barriers" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0", "--seconds-per-unit", "1"], "--workers: 0 must be at least 1"),
    ([], "has no cost model: give durations with --costs-from RUN_DIR"),
    (["--costs-from", "EMPTY"], "no ledger.jsonl there"),
    (["--costs-from", "OTHER"], "that ledger is of trainable 'sklearn'"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "ledger.jsonl").write_text("", encoding="utf-8")
    (other / "config.json").write_text(json.dumps({"trainable": {"kind": "sklearn"}}), encoding="utf-8")
    argv = [str(tmp_path / "empty") if a == "EMPTY" else str(other) if a == "OTHER" else a for a in argv]
    assert main(["plan", str(_config(tmp_path)), "--simulate", *argv]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err.replace("\n", " ") and len(err.splitlines()) <= 3
