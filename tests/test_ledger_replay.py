"""The ledger's resume side: started markers, replay (pending → adopted in billing order), one copy of each decision."""

from __future__ import annotations

from pathlib import Path

from rungflow.budgets.ledger import FINISHED, Ledger, SpendRecord, StartMarker, TrialStatus


def rec(trial: str, rung: int = 0, attempt: int = 0, status: TrialStatus = TrialStatus.COMPLETED, wall: float = 60.0) -> SpendRecord:
    return SpendRecord(trial_id=trial, bracket=0, rung=rung, budget=1.0 + rung, score=0.5 if status == "completed" else None,
                       status=status, gpu_seconds=wall, gpus=1.0, cost=0.0, started_at=0.0, finished_at=wall,
                       attempt=attempt, wall_seconds=wall)


def mark(trial: str, rung: int = 0, attempt: int = 0) -> StartMarker:
    return StartMarker(trial, rung, attempt, 0, 1.0 + rung, 1.0, 100.0)


def test_replay_loads_spend_as_pending_and_adopts_in_billing_order(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    live = Ledger(path)
    for t in ("t0", "t1", "t2"):
        live.start(mark(t))
    live.charge(rec("t1"))
    live.charge(rec("t0"))
    live.record_decision({"stage": "b0 r0", "action": "continue"})
    live.charge(rec("t2", status=TrialStatus.FAILED))
    live.start(mark("t1", rung=1))  # dispatched, then the process died

    replay = Ledger(path, replay=True)
    assert replay.records == [] and [r.trial_id for r in replay.pending] == ["t1", "t0", "t2"]
    assert replay.finished("t0", 0) is not None and replay.finished("t2", 0).status == TrialStatus.FAILED
    assert replay.finished("t1", 1) is None
    assert [m.key for m in replay.unbilled_starts()] == [("t1", 1, 0)]
    assert replay.next_attempt("t1", 1) == 1 and replay.next_attempt("t0", 0) == 1 and replay.next_attempt("t9", 0) == 0
    # Adopting t0 brings everything billed before it too (t1), so totals match the run before the crash.
    replay.adopt("t0", 0, upto=replay.finished("t0", 0))
    assert [r.trial_id for r in replay.records] == ["t1", "t0"] and replay.gpu_hours == 120 / 3600
    # Decisions made again by the replayed driver are not written again; new ones are.
    replay.record_decision({"stage": "b0 r0", "action": "continue"})
    replay.record_decision({"stage": "b0 r1", "action": "continue"})
    assert path.read_text().count('"type": "decision"') == 2
    replay.adopt_all()
    assert [r.trial_id for r in replay.records] == ["t1", "t0", "t2"]


def test_interrupted_attempt_is_billed_once_across_resumes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path).start(mark("t0"))
    first = Ledger(path, replay=True)
    lost = rec("t0", status=TrialStatus.INTERRUPTED, wall=5.0)
    assert first.bill_pending(lost) and not first.bill_pending(lost)
    assert first.unbilled_starts() == []
    # Killed again before the retry ran: the next resume sees the interrupted bill, not a new one to make.
    second = Ledger(path, replay=True)
    assert second.unbilled_starts() == [] and second.finished("t0", 0) is None
    assert second.next_attempt("t0", 0) == 1
    assert TrialStatus.INTERRUPTED not in FINISHED and TrialStatus.CANCELLED not in FINISHED
    second.start(mark("t0", attempt=1))
    second.charge(rec("t0", attempt=1))
    third = Ledger(path, replay=True)
    assert third.finished("t0", 0).attempt == 1
    assert sorted(r.key for r in third.pending) == [("t0", 0, 0), ("t0", 0, 1)]


def test_torn_started_marker_is_dropped_and_the_attempt_never_counted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path).charge(rec("t0"))
    with path.open("a") as fh:
        fh.write('{"start": {"attempt": 0, "trial_id": "t1"')  # killed mid-write
    replay = Ledger(path, replay=True)
    assert replay.unbilled_starts() == [] and len(replay.pending) == 1
    replay.start(mark("t1"))
    assert [m.key for m in Ledger(path, replay=True).unbilled_starts()] == [("t1", 0, 0)]
