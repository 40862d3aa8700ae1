"""The spend ledger: append-only persistence, billing once per (trial, rung, attempt), incumbent curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rungflow.budgets.ledger import IncumbentPoint, Ledger, SpendRecord, TrialStatus, incumbent_curve, trial_outcome

PRICE = 2.5


def rec(
    trial_id: str,
    rung: int = 0,
    *,
    budget: float = 1.0,
    score: float | None = 0.5,
    status: TrialStatus = TrialStatus.COMPLETED,
    wall: float = 3600.0,
    gpus: float = 1.0,
    attempt: int = 0,
    price: float = PRICE,
    **extra,
) -> SpendRecord:
    gpu_seconds = wall * gpus
    return SpendRecord(
        trial_id=trial_id,
        bracket=0,
        rung=rung,
        budget=budget,
        score=score,
        status=status,
        gpu_seconds=gpu_seconds,
        gpus=gpus,
        cost=gpu_seconds / 3600.0 * price,
        started_at=0.0,
        finished_at=wall,
        attempt=attempt,
        wall_seconds=wall,
        **extra,
    )


# --- persistence -----------------------------------------------------------------------------------


def test_records_persist_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ledger.jsonl"  # the parent is created on first write
    ledger = Ledger(path, price_per_gpu_hour=PRICE)
    records = [
        rec("t0", 0, score=0.1, metrics={"loss": 0.3}),
        rec("t1", 0, score=0.2, gpus=0.5),
        rec("t0", 1, budget=3.0, score=0.4, worker="w1"),
        rec("t2", 0, score=None, status=TrialStatus.FAILED, error="boom"),
    ]
    for r in records:
        assert ledger.charge(r) is True
    ledger.record_decision({"action": "continue", "stage": "b0-r0"})

    again = Ledger(path, price_per_gpu_hour=PRICE)
    assert again.records == ledger.records == records
    assert again.gpu_hours == pytest.approx(ledger.gpu_hours) == pytest.approx(3.5)
    assert again.cost == pytest.approx(ledger.cost) == pytest.approx(3.5 * PRICE)
    assert again.trials_started() == 3
    assert again.summary(3.0) == ledger.summary(3.0)
    assert again.decisions == [{"action": "continue", "stage": "b0-r0"}]
    assert again.has("t0", 1) and not again.has("t0", 2)
    # The file is one JSON object per line.
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    assert all(json.loads(line)["type"] in ("spend", "decision") for line in lines)


def test_appends_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger(path).charge(rec("t0"))
    second = Ledger(path)
    assert second.charge(rec("t1"))
    assert [r.trial_id for r in Ledger(path).records] == ["t0", "t1"]


def test_in_memory_ledger_writes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(None, price_per_gpu_hour=1.0)
    assert ledger.charge(rec("t0"))
    assert ledger.gpu_hours == pytest.approx(1.0)
    assert list(tmp_path.iterdir()) == []


# --- billing once ------------------------------------------------------------------------------------


def test_same_key_is_billed_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, price_per_gpu_hour=PRICE)
    assert ledger.charge(rec("t0", 0, wall=3600.0))
    assert ledger.charge(rec("t0", 0, wall=7200.0)) is False  # same (trial, rung, attempt)
    assert ledger.gpu_hours == pytest.approx(1.0)
    assert ledger.cost == pytest.approx(PRICE)
    assert len(ledger.records) == 1
    # A retry (new attempt) and the next rung are separate spend.
    assert ledger.charge(rec("t0", 0, attempt=1))
    assert ledger.charge(rec("t0", 1))
    assert ledger.gpu_hours == pytest.approx(3.0)
    # After a resume the already-billed keys are still refused.
    resumed = Ledger(path, price_per_gpu_hour=PRICE)
    assert resumed.charge(rec("t0", 0)) is False
    assert resumed.charge(rec("t0", 1)) is False
    assert resumed.gpu_hours == pytest.approx(3.0)
    assert len(path.read_text().splitlines()) == 3


def test_duplicate_lines_on_disk_are_loaded_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    line = json.dumps({"type": "spend", "record": rec("t0").to_json()})
    path.write_text(line + "\n" + line + "\n")
    ledger = Ledger(path)
    assert len(ledger.records) == 1
    assert ledger.gpu_hours == pytest.approx(1.0)


# --- crash safety ------------------------------------------------------------------------------------


def _write_torn(path: Path) -> None:
    ledger = Ledger(path, price_per_gpu_hour=PRICE)
    ledger.charge(rec("t0"))
    ledger.charge(rec("t1", score=0.7))
    full = json.dumps({"type": "spend", "record": rec("t2").to_json()}, sort_keys=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(full[: len(full) // 2])  # killed mid-write: half a line, no newline


def test_truncated_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    _write_torn(path)
    ledger = Ledger(path, price_per_gpu_hour=PRICE)
    assert [r.trial_id for r in ledger.records] == ["t0", "t1"]
    assert ledger.gpu_hours == pytest.approx(2.0)
    assert not ledger.has("t2", 0)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n" + json.dumps({"type": "spend", "record": rec("t0").to_json()}) + "\n\n\n")
    assert len(Ledger(path).records) == 1


def test_record_charged_after_resuming_a_torn_ledger_survives(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    _write_torn(path)
    resumed = Ledger(path, price_per_gpu_hour=PRICE)
    assert resumed.charge(rec("t2"))
    assert resumed.charge(rec("t3"))
    reloaded = Ledger(path, price_per_gpu_hour=PRICE)
    assert [r.trial_id for r in reloaded.records] == ["t0", "t1", "t2", "t3"]


# --- billing what was used ---------------------------------------------------------------------------


def test_fractional_gpus_bill_their_fraction() -> None:
    ledger = Ledger(price_per_gpu_hour=PRICE)
    ledger.charge(rec("t0", wall=3600.0, gpus=0.25))
    ledger.charge(rec("t1", wall=1800.0, gpus=0.5))
    ledger.charge(rec("t2", wall=7200.0, gpus=2.0))
    assert ledger.records[0].gpu_hours == pytest.approx(0.25)
    assert ledger.gpu_hours == pytest.approx(0.25 + 0.25 + 4.0)
    assert ledger.cost == pytest.approx(ledger.gpu_hours * PRICE)
    assert ledger.cost_of(3600.0 * 0.25) == pytest.approx(0.25 * PRICE)


@pytest.mark.parametrize("status", [TrialStatus.FAILED, TrialStatus.TIMEOUT, TrialStatus.CANCELLED])
def test_failed_and_cancelled_trials_are_billed_and_counted(status: TrialStatus) -> None:
    ledger = Ledger(price_per_gpu_hour=PRICE)
    ledger.charge(rec("ok", score=0.9, budget=9.0))
    ledger.charge(rec("bad", score=None, status=status, wall=1800.0, error="x"))
    assert ledger.gpu_hours == pytest.approx(1.5)
    assert ledger.cost == pytest.approx(1.5 * PRICE)
    assert ledger.trials_started() == 2
    assert ledger.trials_failed() == 1
    assert ledger.trials_completed(9.0) == 1
    summary = ledger.summary(9.0)
    assert summary["trials_failed"] == 1 and summary["records"] == 2
    assert summary["cost"] == pytest.approx(1.5 * PRICE)


def test_nan_score_with_completed_status_counts_as_failed() -> None:
    ledger = Ledger()
    ledger.charge(rec("t0", score=float("nan")))
    assert not ledger.records[0].ok
    assert ledger.trials_failed() == 1


def test_retry_that_succeeded_is_not_failed() -> None:
    ledger = Ledger(price_per_gpu_hour=PRICE)
    ledger.charge(rec("t0", 0, score=None, status=TrialStatus.FAILED, attempt=0))
    ledger.charge(rec("t0", 0, score=0.5, attempt=1))
    ledger.charge(rec("t1", 0, score=None, status=TrialStatus.FAILED, attempt=0))
    ledger.charge(rec("t1", 0, score=None, status=TrialStatus.FAILED, attempt=1))
    assert ledger.trials_failed() == 1
    # Both attempts were paid for.
    assert ledger.gpu_hours == pytest.approx(4.0)
    assert ledger.trials_started() == 2


def test_trials_completed_needs_full_budget_and_valid_score() -> None:
    ledger = Ledger()
    ledger.charge(rec("a", 0, budget=1.0))
    ledger.charge(rec("a", 1, budget=9.0, score=0.8))
    ledger.charge(rec("b", 1, budget=9.0, score=None, status=TrialStatus.FAILED))
    ledger.charge(rec("c", 0, budget=3.0))
    assert ledger.trials_completed(9.0) == 1
    assert ledger.trials_completed(3.0) == 2


# --- serialisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_serialise_as_null(tmp_path: Path, bad: float) -> None:
    record = rec("t0", score=bad, status=TrialStatus.FAILED)
    data = record.to_json()
    assert data["score"] is None
    assert data["status"] == "failed"
    json.dumps(data, allow_nan=False)  # strict JSON
    path = tmp_path / "ledger.jsonl"
    Ledger(path).charge(record)
    raw = path.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    assert json.loads(raw)["record"]["score"] is None
    assert Ledger(path).records[0].score is None


def test_round_trip_keeps_every_field() -> None:
    record = rec("t9", 2, budget=27.0, score=0.25, gpus=0.5, attempt=3, metrics={"acc": 0.9}, worker="node-1",
                 error=None, trainable_seconds=12.0)
    back = SpendRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert back == record
    assert back.status is TrialStatus.COMPLETED
    # Unknown keys (from a newer writer) are ignored.
    assert SpendRecord.from_json({**record.to_json(), "future_field": 1}) == record


# --- the incumbent curve -----------------------------------------------------------------------------


def test_incumbent_curve_counts_only_the_highest_fidelity() -> None:
    records = [
        rec("a", 0, budget=1.0, score=0.3),
        rec("b", 0, budget=1.0, score=0.6),
        rec("a", 1, budget=9.0, score=0.5),
        rec("c", 0, budget=1.0, score=0.99),  # lucky at the low rung: must not beat the full-budget incumbent
        rec("d", 1, budget=9.0, score=None, status=TrialStatus.FAILED),
        rec("e", 1, budget=3.0, score=0.95),
    ]
    curve = incumbent_curve(records, "max")
    assert [p.gpu_hours for p in curve] == pytest.approx([1, 2, 3, 4, 5, 6])
    assert [p.score for p in curve] == [0.3, 0.6, 0.5, 0.5, 0.5, 0.5]
    assert [p.budget for p in curve] == [1.0, 1.0, 9.0, 9.0, 9.0, 9.0]


def test_incumbent_curve_min_mode_and_top_k() -> None:
    records = [
        rec("a", budget=9.0, score=0.5),
        rec("b", budget=9.0, score=0.2),
        rec("c", budget=9.0, score=0.4),
        rec("d", budget=9.0, score=0.1),
    ]
    curve = incumbent_curve(records, "min", top_k=2)
    assert [p.score for p in curve] == [0.5, 0.2, 0.2, 0.1]
    assert [p.top_k_mean for p in curve] == pytest.approx([0.5, 0.35, 0.3, 0.15])
    curve = incumbent_curve(records, "max", top_k=3)
    assert [p.score for p in curve] == [0.5, 0.5, 0.5, 0.5]
    assert [p.top_k_mean for p in curve] == pytest.approx([0.5, 0.35, 0.366666, 0.366666], rel=1e-4)


def test_incumbent_curve_before_any_success() -> None:
    records = [rec("a", score=None, status=TrialStatus.FAILED, gpus=0.5), rec("b", score=float("nan"), gpus=0.5)]
    curve = incumbent_curve(records, "max")
    assert curve == [IncumbentPoint(0.5, 0.0, None, None), IncumbentPoint(1.0, 0.0, None, None)]
    assert incumbent_curve([], "max") == []


def test_incumbent_curve_bills_failures_in_spend_axis() -> None:
    records = [rec("a", budget=9.0, score=0.5), rec("b", score=None, status=TrialStatus.CANCELLED, wall=7200.0)]
    curve = incumbent_curve(records, "max")
    assert curve[-1].gpu_hours == pytest.approx(3.0)
    assert curve[-1].score == 0.5
    assert not math.isnan(curve[-1].top_k_mean)  # type: ignore[arg-type]


def test_non_finite_metrics_are_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    record = rec("t0", score=float("nan"), status=TrialStatus.FAILED, metrics={"score": float("nan"), "loss": 1.0})
    Ledger(path).charge(record)

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=reject)


def _curve_by_sorting(records, mode, top_k):
    """The incumbent curve by its definition: sort every score at the top fidelity at each record."""
    sign = 1.0 if mode == "max" else -1.0
    spent, top_budget, scores, out = 0.0, -math.inf, [], []
    for r in records:
        spent += r.gpu_hours
        if r.ok:
            if r.budget > top_budget + 1e-9:
                top_budget, scores = r.budget, []
            if abs(r.budget - top_budget) <= 1e-9:
                scores.append(sign * r.score)
        if scores:
            ranked = sorted(scores, reverse=True)[: max(1, top_k)]
            out.append((spent, top_budget, sign * max(scores), sign * sum(ranked) / len(ranked)))
        else:
            out.append((spent, top_budget if math.isfinite(top_budget) else 0.0, None, None))
    return out


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_the_incumbent_curve_kept_as_records_come_is_the_sorted_one(mode: str, top_k: int) -> None:
    import random

    rng = random.Random(top_k)
    records = []
    for i in range(400):
        # Ties (scores on a coarse grid), failures, and a top fidelity that rises, then lower rungs again.
        budget = [1.0, 3.0, 9.0][min(2, i // 100)] if rng.random() < 0.7 else 1.0
        failed = rng.random() < 0.1
        records.append(SpendRecord(
            trial_id=f"t{i}", bracket=0, rung=0, budget=budget, score=None if failed else round(rng.random(), 1),
            status=TrialStatus.FAILED if failed else TrialStatus.COMPLETED, gpu_seconds=rng.random(), gpus=1.0,
            cost=0.0, started_at=float(i), finished_at=float(i + 1)))
    got = [(p.gpu_hours, p.budget, p.score, p.top_k_mean) for p in incumbent_curve(records, mode, top_k=top_k)]
    assert got == _curve_by_sorting(records, mode, top_k)


def test_the_ledgers_own_curve_caught_up_a_few_records_at_a_time_is_the_curve_of_all_of_them() -> None:
    import random

    rng = random.Random(3)
    ledger = Ledger()
    for i in range(300):
        budget = rng.choice([1.0, 3.0, 9.0, 27.0]) if i > 20 else 1.0
        ok = rng.random() > 0.1
        ledger.charge(SpendRecord(trial_id=f"t{i}", bracket=0, rung=0, budget=budget, score=rng.random() if ok else None,
                                  status=TrialStatus.COMPLETED if ok else TrialStatus.FAILED, gpu_seconds=rng.uniform(1, 60),
                                  gpus=1.0, cost=0.0, started_at=0.0, finished_at=1.0, budget_trained=budget))
        if i % 7 == 0:  # the controller asks every few results
            for mode in ("max", "min"):
                assert ledger.incumbent(mode, top_k=3) == incumbent_curve(ledger.records, mode, top_k=3)
    assert ledger.incumbent("max") == incumbent_curve(ledger.records, "max")
    trained = [r for r in ledger.records if r.budget_trained > 0]
    assert ledger.gpu_seconds_per_trained_unit() == sum(r.gpu_seconds for r in trained) / sum(r.budget_trained for r in trained)


def _last(rung: int, budget: float, status: TrialStatus = TrialStatus.COMPLETED) -> SpendRecord:
    return SpendRecord(trial_id="t", bracket=0, rung=rung, budget=budget, score=0.5 if status == "completed" else None,
                       status=status, gpu_seconds=1.0, gpus=1.0, cost=0.0, started_at=0.0, finished_at=1.0)


@pytest.mark.parametrize(("last", "top", "final", "asynchronous", "expected"), [
    (_last(2, 9), 2, False, False, "full_budget"),
    (_last(2, 9, TrialStatus.FAILED), 2, False, False, "failed"),  # a failed last attempt never counts as finished
    (_last(0, 1, TrialStatus.TIMEOUT), 0, False, True, "timeout"),
    (_last(0, 1), 1, False, False, "stopped_by_gate"),  # a synchronous gate is final at once ...
    (_last(0, 1), 1, False, True, None),  # ... ASHA may still promote it
    (_last(0, 1), 1, True, True, "stopped_by_gate"),
    (_last(0, 1), 0, False, False, None),  # its next rung has not run yet
    (_last(0, 1), 0, True, False, "unfinished"),
    (_last(0, 1, TrialStatus.CANCELLED), 0, False, False, None),
    (_last(0, 1, TrialStatus.CANCELLED), 1, True, False, "cancelled"),
])
def test_one_rule_says_what_happened_to_a_trial(last: SpendRecord, top: int, final: bool, asynchronous: bool,
                                                expected: str | None) -> None:
    assert trial_outcome(last, top, 9.0, final=final, asynchronous=asynchronous) == expected
