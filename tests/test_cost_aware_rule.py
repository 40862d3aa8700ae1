"""``search.cost_aware: auto``: the rule resolves as docs/automl.md says, before anything is spent, and says why.

Real configs validated as a user's are; one real AutoML run (breast_cancer, thread runtime, a few seconds, a real
Prefect server) for what result.json and the benchmark harness read back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rungflow.config import ConfigError, validate
from rungflow.flows.automl import COST_AWARE, automl_config
from rungflow.flows.cli import main
from tests.conftest import sweep_config


def _mixed(tmp_path: Path, families: list[str], **search: object) -> dict:
    data = {"source": "sklearn:breast_cancer"}
    return sweep_config(tmp_path, trainable={"kind": "mixed", "options": {"data": data, "families": families}},
                        search={"algorithm": "bohb", **search})


def _table() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    return frame


def test_auto_is_on_where_the_space_chooses_among_families_and_off_elsewhere(tmp_path: Path) -> None:
    several = validate(_mixed(tmp_path, ["hgb", "linear"], cost_aware="auto")).search
    assert several.cost_aware is True
    assert several.cost_aware_reason == ("search.cost_aware: auto -> on: the space chooses among 2 model families, "
                                         "whose costs per budget unit differ")
    one = validate(_mixed(tmp_path, ["hgb"], cost_aware="auto")).search
    assert one.cost_aware is False and "one model family" in one.cost_aware_reason
    single_family = validate(sweep_config(tmp_path, trainable={"kind": "hgb", "options": {"data": {
        "source": "sklearn:breast_cancer"}}}, search={"algorithm": "tpe", "cost_aware": "auto"})).search
    assert single_family.cost_aware is False
    # Random search has nothing to rank by cost: auto is off there, where an explicit true is refused.
    random = validate(_mixed(tmp_path, ["hgb", "linear"], cost_aware="auto", algorithm="random")).search
    assert random.cost_aware is False and "random search has no acquisition" in random.cost_aware_reason
    # An explicit setting is kept as written, and says so.
    assert validate(_mixed(tmp_path, ["hgb", "linear"], cost_aware=False)).search.cost_aware_reason == (
        "search.cost_aware: false in the config")
    # config.json keeps auto as written, and validating it again resolves it the same way, reason and all.
    saved = validate(_mixed(tmp_path, ["hgb", "linear"], cost_aware="auto")).model_dump(mode="json")
    assert saved["search"]["cost_aware"] == "auto"
    assert validate(saved).search.cost_aware_reason == several.cost_aware_reason


@pytest.mark.parametrize("value", ["sometimes", 2, None])
def test_a_bad_value_fails_in_one_line_naming_the_field(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(_mixed(tmp_path, ["hgb", "linear"], cost_aware=value))
    line = str(caught.value)
    assert line.startswith("search.cost_aware = ") and "must be true, false or auto" in line and "\n" not in line
    with pytest.raises(ConfigError, match=r"^search.cost_aware = 'yes please': must be true, false or auto"):
        automl_config(_table(), "diagnosis", cost_aware="yes please", out=tmp_path / "refused")


def test_the_automl_default_resolves_as_documented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "automl.md").read_text()
    assert f"`search.cost_aware: {str(COST_AWARE).lower()}`" in docs
    search = automl_config(_table(), "diagnosis", out=tmp_path / "run").config.search
    assert search.cost_aware is (COST_AWARE is True or COST_AWARE == "auto")
    one = automl_config(_table(), "diagnosis", families=["hgb"], out=tmp_path / "one").config.search
    assert one.cost_aware is (COST_AWARE is True)
    # rungflow plan says which and why.
    config = tmp_path / "sweep.yaml"
    config.write_text(json.dumps(_mixed(tmp_path, ["hgb", "linear"], cost_aware="auto")))
    assert main(["plan", str(config)]) == 0
    assert "search.cost_aware: auto -> on" in " ".join(capsys.readouterr().out.split())


def test_an_automl_run_records_the_choice_and_its_families(prefect_server: str, tmp_path: Path) -> None:
    import rungflow
    from bench.automl import families_of, gpu_hours_to_best
    from bench.automl_report import family_mix

    run = tmp_path / "run"
    rungflow.automl(_table(), label="diagnosis", time_limit=4, runtime="thread", families=["hgb", "linear"], out=run,
                    cost_aware="auto")
    result = json.loads((run / "result.json").read_text())
    assert result["search"]["cost_aware"] is True and "2 model families" in result["search"]["cost_aware_reason"]
    families = families_of(run)
    assert set(families) <= {"hgb", "linear"}
    assert sum(f["trials"] for f in families.values()) == len(result["trials"])
    billed = sum(f["gpu_seconds"] for f in families.values())
    assert billed == pytest.approx(result["ledger"]["gpu_hours"] * 3600, rel=1e-6)
    to_best = gpu_hours_to_best(result["anytime"])
    assert to_best is not None and 0 < to_best <= result["ledger"]["gpu_hours"] + 1e-12
    mix = family_mix([{"system": "rungflow", "families": families}], ["rungflow"])
    assert mix is not None and sum(f["trial_share"] for f in mix["rungflow"]["families"].values()) == pytest.approx(1.0)


def test_rungflow_automl_takes_cost_aware_from_the_command_line(prefect_server: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "cancer.csv"
    _table().to_csv(table, index=False)
    run = tmp_path / "cli-run"
    assert main(["automl", str(table), "--label", "diagnosis", "--time-limit", "3", "--runtime", "thread",
                 "--families", "hgb,linear", "--cost-aware", "auto", "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["search"]["cost_aware"] is True and "2 model families" in result["search"]["cost_aware_reason"]
    assert main(["automl", str(table), "--label", "diagnosis", "--cost-aware", "maybe", "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no").exists()
    assert "--cost-aware: invalid choice: 'maybe'" in capsys.readouterr().err
