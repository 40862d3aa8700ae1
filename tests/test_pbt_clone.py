"""A clone's train task: its parent's checkpoint copied, verified, unbilled, then resumed from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rungflow.budgets.ledger import TrialStatus
from rungflow.tasks.checkpoints import CorruptCheckpoint, LocalCheckpointStore, copy_checkpoint
from rungflow.tasks.train import TrialSpec, run_trial


def spec(tmp_path: Path, trial_id: str, rung: int, budget: float, **kwargs) -> TrialSpec:
    return TrialSpec(trial_id=trial_id, config={"x": 0.3, "y": 0.7}, bracket=0, rung=rung, budget=budget,
                     trainable_kind="noop", trainable_options={}, checkpoint_dir=str(tmp_path / "ckpt"), **kwargs)


def test_copy_is_verified_on_both_sides(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    assert copy_checkpoint(store, ("a", 0), ("b", 0)) is False  # nothing to copy
    store.save("a", 0, b"weights")
    assert copy_checkpoint(store, ("a", 0), ("b", 1)) is True
    assert store.load("b", 1) == b"weights"
    (tmp_path / "a" / "rung-0.ckpt").write_bytes(b"torn")
    with pytest.raises(CorruptCheckpoint):
        copy_checkpoint(store, ("a", 0), ("c", 0))
    assert store.load("c", 0) is None  # a corrupt source is never copied


def test_a_clone_resumes_from_its_parents_checkpoint_and_is_billed_only_its_interval(tmp_path: Path) -> None:
    parent = run_trial(spec(tmp_path, "t0000", 0, 2)).record
    assert parent.ok and parent.budget_trained == 2
    clone = run_trial(spec(tmp_path, "t0004", 1, 4, resume_from_rung=0, clone_from="t0000")).record
    assert clone.ok and clone.budget_trained == 2 and clone.resumed_from_budget == 2
    assert clone.metrics["clone_seconds"] >= 0 and clone.error is None
    store = LocalCheckpointStore(tmp_path / "ckpt")
    assert store.load("t0004", 0) == store.load("t0000", 0)
    assert json.loads(store.load("t0004", 1))["budget"] == 4  # type: ignore[arg-type]


def test_a_clone_whose_parent_checkpoint_is_corrupt_trains_from_scratch_and_says_so(tmp_path: Path) -> None:
    run_trial(spec(tmp_path, "t0000", 0, 2))
    (tmp_path / "ckpt" / "t0000" / "rung-0.ckpt").write_bytes(b"garbage")
    clone = run_trial(spec(tmp_path, "t0004", 1, 4, resume_from_rung=0, clone_from="t0000"))
    assert clone.record.status == TrialStatus.COMPLETED and clone.record.budget_trained == 4
    assert clone.record.resumed_from_budget is None
    assert any("does not match its checksum" in line and "from scratch" in line for _, line in clone.logs)
