"""The weekly retrain flow on a real Prefect server: two weeks, warm start, promotion rule, bad input, S3."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prefect.states import State

from rungflow.flows.retrain import RetrainError, decide, retrain_flow, warm_start_from
from rungflow.tasks.registry import CorruptArtifact, ModelRegistry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two weeks of breast-cancer rows (week 2 shifted and slightly drifted) and broken variants."""
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("weeks")
    frame = load_breast_cancer(as_frame=True).frame
    week2 = frame.iloc[120:].copy()
    week2["mean radius"] *= 1.03  # a little drift
    paths = {"week1": root / "week1.csv", "week2": root / "week2.parquet"}
    frame.iloc[:450].to_csv(paths["week1"], index=False)
    week2.to_parquet(paths["week2"], index=False)
    paths["new_column"] = root / "new.csv"
    frame.assign(extra=1.0).drop(columns=["mean area"]).to_csv(paths["new_column"], index=False)
    paths["empty"] = root / "empty.csv"
    paths["empty"].write_text(",".join(frame.columns) + "\n")
    paths["malformed"] = root / "malformed.csv"
    paths["malformed"].write_text('a,b,target\n1,2,0\n"3,4,1\n5,6\n')
    return paths


@pytest.fixture(scope="module")
def last_week(prefect_server: str, tmp_path_factory: pytest.TempPathFactory, weeks) -> Path:
    """A registry holding one finished week, for the schema check of the bad-input cases."""
    root = tmp_path_factory.mktemp("last-week")
    retrain_flow(config(root, weeks["week1"]))
    return root


def config(tmp_path: Path, source: Path | str, registry: str | None = None, **extra) -> dict:
    return {
        "name": "cancer", "data": {"source": str(source), "label": "target"},
        "registry": registry or str(tmp_path / "registry"), "run_root": str(tmp_path / "runs"),
        "sweep": {"trainable": {"kind": "linear"}, "search": {"algorithm": "tpe", "seed": 0},
                  "scheduler": {"kind": "hyperband", "min_budget": 30, "max_budget": 90, "eta": 3},
                  "budget": {"max_gpu_hours": 1.0, "price_per_gpu_hour": 2.0},
                  "runtime": {"kind": "thread", "max_concurrent": 2, "gpus_per_trial": 0.5}},
        **extra,
    }


def _failed_message(flow, *args) -> str:
    state: State = flow(*args, return_state=True)
    assert state.is_failed()
    with pytest.raises(RetrainError) as err:
        state.result()
    return str(err.value)


def test_two_weeks_warm_start_champion_and_challenger(prefect_server: str, tmp_path: Path, weeks) -> None:
    first = retrain_flow(config(tmp_path, weeks["week1"]))
    assert first["decision"] == {**first["decision"], "promoted": True, "version": "v0001"}
    assert first["warm_start"]["from_run"] is None and first["spent"]["gpu_hours"] > 0
    # Week 2 from this week's file, warm-started; a margin no challenger can clear: registered, not promoted.
    second = retrain_flow(config(tmp_path, weeks["week1"], promote_margin=1.0), str(weeks["week2"]))
    warm = second["warm_start"]
    assert (warm["from_run"], warm["enqueued"]) == (first["run_id"], 3) and 1 <= warm["rung"]["trials"] <= 3
    # Priors: last week's results (5 trials, 6 trial-rungs) and this week's warm rung (its full-budget trials).
    assert warm["priors"] == first["sweep"]["trials"] + 1 + warm["rung"]["trials"] and warm["last_best"] == first["sweep"]["best_score"]
    assert warm["priors_from"] == "optuna"  # read back from last week's Optuna studies, not the registry's copy
    assert warm["target"] == pytest.approx(warm["last_best"] - 0.005)
    assert warm["stable"] == (warm["rung"]["best_score"] >= warm["target"]) and (warm["stable"] or warm["rung"]["trials"] == 3)
    ev = second["evaluation"]
    assert ev["champion_version"] == "v0001" and ev["champion"] is not None and ev["held_out_rows"] > 50
    assert second["decision"]["promoted"] is False and "not above margin 1" in second["decision"]["reason"]
    registry = ModelRegistry(str(tmp_path / "registry"))
    assert registry.versions("cancer") == ["v0001", "v0002"] and registry.production("cancer") == "v0001"
    stored = registry.get_json("cancer", "runs", second["run_id"])
    assert stored["spent"] == second["spent"] and stored["evaluation"]["challenger"] == ev["challenger"]
    assert stored["spent"]["gpu_hours"] == pytest.approx(
        warm["rung"]["gpu_hours"] + stored["sweep"]["gpu_hours"] + stored["retrain"]["gpu_hours"]
        + (stored["sweep"]["unused_refit"] or {}).get("gpu_hours", 0.0))
    # The decision is on the Prefect server as a markdown artifact.
    artifacts = {a["key"]: a for a in httpx.post(f"{prefect_server}/artifacts/latest/filter", json={}).json()}
    assert artifacts["cancer-retrain"]["type"] == "markdown" and second["run_id"] in artifacts["cancer-retrain"]["data"]

    # A corrupt production artifact is refused; the next run says so and promotes its challenger.
    weights = next((tmp_path / "registry/models/cancer/v0001/files").glob("model.skops"))
    weights.write_bytes(b"not the model")
    with pytest.raises(CorruptArtifact, match="does not match its SHA-256"):
        registry.load_model("cancer")
    third = retrain_flow(config(tmp_path, weeks["week2"], promote_margin=1.0))
    assert "does not match its SHA-256" in third["evaluation"]["champion_error"]
    assert third["decision"]["promoted"] and registry.production("cancer") == "v0003"


def mlp_config(root: Path, source: Path, registry: Path) -> dict:
    return {
        "name": "cancer-mlp", "data": {"source": str(source), "label": "target"},
        "registry": str(registry), "run_root": str(root / "runs"),
        "warm_start": {"top_k": 3, "tolerance": 0.05, "stable_budget_fraction": 0.5},
        "sweep": {"trainable": {"kind": "torch_mlp"}, "search": {"algorithm": "tpe", "seed": 0, "num_trials": 4},
                  "scheduler": {"kind": "fifo", "min_budget": 3, "max_budget": 3},
                  "budget": {"max_gpu_hours": 1.0, "price_per_gpu_hour": 2.0},
                  "runtime": {"kind": "thread", "max_concurrent": 2, "gpus_per_trial": 1.0}},
    }


def _trial_configs(run_dir: str) -> list[dict]:
    result = json.loads((Path(run_dir) / "result.json").read_text())
    return [result["trials"][t] for t in sorted(result["trials"])]


def test_warm_rung_stops_at_last_weeks_quality_on_a_stable_week_and_a_drifted_week_searches(
        prefect_server: str, tmp_path: Path, weeks) -> None:
    """Stable week (the same table again): last week's best, retrained, reaches its quality at once; the sweep
    only explores with half the last search's GPU-hours. Drifted week (labels shuffled): all three tried, full sweep."""
    drifted = tmp_path / "drifted.csv"
    frame = pd.read_csv(weeks["week1"])
    frame["target"] = frame["target"].sample(frac=1.0, random_state=0).to_numpy()
    frame.to_csv(drifted, index=False)
    first = retrain_flow(mlp_config(tmp_path, weeks["week1"], tmp_path / "registry"))
    shutil.copytree(tmp_path / "registry", tmp_path / "registry-drift")
    registry = ModelRegistry(str(tmp_path / "registry"))
    study = registry.get_json("cancer-mlp", "studies", first["study"])
    full = [o for o in study["observations"] if o["budget"] == 3 and o["score"] is not None]
    ranked = warm_start_from(registry, "cancer-mlp", first, 3, "max")["enqueue"]

    stable = retrain_flow(mlp_config(tmp_path, weeks["week1"], tmp_path / "registry"))
    warm = stable["warm_start"]
    assert warm["stable"] and warm["rung"]["stop_reason"] == "target_score"
    assert warm["target"] == pytest.approx(max(o["score"] for o in full) - 0.05)
    # Best first, one at a time, and nothing after the first configuration that reached the target.
    rung = json.loads((Path(warm["rung"]["run_dir"]) / "result.json").read_text())
    completed = [e for e in rung["events"] if e["status"] == "completed"]
    assert [e["score"] >= warm["target"] for e in completed] == [False] * (len(completed) - 1) + [True]
    assert _trial_configs(warm["rung"]["run_dir"])[:len(completed)] == ranked[:len(completed)]
    assert warm["rung"]["trials"] == len(completed) and warm["reference_gpu_hours"] == first["sweep"]["gpu_hours"]
    assert not (Path(warm["rung"]["run_dir"]) / "best_model").exists()  # refitted only if it wins the week
    assert stable["sweep"]["max_gpu_hours"] == pytest.approx(0.5 * first["sweep"]["gpu_hours"]) == warm["explore_gpu_hours"]
    assert stable["sweep"]["full_max_gpu_hours"] == 1.0
    artifacts = {a["key"]: a for a in httpx.post(f"{prefect_server}/artifacts/latest/filter", json={}).json()}
    assert "stable: the sweep only explored" in artifacts["cancer-mlp-retrain"]["data"]

    drift = retrain_flow(mlp_config(tmp_path, drifted, tmp_path / "registry-drift"))
    warm = drift["warm_start"]
    assert not warm["stable"] and warm["rung"]["trials"] == 3 and warm["rung"]["stop_reason"] == "schedule_complete"
    assert _trial_configs(warm["rung"]["run_dir"]) == ranked[:3]
    assert drift["sweep"]["max_gpu_hours"] == 1.0 and warm["explore_gpu_hours"] is None
    assert warm["reference_gpu_hours"] == drift["sweep"]["gpu_hours"]  # a full search: next week's yardstick
    # Last week's configurations were trained this week already: priors for the sweep, not trials again.
    assert not [c for c in _trial_configs(drift["sweep"]["run_dir"]) if c in ranked[:3]]
    assert warm["priors"] == len(study["observations"]) + 3


def test_promotion_rule() -> None:
    base = {"champion_version": "v0001", "champion_error": None}
    assert decide({**base, "challenger": 0.95, "champion": 0.94}, 0.005)[0]
    assert not decide({**base, "challenger": 0.944, "champion": 0.94}, 0.005)[0]
    assert not decide({**base, "challenger": 0.94, "champion": 0.94}, 0.0)[0]
    assert decide({"champion_version": None, "challenger": 0.5, "champion": None}, 0.1) == (True, "no production model yet")


@pytest.mark.parametrize("case, expected", [
    ("missing", "file does not exist"),
    ("malformed", "malformed CSV"),
    ("empty", "the table is empty"),
    ("new_column", "the schema changed since run"),
])
def test_bad_input_fails_the_run_with_one_line_and_records_nothing(last_week: Path, tmp_path: Path, weeks,
                                                                    case: str, expected: str) -> None:
    registry = ModelRegistry(str(last_week / "registry"))
    runs_before = registry.keys("cancer", "runs")
    source = tmp_path / "nope.csv" if case == "missing" else weeks[case]
    message = _failed_message(retrain_flow, config(last_week, source))
    assert expected in message and "\n" not in message
    if case == "new_column":
        assert "new columns ['extra']" in message and "missing columns ['mean area']" in message
    assert registry.keys("cancer", "runs") == runs_before and registry.production("cancer") == "v0001"


def test_retrain_on_s3_data_and_registry_rides_out_an_outage(prefect_server: str, s3_server, tmp_path: Path, weeks) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="rungflow-weekly")
    client.put_object(Bucket="rungflow-weekly", Key="data/week1.csv", Body=weeks["week1"].read_bytes())
    registry_url = s3_server.url("rungflow-weekly", "registry", read_timeout=1, outage_seconds=30)
    cfg = config(tmp_path, "s3://rungflow-weekly/data/week1.csv", registry=registry_url)
    # The server stops for 3 s while the run is under way; the registry's writes back off and land.
    s3_server.pause()
    timer = threading.Timer(3.0, s3_server.resume)
    timer.start()
    try:
        record = retrain_flow(cfg)
    finally:
        timer.join()
        s3_server.resume()
    assert record["decision"]["promoted"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="rungflow-weekly", Prefix="registry/")["Contents"]]
    assert f"registry/models/cancer/runs/{record['run_id']}.json" in keys
    assert json.loads(client.get_object(Bucket="rungflow-weekly", Key="registry/models/cancer/production.json")
                      ["Body"].read())["version"] == "v0001"
    assert ModelRegistry(registry_url).load_model("cancer").family == "linear"
