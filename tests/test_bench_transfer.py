"""``python -m bench transfer`` on a tiny run: its rows, and that no target's own sweep enters its history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import transfer
from rungflow.tasks.trainables.yahpo_lcbench import INSTANCES


def test_history_never_holds_the_target_task() -> None:
    for target in INSTANCES:
        for h in (3, 10):
            tasks = transfer.history_tasks(target, h)
            assert target not in tasks and len(set(tasks)) == h
    assert not set(transfer.HELDOUT) & set(transfer.DEV)


def test_tiny_run_reads_real_run_directories(tmp_path: Path) -> None:
    arms = ("cold", "history", "misleading", transfer.ALONE)
    rows = transfer.run(["3945"], [0], [2], tmp_path, iterations=1, arms=arms, pool=128, report=lambda _: None)
    assert len(rows) == 1
    row = rows[0]
    assert row["h"] == 2 and row["instance"] == "3945" and len(row["history_tasks"]) == 2
    # The history came back through the product's reader, from the two other tasks' run directories only.
    assert row["same_task"] == 0 and row["portfolio"] >= 1
    assert sorted(Path(s).name for s in row["sources"]) == sorted(f"lcbench-{t}" for t in row["history_tasks"])
    assert all("3945" not in Path(s).name for s in row["sources"])
    for arm in arms:
        assert row[arm] is None or 0 < row[arm] <= 1
    # The portfolio alone, at full budget in order: what its first configuration that reaches the goal cost.
    from bench.search_sim import curves

    c = curves("3945")
    costs = [float(c.curve(p)[1][-1]) / 3600 for p in rows[0]["portfolio_configs"]]
    hits = [float(c.curve(p)[0][-1]) >= row["goal"] for p in rows[0]["portfolio_configs"]]
    expected = sum(costs[: hits.index(True) + 1]) / row["expected_gpu_hours"] if True in hits else None
    assert row[transfer.ALONE] == (pytest.approx(expected) if expected is not None and expected <= 1 else None)
    # Each arm with a portfolio says what became of it; cold has none.
    assert set(row["verdicts"]) == {"history", "misleading"}
    assert set(row["verdicts"].values()) <= {"kept", "dropped", "pending"}
    # The history's model proposed part of the trials, as the product's default does, and says its share.
    assert row["shares"]["history"]["sweeps"] == 2 and row["shares"]["history"]["trials_from_prior"] > 0
    assert 0.0 <= row["shares"]["misleading"]["share"] <= 1.0
    # The misleading copy turns every score upside down and changes nothing else.
    task = row["history_tasks"][0]
    plain = [json.loads(x) for x in (tmp_path / "history" / f"lcbench-{task}" / "ledger.jsonl").read_text().splitlines()]
    flipped = [json.loads(x) for x in (tmp_path / "history-flipped" / f"lcbench-{task}" / "ledger.jsonl").read_text().splitlines()]
    spends = [(a["record"], b["record"]) for a, b in zip(plain, flipped) if a.get("type") == "spend"]
    assert spends and all(abs(a["score"] + b["score"] - 100.0) < 1e-9 for a, b in spends if a["score"] is not None)
    table = transfer.markdown(rows, arms)
    assert "| cold | " in table and "**H = 2, dev**" in table and "| prior kept |" in table
    history = next(line for line in table.splitlines() if line.startswith("| history | "))
    assert history.endswith(f" {int(row['verdicts']['history'] == 'kept')}/1 |")
    # Each run against its cold twin; one that never reached the target counts as E[G].
    paired = (1.0 if row["history"] is None else row["history"]) - (1.0 if row["cold"] is None else row["cold"])
    assert f"| {paired:+.3f} |" in history
