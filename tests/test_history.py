"""history:: earlier sweeps' run directories and Optuna studies as a prior; every unusable source is one line first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest

from rungflow.budgets.prior import PastSweep, build_prior, greedy_portfolio, incumbent_trials, utilities
from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import SearchSpace
from rungflow.config import ConfigError, validate
from rungflow.tasks.history import HistoryError, load_history, prior_for
from tests.conftest import sweep_config

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0, "high": 1.0}}


def _config(tmp_path: Path, history: dict[str, Any] | None, **overrides: Any):
    return validate(sweep_config(tmp_path, name="new-sweep", space=SPACE, history=history, **overrides))


# --- the section ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("history", "says"), [
    ({}, "history: no source; give runs"),
    ({"optuna_url": "sqlite:///x.db"}, "studies is needed with optuna_url"),
    ({"studies": "all"}, "optuna_url is needed with studies"),
    ({"runs": ["a"], "portfolio": 100}, "history.portfolio = 100: must be between 0 and 64"),
    ({"runs": [""]}, "history.runs = ['']: an empty entry"),
    ({"runs": ["a"], "model": "always"}, "history.model = 'always'"),
    ({"runs": ["a"], "model_prior": "on"}, "history.model_prior = 'on': Input should be 'auto' or 'off'"),
    ({"runs": ["a"], "pickles": True}, "history.pickles = True: unknown field"),
])
def test_the_section_is_checked_in_one_line(tmp_path: Path, history: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, history)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_without_history_nothing_is_read_and_nothing_changes(tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path))
    assert cfg.history is None and load_history(cfg) is None and prior_for(cfg, tmp_path) is None
    assert validate(sweep_config(tmp_path, history={"runs": "runs/a-*"})).history.runs == ["runs/a-*"]


# --- the pure prior ---------------------------------------------------------------------------------

def _sweep(name: str, best: tuple[float, float], n: int = 30, mode: str = "max", same_task: bool = False) -> PastSweep:
    import numpy as np

    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    obs = []
    for i in range(n):
        x, y = rng.uniform(size=2)
        score = -((x - best[0]) ** 2 + (y - best[1]) ** 2)
        obs.append(Observation(f"t{i}", {"x": float(x), "y": float(y)}, 9.0, score if mode == "max" else -score))
    return PastSweep(name, tuple(obs), mode, same_task)  # type: ignore[arg-type]


def test_utilities_put_survivors_above_what_the_gate_stopped_and_honour_the_mode() -> None:
    obs = [Observation("a", {"x": 0.1}, 1, 0.9), Observation("b", {"x": 0.2}, 1, 0.5), Observation("b", {"x": 0.2}, 3, 0.6),
           Observation("c", {"x": 0.3}, 1, None)]
    u = utilities(obs, "max")
    assert u["b"][1] > u["a"][1] and "c" not in u  # b reached rung 3 despite a's better rung-1 score; c failed
    assert utilities([Observation("a", {}, 1, 1.0), Observation("b", {}, 1, 2.0)], "min")["a"][1] == 1.0


def test_the_portfolio_covers_sweeps_whose_optima_differ_and_is_bounded() -> None:
    space = SearchSpace.from_dict(SPACE)
    sweeps = [_sweep("a", (0.1, 0.1)), _sweep("b", (0.1, 0.1)), _sweep("c", (0.9, 0.9))]
    portfolio = greedy_portfolio(space, sweeps, 2)
    assert len(portfolio) == 2
    near = lambda c, p: abs(c["x"] - p[0]) < 0.25 and abs(c["y"] - p[1]) < 0.25  # noqa: E731
    assert near(portfolio[0], (0.1, 0.1)) and near(portfolio[1], (0.9, 0.9))  # the majority first, then the other
    assert greedy_portfolio(space, sweeps, 0) == []


def test_only_the_same_tasks_results_feed_the_model() -> None:
    space = SearchSpace.from_dict(SPACE)
    prior = build_prior(space, [_sweep("a", (0.1, 0.1), same_task=True), _sweep("b", (0.9, 0.9))], portfolio_size=3)
    assert {o.trial_id.split("/")[0] for o in prior.model_observations} == {"a"} and len(prior.portfolio) <= 3
    assert build_prior(space, [_sweep("a", (0.1, 0.1), same_task=True)], portfolio_size=1, model=False).model_observations == []


def test_incumbents_follow_the_highest_budget() -> None:
    events = [{"trial_id": "a", "budget": 1, "score": 0.5}, {"trial_id": "b", "budget": 1, "score": 0.7},
              {"trial_id": "a", "budget": 3, "score": 0.6}, {"trial_id": "c", "budget": 1, "score": 0.9}]
    assert incumbent_trials(events, "max") == ["a", "b", "a"]


# --- run directories written by a real sweep ------------------------------------------------------------

@pytest.fixture(scope="module")
def earlier_run(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rungflow.flows.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("earlier")
    cfg = validate(sweep_config(tmp, name="earlier", space=SPACE))
    run_sweep(cfg, tmp / "run", refit=False)
    return tmp / "run"


def _copy(run: Path, dest: Path, edit: str | None = None, change: Any = None) -> Path:
    shutil.copytree(run, dest)
    if edit is not None:
        path = dest / edit
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return dest


def test_a_real_sweeps_run_directory_is_read_as_history(earlier_run: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"runs": [str(earlier_run.parent / "r*")], "portfolio": 3})
    history = load_history(cfg, cfg.run_dir())
    assert history is not None and len(history.sweeps) == 1
    summary = history.summary()
    assert summary["trials"] == 17 and summary["same_task"] == 1  # noop, same options: the same task
    prior = prior_for(cfg, cfg.run_dir())
    assert prior is not None and len(prior["portfolio"]) >= 1 and prior["summary"]["model_observations"] == 22
    best = json.loads((earlier_run / "result.json").read_text())["best"]["config"]
    assert prior["portfolio"][0] == best  # the earlier sweep's winner is proposed first


def test_a_narrower_range_leaves_values_out_and_says_so(earlier_run: Path, tmp_path: Path) -> None:
    narrow = {"x": {"type": "float", "low": 0.0, "high": 0.5}, "y": SPACE["y"]}
    cfg = validate(sweep_config(tmp_path, space=narrow, history={"runs": [str(earlier_run)]}))
    history = load_history(cfg)
    assert history is not None and any("outside this sweep's ranges left out" in n for n in history.notes)
    assert all(o.config["x"] <= 0.5 for s in history.sweeps for o in s.observations)


@pytest.mark.parametrize(("edit", "change", "says"), [
    ("config.json", lambda d: d["space"].pop("y"), "has no parameter 'y' of this sweep's space"),
    ("config.json", lambda d: d["space"].update(y={"type": "int", "low": 0, "high": 3}), "'y' is int there and float here"),
    ("result.json", lambda d: d["metric"].update(mode="min"), "optimised 'score' (min) and this sweep optimises 'score' (max)"),
    ("result.json", lambda d: d["metric"].update(name="loss"), "optimised 'loss'"),
])
def test_an_unusable_run_fails_before_spending_naming_it(earlier_run: Path, tmp_path: Path, edit: str, change: Any,
                                                         says: str) -> None:
    run = _copy(earlier_run, tmp_path / "bad", edit, change)
    cfg = _config(tmp_path, {"runs": [str(run)]})
    with pytest.raises(HistoryError) as err:
        prior_for(cfg, cfg.run_dir())
    assert says in str(err.value) and str(run) in str(err.value) and "\n" not in str(err.value)
    assert not cfg.run_dir().exists()


def test_a_missing_or_unreadable_run_is_named(earlier_run: Path, tmp_path: Path) -> None:
    for runs, says in (([str(tmp_path / "nope")], "no such run directory"), ([str(tmp_path / "nope-*")], "matches no directory")):
        with pytest.raises(HistoryError, match=says):
            load_history(_config(tmp_path, {"runs": runs}))
    run = _copy(earlier_run, tmp_path / "half")
    (run / "result.json").unlink()
    with pytest.raises(HistoryError, match=r"result.json is missing, so this is not a finished rungflow run directory"):
        load_history(_config(tmp_path, {"runs": [str(run)]}))



def _billed(run: Path, dest: Path, gpu_seconds_per_unit: float) -> Path:
    """A copy of ``run`` whose ledger bills each result ``gpu_seconds_per_unit`` per budget unit trained."""
    shutil.copytree(run, dest)
    lines = []
    for line in (dest / "ledger.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "spend":
            entry["record"]["gpu_seconds"] = gpu_seconds_per_unit * float(entry["record"].get("budget_trained") or 0.0)
        lines.append(json.dumps(entry))
    (dest / "ledger.jsonl").write_text("\n".join(lines) + "\n")
    return dest


def test_plan_names_the_history_and_the_gpu_hours_it_expects_with_and_without_it(earlier_run: Path,
                                                                                  tmp_path: Path) -> None:
    from rungflow.flows.cli_plan import history_plan_line

    runs = [_billed(earlier_run, tmp_path / f"week{i}", 360.0) for i in (1, 2)]
    cfg = _config(tmp_path, {"runs": [str(r) for r in runs], "portfolio": 2})
    line = history_plan_line(cfg)
    expected = json.loads(json.dumps(prior_for(cfg, cfg.run_dir())["summary"]["expected"]))
    # The same sweep twice: each one's portfolio is the other's winner, near-best by the end of the first bracket.
    assert expected["sweeps"] == 2 and expected["hits"] == 2
    assert 0 < expected["prior_gpu_hours"] <= expected["cold_gpu_hours"]
    assert line.startswith("history: 2 earlier sweeps (earlier, earlier), 34 trials, 1 task (2 of the same task)")
    assert "a model of 2 sweeps' results proposes 50% of the new trials at first" in line
    assert (f"expected: near-best after {expected['cold_gpu_hours']:.4g} GPU-hours cold (median of 2 earlier sweeps), "
            f"{expected['prior_gpu_hours']:.4g} with this history") in line
    one = history_plan_line(_config(tmp_path, {"runs": [str(earlier_run)]}))
    assert "with the history: no estimate, it needs two earlier sweeps with ledgers" in one

def test_the_portfolio_runs_first_in_a_real_sweep_and_result_json_says_what_it_gave(
        prefect_server: str, earlier_run: Path, tmp_path: Path) -> None:
    from rungflow.flows.cli_render import summary_lines
    from rungflow.flows.sweep import run_sweep

    flipped = _copy(earlier_run, tmp_path / "flipped")  # another task's sweep: its worst is its best
    lines = []
    for line in (flipped / "ledger.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "spend" and entry["record"].get("score") is not None:
            entry["record"]["score"] = -entry["record"]["score"]
        lines.append(json.dumps(entry))
    (flipped / "ledger.jsonl").write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, {"runs": [str(earlier_run), str(flipped)], "portfolio": 2})
    result = run_sweep(cfg, cfg.run_dir(), refit=False)
    saved = json.loads((cfg.run_dir() / "history.json").read_text())
    h = result["history"]
    assert len(saved["portfolio"]) == 2 and h["portfolio"] == saved["portfolio"]
    # The portfolio runs beside the searcher's own draws, in the first bracket's last slots (of nine), in its order.
    # (Later trials may hold the same configurations: this sweep's random search has the earlier sweep's seed.)
    taken = h["portfolio_trials"]
    assert taken[:2] == ["t0007", "t0008"] and [result["trials"][t] for t in taken[:2]] == saved["portfolio"]
    assert h["sweeps"] == 2 and h["trials"] == 34
    assert 0 <= h["incumbents_from_portfolio"] <= h["incumbents"]
    line = next(x for x in summary_lines(result) if x.startswith("history:"))
    assert f"2 earlier sweeps (34 trials, 1 task); {len(taken)} portfolio configs tried beside the searcher's own" in line
    from rungflow.tasks.artifacts import summary_markdown

    assert "**History:** 2 earlier sweeps" in summary_markdown(result)
    # The earlier sweep's winner leads this task's first rung: the prior is kept, and every view says why.
    assert h["prior"]["verdict"] == "kept" and h["prior"]["budget"] == 1.0 and h["prior"]["cold_trials"] >= 3
    assert "the prior was kept: its best configuration scored" in line and "the prior was kept" in summary_markdown(result)
    # The model of the two sweeps proposed part of the new trials; what it proposed and its share are said.
    share = h["model_prior_share"]
    assert saved["summary"]["model_prior_sweeps"] == 2 and share["sweeps"] == 2 and share["trials_from_prior"] > 0
    assert share["trials_from_prior"] + share["trials_from_searcher"] + len(taken) == len(result["trials"])
    assert f"the model of 2 earlier sweeps proposed {share['trials_from_prior']} trials" in line


def test_a_misleading_prior_is_dropped_and_the_search_goes_on_cold(prefect_server: str, earlier_run: Path,
                                                                    tmp_path: Path) -> None:
    from rungflow.flows.cli_render import summary_lines
    from rungflow.flows.sweep import run_sweep

    # The same sweep with every score turned upside down, all at one budget so that no rung it reached vouches
    # for a trial: its worst configuration looks best.
    flipped = _copy(earlier_run, tmp_path / "flipped")
    lines = []
    for line in (flipped / "ledger.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "spend" and entry["record"].get("score") is not None:
            entry["record"]["score"], entry["record"]["budget"] = -entry["record"]["score"], 9.0
        lines.append(json.dumps(entry))
    (flipped / "ledger.jsonl").write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, {"runs": [str(flipped)], "portfolio": 3},
                  search={"algorithm": "bohb", "seed": 0, "min_points_in_model": 3})
    result = run_sweep(cfg, cfg.run_dir(), refit=False)
    h = result["history"]
    assert len(h["portfolio_trials"]) == 1 and h["prior"]["verdict"] == "dropped"  # one sweep: a portfolio of one
    assert h["prior"]["portfolio_best"] < h["prior"]["cold_best"]
    line = next(x for x in summary_lines(result) if x.startswith("history:"))
    assert "the prior was dropped: its best configuration scored" in line and "the search went on cold" in line


# --- Optuna studies --------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _study(url: str, name: str, best: float, *, direction: str = "maximize", metric: str | None = "score",
           y: Any = None, n: int = 12) -> None:
    study = optuna.create_study(storage=url, study_name=name, direction=direction)
    if metric is not None:
        study.set_metric_names([metric])
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0),
             "y": y or optuna.distributions.FloatDistribution(0.0, 1.0)}
    for i in range(n):
        x = i / (n - 1)
        params = {"x": x, "y": 0 if isinstance(y, optuna.distributions.IntDistribution) else 0.5}
        value = -abs(x - best)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                                  intermediate_values={1: value - 0.1, 3: value}))


@pytest.fixture()
def storage(tmp_path: Path) -> str:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'team.db'}"
    _study(url, "week-1", 0.2)
    _study(url, "week-2", 0.8)
    _study(url, "other-space", 0.5, y=optuna.distributions.IntDistribution(0, 3))
    _study(url, "loss-study", 0.5, direction="minimize", metric="loss")
    return url


def test_named_studies_and_all_studies_of_the_same_space(storage: str, tmp_path: Path) -> None:
    named = load_history(_config(tmp_path, {"optuna_url": storage, "studies": ["week-1", "week-2"]}))
    assert named is not None and [s.name for s in named.sweeps] == ["week-1", "week-2"]
    # intermediate values at steps 1 and 3 plus nothing else: two results per trial
    assert named.summary()["trials"] == 24 and len(named.sweeps[0].observations) == 24
    every = load_history(_config(tmp_path, {"optuna_url": storage, "studies": "all"}))
    assert every is not None and {s.name for s in every.sweeps} == {"week-1", "week-2"}
    assert {"study other-space: another space, left out", "study loss-study: another metric or mode, left out"} <= set(every.notes)
    prior = prior_for(_config(tmp_path, {"optuna_url": storage, "studies": "all", "portfolio": 2}), tmp_path / "x")
    assert prior is not None and {round(c["x"], 2) for c in prior["portfolio"]} == {0.18, 0.82}


@pytest.mark.parametrize(("studies", "says"), [
    (["week-3"], "history.studies: no study 'week-3' in sqlite:"),
    (["other-space"], "parameter 'y' is int there and float here"),
    (["loss-study"], "it minimised 'loss' and this sweep maximises 'score'"),
])
def test_an_unusable_study_is_one_line(storage: str, tmp_path: Path, studies: list[str], says: str) -> None:
    with pytest.raises(HistoryError) as err:
        load_history(_config(tmp_path, {"optuna_url": storage, "studies": studies}))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no such SQLite file"):
        load_history(_config(tmp_path, {"optuna_url": f"sqlite:///{tmp_path / 'typo.db'}", "studies": "all"}))
    assert not (tmp_path / "typo.db").exists()


def test_a_postgresql_storage_of_several_sweeps_with_its_password_redacted(postgres: Any, tmp_path: Path) -> None:
    postgres.create_database("history")
    url = postgres.url("history", driver="postgresql+psycopg")
    _study(url, "digits-w1", 0.3)
    _study(url, "digits-w2", 0.35)
    _study(url, "digits-w3", 0.9)
    prior = prior_for(_config(tmp_path, {"optuna_url": url, "studies": "all", "portfolio": 2}), tmp_path / "x")
    assert prior is not None and prior["summary"]["sweeps"] == 3 and prior["summary"]["trials"] == 36
    assert len(prior["portfolio"]) == 2 and postgres.password not in json.dumps(prior)
    with pytest.raises(HistoryError) as err:
        load_history(_config(tmp_path, {"optuna_url": url, "studies": ["digits-w4"]}))
    assert "digits-w1, digits-w2, digits-w3" in str(err.value) and postgres.password not in str(err.value)


def test_a_resumed_sweep_replays_its_saved_prior_not_the_sources(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"runs": [str(tmp_path / "gone-since")]})
    run = cfg.run_dir()
    with pytest.raises(HistoryError, match="no such run directory"):
        prior_for(cfg, run)  # a new sweep reads the sources
    run.mkdir(parents=True)
    saved = {"summary": {"sweeps": 1}, "portfolio": [{"x": 0.5, "y": 0.5}], "warm_start": {"observations": [], "enqueue": []}}
    (run / "history.json").write_text(json.dumps(saved))
    (run / "ledger.jsonl").write_text("")
    assert prior_for(cfg, run) == saved  # a resume: the proposals the ledger replays came from this prior


# --- run directories on S3 (a real SeaweedFS server) ------------------------------------------------------

def test_run_directories_on_s3_are_read_as_history_and_only_their_three_files(s3_server: Any, earlier_run: Path,
                                                                                tmp_path: Path) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="team-history")
    for week in ("digits-w01", "digits-w02"):
        for name in ("config.json", "result.json", "ledger.jsonl"):
            client.put_object(Bucket="team-history", Key=f"runs/{week}/{name}", Body=(earlier_run / name).read_bytes())
        # What else a synced run directory holds is never fetched: a model could run code when loaded.
        client.put_object(Bucket="team-history", Key=f"runs/{week}/best_model/model.pkl", Body=b"not data")
    bad = json.loads((earlier_run / "result.json").read_text())
    bad["metric"]["name"] = "loss"
    client.put_object(Bucket="team-history", Key="runs/loss-w01/result.json", Body=json.dumps(bad).encode())
    for name in ("config.json", "ledger.jsonl"):
        client.put_object(Bucket="team-history", Key=f"runs/loss-w01/{name}", Body=(earlier_run / name).read_bytes())

    def config(runs: list[str]):
        return _config(tmp_path, {"runs": runs, "portfolio": 2},
                       storage={"run_dir": str(tmp_path / "run"), "s3": {"endpoint_url": s3_server.endpoint}})

    cfg = config(["s3://team-history/runs/digits-*"])
    prior = prior_for(cfg, cfg.run_dir())
    s = prior["summary"]
    assert s["sweeps"] == 2 and s["trials"] == 34 and s["same_task"] == 2
    assert [src["source"] for src in s["sources"]] == ["s3://team-history/runs/digits-w01",
                                                       "s3://team-history/runs/digits-w02"]
    assert prior["portfolio"][0] == json.loads((earlier_run / "result.json").read_text())["best"]["config"]
    with pytest.raises(HistoryError) as err:
        prior_for(config(["s3://team-history/runs/*-w01"]), cfg.run_dir())
    assert "history.runs[0] = 's3://team-history/runs/*-w01' (s3://team-history/runs/loss-w01): it optimised 'loss'" in str(err.value)
    with pytest.raises(HistoryError) as err:
        prior_for(config([str(earlier_run), "s3://team-history/runs/iris-*"]), cfg.run_dir())
    assert str(err.value).startswith("history.runs[1] = 's3://team-history/runs/iris-*': no run directory there")
    assert "\n" not in str(err.value) and not cfg.run_dir().exists()


def test_an_unreachable_s3_history_is_one_line_before_spending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "history-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "history-test-secret")

    cfg = _config(tmp_path, {"runs": ["s3://team-history/runs/*"]},
                  storage={"run_dir": str(tmp_path / "run"), "s3": {
                      "endpoint_url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 0.2, "read_timeout": 0.2,
                      "max_attempts": 1, "outage_seconds": 0.5}})
    with pytest.raises(HistoryError) as err:
        prior_for(cfg, cfg.run_dir())
    assert str(err.value).startswith("history.runs[0] = 's3://team-history/runs/*': list s3://team-history/runs")
    assert "unreachable" in str(err.value) and "\n" not in str(err.value) and not cfg.run_dir().exists()
