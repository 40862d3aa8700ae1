"""``bench.peer_synetune`` on a 48-configuration table: both simulators read the table's own numbers, and
each method spends the GPU-hours our Hyperband spent, not much more, on the same trial slots.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("syne_tune")
peer = pytest.importorskip("bench.peer_synetune")

INSTANCE, POOL, WORKERS = "3945", 48, 4


@pytest.fixture(scope="module")
def table(yahpo_data):
    return peer.Table(INSTANCE, pool=POOL)


def test_a_proposal_reads_its_nearest_row(table):
    from bench.search_sim import curves

    row = table.rows[7]
    acc, sec = table.curve(row)
    assert np.array_equal(acc, curves(INSTANCE).curve(row)[0])
    assert np.array_equal(sec, curves(INSTANCE).curve(row)[1])
    # A small step off a row, on the log scale of learning_rate, still reads that row, as Syne Tune's lookup does.
    near = {**row, "learning_rate": row["learning_rate"] * 1.0001}
    assert table.nearest(near) == 7
    values = np.asarray(table.blackbox.objective_function(near))
    assert np.array_equal(values[:, 0], acc) and np.array_equal(values[:, 1], sec)
    assert table.blackbox.objective_function(near, fidelity={"epoch": 52})[peer.ACC] == acc[-1]


def test_every_method_spends_ours_and_reads_the_table(table):
    rows = peer.run_cell(table, 0, WORKERS, iterations=1)
    by = {r["method"]: r for r in rows}
    assert set(by) == set(peer.METHODS)
    cap = by["ours hyperband"]["gpu_hours"]
    longest = float(table.seconds[:, -1].max()) / 3600
    finals = set(table.acc[:, -1].tolist())
    for method, r in by.items():
        # Stopped at our GPU-hours: at most the trials still running past it.
        assert cap * 0.9 <= r["gpu_hours"] <= cap + WORKERS * longest, (method, r["gpu_hours"], cap)
        assert r["trials"] > WORKERS, method
        # The best 52-epoch result is one of the table's rows, whoever found it.
        assert r["final_gap"] is not None and r["final_gap"] + table.expected_best in finals, method
        if r["reach_hours"] is not None:
            assert 0 < r["reach_hours"] <= r["wall_hours"] + 1e-9, method
    # Syne Tune's ASHA stops trials at its rungs: most of its trials never reach 52 epochs.
    assert by["syne tune asha"]["trials"] > 2 * by["ours hyperband"]["trials"] / 3
