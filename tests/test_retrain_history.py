"""The weekly retrain's warm start is the history: last week's run read by the history reader, studies or registry copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rungflow.config import ConfigError, validate
from rungflow.flows.retrain import (
    last_week_history,
    load_retrain_config,
    markdown_of,
    retrain_flow,
    warm_start_from,
    with_history,
)
from rungflow.tasks.history import HistoryError, load_history, prior_for
from rungflow.tasks.registry import ModelRegistry
from tests.conftest import sweep_config


@pytest.mark.parametrize(("history", "says"), [
    ({"retrain_runs": ["cancer/latest"]}, "registry is needed with retrain_runs"),
    ({"registry": "registry"}, "retrain_runs is needed with registry"),
    ({"registry": "registry", "retrain_runs": ["cancer"]}, "history.retrain_runs = ['cancer']: 'cancer' is not NAME/RUN_ID"),
    ({"runs": ["a"], "model": "every"}, "history.model = 'every'"),
])
def test_the_retrain_source_and_model_all_are_checked_in_one_line(tmp_path: Path, history: dict[str, Any],
                                                                   says: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(sweep_config(tmp_path, history=history))
    assert says in str(err.value) and "\n" not in str(err.value)
    assert validate(sweep_config(tmp_path, history={"registry": "r", "retrain_runs": "cancer/latest",
                                                    "model": "all"})).history.retrain_runs == ["cancer/latest"]


def test_a_retrain_sweep_takes_no_history_section_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_retrain_config(config(tmp_path, tmp_path / "week.csv", history={"runs": ["runs/old"]}))
    assert "sweep: has a history: section" in str(err.value) and "\n" not in str(err.value)


def config(root: Path, source: Path, **sweep_extra: Any) -> dict[str, Any]:
    return {
        "name": "cancer", "data": {"source": str(source), "label": "target"},
        "registry": str(root / "registry"), "run_root": str(root / "runs"),
        "warm_start": {"top_k": 1, "tolerance": 0.5},
        "sweep": {"trainable": {"kind": "linear"}, "search": {"algorithm": "tpe", "seed": 0, "num_trials": 3},
                  "scheduler": {"kind": "fifo", "min_budget": 20, "max_budget": 20},
                  "budget": {"max_gpu_hours": 1.0}, "runtime": {"kind": "thread", "max_concurrent": 1}, **sweep_extra},
    }


@pytest.fixture(scope="module")
def two_weeks(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """Two retrain weeks on two different files (so on two tasks by fingerprint: the table changed)."""
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("retrain-history")
    frame = load_breast_cancer(as_frame=True).frame
    frame.iloc[:400].to_csv(root / "week1.csv", index=False)
    frame.iloc[150:].to_csv(root / "week2.csv", index=False)
    first = retrain_flow(config(root, root / "week1.csv"))
    second = retrain_flow(config(root, root / "week2.csv"))
    return root, first, second


@pytest.mark.slow
def test_week_two_sweep_reads_week_one_through_the_history_reader(two_weeks: tuple[Path, dict, dict]) -> None:
    root, first, second = two_weeks
    warm = second["warm_start"]
    assert warm["history"] == {"registry": str((root / "registry").resolve()), "retrain_runs": [f"cancer/{first['run_id']}"],
                               "model": "all", "portfolio": 0, "runs": [str(Path(warm["rung"]["run_dir"]).resolve())]}
    got = json.loads((Path(second["sweep"]["run_dir"]) / "result.json").read_text())["history"]
    by_kind = {s["kind"]: s for s in got["sources"]}
    assert len(got["sources"]) == 2 and got["sweeps"] == 2
    last_week, rung = by_kind["retrain"], by_kind["run"]
    # Last week's table was another file, so another task by fingerprint; model: all still feeds its results.
    assert (last_week["kind"], last_week["name"], last_week["read_from"]) == ("retrain", f"cancer/{first['run_id']}", "optuna")
    assert last_week["same_task"] is False and last_week["trials"] == first["sweep"]["trials"]
    assert rung["kind"] == "run" and rung["same_task"] is True and rung["trials"] == warm["rung"]["trials"]
    assert got["model_observations"] == warm["priors"] == first["sweep"]["trials"] + warm["rung"]["trials"]
    assert got["portfolio_trials"] == [] and got["prior"]["verdict"] == "kept" and warm["priors_from"] == "optuna"
    assert f"from {first['run_id']} as the sweep's history, {warm['priors']} priors (read from optuna)" in markdown_of(second)


@pytest.mark.slow
def test_where_last_weeks_studies_are_gone_the_registry_copy_is_the_history(two_weeks: tuple[Path, dict, dict]) -> None:
    root, first, second = two_weeks
    cfg = load_retrain_config(config(root, root / "week2.csv"))
    sweep = with_history(cfg.sweep_config(cfg.data_spec(), root / "next", "next"), last_week_history(cfg, second))
    registry = ModelRegistry(str(root / "registry"))
    copy = registry.get_json("cancer", "studies", second["study"])
    databases = [Path(s["url"].removeprefix("sqlite:///")) for s in second["optuna"]["studies"]]
    assert len(databases) == 2 and all(d.is_file() for d in databases)  # the warm rung's study and the sweep's
    assert load_history(sweep).sources[0]["read_from"] == "optuna"
    databases[1].unlink()
    history = load_history(sweep)
    assert history.sources[0]["read_from"] == "registry" and not databases[1].exists()  # no empty database made
    assert len(history.sweeps[0].observations) == len(copy["observations"])
    prior = prior_for(sweep, root / "next")
    assert prior["summary"]["model_observations"] == len(copy["observations"]) and prior["portfolio"] == []
    assert warm_start_from(registry, "cancer", second, 1, "max")["source"] == "registry"
    # A space that grew a parameter no longer fits last week's run: one line (the retrain then starts cold).
    grown = {**sweep.model_dump(mode="json"), "space": {"C": {"type": "float", "low": 0.001, "high": 1000.0, "log": True},
                                                        "l1_ratio": {"type": "float", "low": 0.0, "high": 1.0}}}
    with pytest.raises(HistoryError, match=r"the registry's copy: has no parameter 'l1_ratio' of this sweep's space"):
        load_history(validate(grown))
    with pytest.raises(HistoryError, match=r"history.retrain_runs\[0\] = 'cancer/nope': no run 'nope' of 'cancer'"):
        load_history(with_history(sweep, {**last_week_history(cfg, second), "retrain_runs": ["cancer/nope"]}))


@pytest.mark.slow
def test_a_retrain_run_in_an_s3_registry_is_read_from_its_copy_there(two_weeks: tuple[Path, dict, dict], s3_server: Any) -> None:
    root, first, _ = two_weeks
    client = s3_server.client()
    client.create_bucket(Bucket="retrain-history")
    for kind in ("runs", "studies"):
        local = root / "registry/models/cancer" / kind / f"{first['run_id']}.json"
        client.put_object(Bucket="retrain-history", Key=f"registry/models/cancer/{kind}/{local.name}", Body=local.read_bytes())
    (database,) = [Path(s["url"].removeprefix("sqlite:///")) for s in first["optuna"]["studies"]]
    database.unlink(missing_ok=True)  # week 1's one study (no warm rung in a first week) is gone: the copy on S3 it is
    cfg = load_retrain_config(config(root, root / "week2.csv"))
    history = {"registry": s3_server.url("retrain-history", "registry"), "retrain_runs": ["cancer/latest"], "model": "all"}
    read = load_history(with_history(cfg.sweep_config(cfg.data_spec(), root / "s3", "s3"), history))
    copy = json.loads((root / "registry/models/cancer/studies" / f"{first['run_id']}.json").read_text())
    assert read.sources[0]["name"] == f"cancer/{first['run_id']}" and read.sources[0]["read_from"] == "registry"
    assert read.sources[0]["source"].startswith("s3://retrain-history/registry run ")
    assert len(read.sweeps[0].observations) == len(copy["observations"]) == first["sweep"]["trials"]
