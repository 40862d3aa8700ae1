"""Population-based training end to end: torch_mlp as a Prefect flow on a real Prefect server, in threads (then
resumed) and on Ray actors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from rungflow.config import validate
from rungflow.flows.sweep import run_sweep
from rungflow.tasks.checkpoints import open_store

pytestmark = pytest.mark.slow

MUTABLE = {"lr", "weight_decay", "dropout"}


def _config(run_dir: Path) -> dict:
    return {
        "name": "pbt-digits",
        "trainable": {"kind": "torch_mlp", "options": {"dataset": "digits"}},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
                  "dropout": {"type": "float", "low": 0.0, "high": 0.3},
                  "hidden_units": {"type": "int", "low": 16, "high": 64, "log": True},
                  "batch_size": {"type": "int", "low": 64, "high": 256, "log": True}},
        "search": {"algorithm": "random", "seed": 4},
        "scheduler": {"kind": "pbt", "max_budget": 6, "population": 4, "perturbation_interval": 2},
        "runtime": {"kind": "thread", "max_concurrent": 2},
        "storage": {"run_dir": str(run_dir)},
    }


def _train_task_runs(api: str, name: str, count: int) -> list[str]:
    flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()[-1]
    deadline = time.time() + 60
    while True:  # task run states reach the server as events, a little later
        runs = httpx.post(f"{api}/task_runs/filter",
                          json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}, "limit": 200}).json()
        names = sorted(r["name"] for r in runs if r["name"].startswith("train-"))
        if len(names) >= count or time.time() > deadline:
            return names
        time.sleep(1)


def test_pbt_sweep_clones_checkpoints_records_lineage_and_replays_after_a_kill(prefect_server: str,
                                                                               tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_sweep(validate(_config(run_dir)), run_dir, refit=False)
    assert result["stop_reason"] == "schedule_complete"
    events = result["events"]
    # Three generations of four members, one record each; two gates, each replacing the worst member.
    assert len(events) == 12 and all(e["status"] == "completed" for e in events)
    lineage = result["lineage"]
    clones = {t: o for t, o in lineage.items() if o["parent"] is not None}
    assert sum(o["parent"] is None for o in lineage.values()) == 4 and len(clones) == 2
    store = open_store(run_dir / "checkpoints")
    for trial_id, origin in clones.items():
        parent, child = result["trials"][origin["parent"]], result["trials"][trial_id]
        # Explore changed only what torch_mlp can change on resume; the layer sizes are the parent's.
        assert {k for k in child if child[k] != parent[k]} <= MUTABLE and child != parent
        first = min((e for e in events if e["trial_id"] == trial_id), key=lambda e: e["rung"])
        assert first["budget"] == origin["cloned_at"] + 2
        # It resumed from the copied checkpoint (two epochs trained, not four), copied verified and unbilled.
        assert first["budget_trained"] == 2 and first["metrics"]["epochs_trained_total"] == first["budget"]
        assert first["metrics"]["clone_seconds"] >= 0
        assert store.load(trial_id, first["rung"] - 1) == store.load(origin["parent"], first["rung"] - 1)
    best = result["best"]
    schedule = best["hyperparameter_schedule"]
    assert schedule[-1]["trial_id"] == best["trial_id"] and schedule[-1]["to_budget"] == 6
    assert [s["from_budget"] for s in schedule] == [0.0] + [s["to_budget"] for s in schedule[:-1]]
    assert best["budget"] == 6
    # The decisions carry the scheduler's name; the task runs are named as for every scheduler.
    assert result["decisions"][0]["stage"] == "pbt after 0 results"
    names = _train_task_runs(prefect_server, "pbt-digits", 12)
    assert len(names) == 12 and {f"train-{t}-r1" for t in clones} & set(names)

    # kill -9 after half the trials were billed: a resume replays the ledger into the same population history.
    ledger = run_dir / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    spends = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "spend"]
    ledger.write_text("".join(lines[: spends[5] + 1]))
    (run_dir / "result.json").unlink()
    again = run_sweep(validate(_config(run_dir)), run_dir, refit=False)
    assert again["lineage"] == lineage and again["trials"] == result["trials"]
    key = lambda e: (e["trial_id"], e["rung"])  # noqa: E731
    completed = [e for e in again["events"] if e["status"] == "completed"]
    assert sorted((key(e), e["score"]) for e in completed) == sorted((key(e), e["score"]) for e in events)
    assert again["best"]["hyperparameter_schedule"] == schedule
    # The six trial-rungs billed before the kill are not trained again; those that were running when it
    # died are billed once as interrupted and run again as their next attempt.
    assert len(completed) == 12
    interrupted = [e for e in again["events"] if e["status"] == "interrupted"]
    assert {key(e) for e in interrupted} <= {key(e) for e in completed[6:]}
    assert len(again["events"]) == 12 + len(interrupted)


def test_pbt_on_ray_actors_clones_the_parents_checkpoint_and_bills_every_member(prefect_server: str, tmp_path: Path,
                                                                                ray_shutdown: None) -> None:
    # The checkpoint copy runs inside the actor that trains the clone, not on the driver: only the store's
    # location travels, so a clone that trained from scratch or from its own empty slot would show here.
    run_dir = tmp_path / "run"
    cfg = _config(run_dir)
    cfg.update(name="pbt-ray", search={"algorithm": "random", "seed": 2},
               scheduler={"kind": "pbt", "max_budget": 3, "population": 4, "perturbation_interval": 1},
               runtime={"kind": "ray", "gpus_per_trial": 0.25, "cpus_per_trial": 1})
    result = run_sweep(validate(cfg), run_dir, refit=False)
    assert result["stop_reason"] == "schedule_complete"
    events = result["events"]
    assert all(e["status"] == "completed" for e in events)
    assert {e["worker"].split(":")[1] for e in events}.isdisjoint({str(os.getpid())}), "trials ran in the driver"
    # Every member of every generation is billed once for its interval, the clones included.
    by_rung = {r: [e for e in events if e["rung"] == r] for r in (0, 1, 2)}
    assert [len(by_rung[r]) for r in (0, 1, 2)] == [4, 4, 4] and len(events) == 12
    assert all(e["gpu_hours"] > 0 and e["budget_trained"] == 1 for e in events)
    assert result["ledger"]["gpu_hours"] == pytest.approx(sum(e["gpu_hours"] for e in events), rel=1e-9)
    lineage = result["lineage"]
    clones = {t: o for t, o in lineage.items() if o["parent"] is not None}
    assert len(clones) == 2 and sum(o["parent"] is None for o in lineage.values()) == 4
    store = open_store(run_dir / "checkpoints")
    for trial_id, origin in clones.items():
        first = min((e for e in events if e["trial_id"] == trial_id), key=lambda e: e["rung"])
        assert origin["cloned_at"] == first["budget"] - 1
        parent_at_clone = next(e for e in events if e["trial_id"] == origin["parent"] and e["rung"] == first["rung"] - 1)
        assert parent_at_clone["budget"] == origin["cloned_at"]
        # It trained one epoch on top of the parent's weights: the copy the actor made is the parent's bytes.
        assert first["metrics"]["epochs_trained_total"] == first["budget"] and first["metrics"]["clone_seconds"] >= 0
        copied = store.load(trial_id, first["rung"] - 1)
        assert copied is not None and copied == store.load(origin["parent"], first["rung"] - 1)
        assert (run_dir / "checkpoints" / trial_id / f"rung-{first['rung']}.ckpt").exists()
    schedule = result["best"]["hyperparameter_schedule"]
    assert schedule[-1]["trial_id"] == result["best"]["trial_id"] and schedule[-1]["to_budget"] == 3
