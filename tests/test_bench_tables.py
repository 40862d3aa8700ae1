"""The real-table suite (bench/tables.py), the AutoML benchmark's reporting, and one tiny real harness run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from bench import automl_report as rep
from bench import tables as suite


@pytest.fixture(scope="module")
def loaded() -> dict[str, object]:
    return {t.name: suite.load(t) for t in suite.SUITE}


def test_the_suite_is_large_enough_and_split_as_recorded() -> None:
    tasks = [t.task for t in suite.SUITE]
    assert tasks.count("classification") >= 30 and tasks.count("regression") >= 10
    assert len({t.name for t in suite.SUITE}) == len(suite.SUITE)
    # The recorded split is the seeded draw, a third of each task, and nothing else.
    assert suite.DEV == suite.draw_dev(suite.DEV_SEED)
    for task in ("classification", "regression"):
        names = {t.name for t in suite.SUITE if t.task == task}
        assert len(names & set(suite.DEV)) == round(len(names) / 3)
    assert {t.name for t in suite.select("dev")} | {t.name for t in suite.select("heldout")} == {t.name for t in suite.SUITE}
    assert not {t.name for t in suite.select("dev")} & {t.name for t in suite.select("heldout")}
    with pytest.raises(ValueError, match="not a table of the suite"):
        suite.select(["AER.NoSuchTable"])


def test_every_table_loads_offline_with_its_target_and_without_ids_or_leaks(loaded: dict) -> None:
    for t in suite.SUITE:
        frame = loaded[t.name]
        assert len(frame) >= 500, t.name
        assert t.target in frame.columns and frame[t.target].notna().all(), t.name
        assert suite.ROW_NAMES not in frame.columns and not set(t.drop) & set(frame.columns), t.name
        assert frame.shape[1] >= 3, t.name  # the target and at least two features
        assert t.why, t.name
        if t.task == "classification":
            counts = frame[t.target].value_counts()
            assert len(counts) >= 2 and counts.min() >= 3, t.name  # three outer folds each see every class
        else:
            assert frame[t.target].dtype.kind in "if" and frame[t.target].nunique() > 20, t.name


def _row(table: str, split: int, system: str, score: float | None, constant: float, **kw: object) -> dict:
    return {"table": table, "task": "classification", "split": split, "system": system, "score": score,
            "constant": constant, "status": "ok" if score is not None else "failed", "error": "boom", **kw}


def test_report_on_hand_made_numbers() -> None:
    rows = [
        # table a: x 0.9, y 0.8, constant 0.5 (two splits, means shown)
        _row("a", 0, "x", 0.9, 0.5, cpu_hours=1.0), _row("a", 1, "x", 0.9, 0.5, cpu_hours=1.0),
        _row("a", 0, "y", 0.7, 0.5, cpu_hours=0.5), _row("a", 1, "y", 0.9, 0.5, cpu_hours=0.5),
        # table b: y wins; x failed one split, imputed with the constant 0.6
        _row("b", 0, "x", 0.8, 0.6), _row("b", 1, "x", None, 0.6),
        _row("b", 0, "y", 0.9, 0.6), _row("b", 1, "y", 0.9, 0.6),
        # table c: a tie within 0.1 points
        _row("c", 0, "x", 0.8000, 0.4), _row("c", 0, "y", 0.8005, 0.4),
    ]
    r = rep.report(rows, ["x", "y"])
    assert r["tables"]["a"]["scores"] == pytest.approx({"x": 0.9, "y": 0.8})
    assert r["tables"]["b"]["scores"]["x"] == pytest.approx(0.7)
    assert r["normalised"]["a"] == pytest.approx({"x": 1.0, "y": 0.75})
    assert r["normalised"]["b"] == pytest.approx({"x": 1 / 3, "y": 1.0})
    assert r["mean_rank"] == pytest.approx({"x": (1 + 2 + 1.5) / 3, "y": (2 + 1 + 1.5) / 3})
    assert r["wins_ties_losses"]["x"]["y"] == (1, 1, 1) and r["wins_ties_losses"]["y"]["x"] == (1, 1, 1)
    assert r["spend"]["x"]["cpu_hours"] == pytest.approx(2.0) and r["spend"]["y"]["cpu_hours"] == pytest.approx(1.0)
    assert r["tables"]["b"]["failed"] == ["x split 1: boom"]
    text = rep.markdown(r, "t")
    assert "| a | class | 2 | 0.5000 | 0.9000 (1.00) | 0.8000 (0.75) |" in text and "1/1/1" in text


def test_price_stop_is_spend_saved_and_points_lost_against_the_full_run() -> None:
    rows = [_row("a", 0, "rungflow", 0.90, 0.5, cpu_hours=0.4, gpu_hours=0.0),
            _row("a", 0, "rungflow-stop", 0.89, 0.5, cpu_hours=0.1, gpu_hours=0.0)]
    stop = rep.price_stop(rows)
    assert stop is not None
    assert stop["a"]["saved"] == pytest.approx(0.75) and stop["a"]["unit"] == "cpu_hours"
    assert stop["a"]["points_lost"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_tiny_real_run_of_rungflow_and_autogluon(prefect_server: str, tmp_path: Path) -> None:
    from bench import automl

    table = suite.by_name()["dslabs.olive"]
    frame = suite.load(table)
    folds = automl.outer_splits(frame, table.target, table.task, 3, seed=0)
    test_rows = set(folds[0][1])
    assert not test_rows & set(folds[0][0]) and len(test_rows) == math.ceil(len(frame) / 3)
    args = argparse.Namespace(out=tmp_path, price=0.1, seed=0, runtime="thread")
    rows = [automl.run_one(table, frame, 0, folds[0], "rungflow", 15.0, args),
            automl.run_one(table, frame, 0, folds[0], "ag-medium", 5.0, args)]
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        # Olive oils' regions are easy: both beat the majority class by far.
        assert row["score"] > row["constant"] + 0.2 and row["cpu_hours"] > 0 and row["test_rows"] == len(test_rows)
    r = rep.report(rows, ["rungflow", "ag-medium"])
    assert max(r["normalised"]["dslabs.olive"].values()) == 1.0
