"""A mixed-family sweep end to end on real Prefect and real local Ray; the winner saved and loaded with one call."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

import rungflow
from rungflow.config import load_config
from rungflow.flows.sweep import run_sweep
from rungflow.tasks.data import load_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_mixed_family_sweep_on_ray_saves_a_loadable_winner(prefect_server: str, tmp_path: Path, ray_shutdown: None) -> None:
    cfg = load_config(REPO / "examples" / "automl.yaml", [
        f"storage.run_dir={tmp_path / 'run'}", "scheduler.kind=sha", "search.algorithm=tpe",
        "budget.max_gpu_hours=1", "search.seed=3",
    ])
    result = run_sweep(cfg, tmp_path / "run")
    assert result["stop_reason"] == "schedule_complete"
    events = result["events"]
    assert len(events) == 9 + 3 + 1 and all(e["status"] == "completed" for e in events)
    families = {config["family"] for config in result["trials"].values()}
    assert len(families) >= 3, families  # the sweep searched across families, not one model's knobs
    # Promoted trials continued from their checkpoints (except linear, which refits on more rows).
    previous = {(e["trial_id"], e["rung"]): e["budget"] for e in events}
    for e in events:
        if e["rung"] > 0 and result["trials"][e["trial_id"]]["family"] != "linear":
            assert e["budget_trained"] == e["budget"] - previous[(e["trial_id"], e["rung"] - 1)]
    best = result["best"]
    saved = result["best_model"]
    assert saved["trial_id"] == best["trial_id"] and saved["family"] == best["config"]["family"]
    # The refitted winner is the model the sweep scored: same data, same seed, same budget.
    assert saved["metrics"]["val_score"] == pytest.approx(best["score"], abs=1e-12)
    model = rungflow.load_model(tmp_path / "run")
    ds = load_dataset({"source": "sklearn:breast_cancer"})
    assert float((model.predict(ds.X_valid) == np.asarray(ds.classes, dtype=object)[ds.y_valid]).mean()) == pytest.approx(best["score"])
    assert model.predict_proba(ds.X_valid).shape == (len(ds.y_valid), 2)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["best_model"]["path"].endswith("best_model")
    # The Prefect UI's summary says which model was saved, as result.json does.
    artifacts = {a["key"]: a for a in httpx.post(f"{prefect_server}/artifacts/latest/filter", json={}).json()}
    summary = artifacts["automl-breast-cancer-summary"]["data"]
    assert f"**Saved model:** {saved['family']} in `{saved['path']}`" in summary
