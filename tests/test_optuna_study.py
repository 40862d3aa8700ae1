"""The sweep's Optuna study: one trial per rungflow trial with its intermediate values and state, idempotent on
resume, refused when the study holds another sweep; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.budgets.space import SearchSpace
from rungflow.tasks.optuna_study import StudyError, StudyRecorder
from tests.conftest import Postgres

SPACE = SearchSpace.from_dict({
    "family": {"type": "categorical", "choices": ["a", "b"]},
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "when": {"family": ["a"]}},
    "depth": {"type": "int", "low": 1, "high": 8},
})
CONFIGS = {"t0": {"family": "a", "lr": 0.01, "depth": 3}, "t1": {"family": "b", "depth": 5},
           "t2": {"family": "a", "lr": 0.001, "depth": 1}, "t3": {"family": "b", "depth": 2}}


def _r(trial: str, rung: int, budget: float, score: float | None, status: TrialStatus = TrialStatus.COMPLETED,
       bracket: int = 0, error: str | None = None) -> SpendRecord:
    return SpendRecord(trial_id=trial, bracket=bracket, rung=rung, budget=budget, score=score, status=status,
                       gpu_seconds=36.0, gpus=1.0, cost=0.1, started_at=0.0, finished_at=1.0, cpu_seconds=72.0, cpus=2.0,
                       error=error)


RECORDS = [_r("t0", 0, 1, 0.5), _r("t1", 0, 1, 0.6), _r("t2", 0, 1, None, TrialStatus.FAILED, error="RuntimeError: boom"),
           _r("t3", 0, 1, 0.4), _r("t1", 1, 3, 0.7)]


def _recorder(url: str, fingerprint: str = "f1", asynchronous: bool = False) -> StudyRecorder:
    return StudyRecorder(url, "sweep-a", fingerprint=fingerprint, direction="maximize", space=SPACE, max_budget=3,
                         asynchronous=asynchronous)


def _check_study(url: str) -> None:
    study = optuna.load_study(study_name="sweep-a", storage=url)
    trials = {t.user_attrs["rungflow_trial"]: t for t in study.trials}
    assert set(trials) == {"t0", "t1", "t2", "t3"} and len(study.trials) == 4
    assert trials["t1"].state.name == "COMPLETE" and trials["t1"].value == 0.7
    assert trials["t1"].intermediate_values == {1: 0.6, 3: 0.7}
    assert trials["t0"].state.name == "PRUNED" and trials["t0"].user_attrs["status"] == "stopped_by_gate"
    assert trials["t2"].state.name == "FAIL" and "boom" in trials["t2"].user_attrs["error"]
    assert trials["t0"].params == {"family": "a", "lr": 0.01, "depth": 3}
    assert trials["t1"].params == {"family": "b", "depth": 5}  # the inactive lr is left out, as Optuna stores it
    assert trials["t1"].user_attrs["gpu_hours"] == pytest.approx(0.02) and trials["t1"].user_attrs["cpu_hours"] == pytest.approx(0.04)


def test_trials_are_written_once_their_outcome_is_known_and_never_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    recorder = _recorder(url)
    assert recorder.sync_now(RECORDS[:3], CONFIGS) == 1  # t2 failed; t0 and t1 wait for the gate
    assert recorder.sync_now(RECORDS, CONFIGS) == 3  # the gate ran: t1 promoted and complete, t0 and t3 pruned
    assert recorder.sync_now(RECORDS, CONFIGS, final=True) == 0
    _check_study(url)
    # After kill -9, a resumed sweep replays the same records into the same study: nothing is added.
    assert _recorder(url).sync_now(RECORDS, CONFIGS, final=True) == 0
    _check_study(url)


def test_asha_trials_below_the_top_are_pruned_only_when_the_sweep_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    recorder = _recorder(url, asynchronous=True)
    assert recorder.sync_now(RECORDS, CONFIGS) == 2  # t1 complete, t2 failed; t0, t3 could still be promoted
    assert recorder.sync_now(RECORDS, CONFIGS, final=True) == 2


def test_a_study_of_another_sweep_and_a_bad_url_are_refused_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _recorder(url).sync_now(RECORDS, CONFIGS)
    with pytest.raises(StudyError, match="holds a different sweep"):
        _recorder(url, fingerprint="other")
    with pytest.raises(StudyError, match=r"storage.optuna_url = 'nonsense://x'"):
        _recorder("nonsense://x")


@pytest.mark.slow
def test_the_study_on_a_real_postgresql(postgres: Postgres) -> None:
    postgres.create_database("optuna")
    url = postgres.url("optuna", driver="postgresql+psycopg")
    _recorder(url).sync_now(RECORDS, CONFIGS, final=True)
    _check_study(url)
    assert _recorder(url).sync_now(RECORDS, CONFIGS, final=True) == 0
    background = StudyRecorder(url, "sweep-b", fingerprint="f1", direction="maximize", space=SPACE, max_budget=3,
                               asynchronous=False)
    background.sync(RECORDS, CONFIGS, final=True)  # the sweep's path: off the driver's thread, final waits
    assert len(optuna.load_study(study_name="sweep-b", storage=url).trials) == 4
    with pytest.raises(StudyError) as refused:
        StudyRecorder(url.replace(postgres.password, "wrong-password"), "sweep-a", fingerprint="f1", direction="maximize",
                      space=SPACE, max_budget=3, asynchronous=False)
    assert postgres.password not in str(refused.value) and "wrong-password" not in str(refused.value)


@pytest.mark.slow
def test_optuna_dashboard_opens_a_sweeps_study_in_a_browser(prefect_server: str, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import REPO, free_port
    from tests.test_ui_browser import ARGS, CHROMIUM, _browser_or_skip

    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    config = tmp_path / "sweep.yaml"
    config.write_text("name: dashboard-demo\ntrainable: {kind: noop}\nsearch: {algorithm: random, seed: 0}\n"
                      "scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\nruntime: {kind: thread}\n")
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(run)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="dashboard-demo", storage=f"sqlite:///{run / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert len(study.trials) == 17 and states.count("COMPLETE") == 5 and states.count("PRUNED") == 12

    port = free_port()
    dashboard = subprocess.Popen([shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or "optuna-dashboard",
                                  f"sqlite:///{run / 'optuna.db'}", "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and dashboard.poll() is None, "optuna-dashboard did not start"
            time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/dashboard/", wait_until="networkidle")
            expect(page.get_by_text("dashboard-demo").first).to_be_visible(timeout=45_000)
            page.get_by_text("dashboard-demo").first.click()
            page.wait_for_load_state("networkidle")
            # The history plot draws one marker per COMPLETE trial.
            page.wait_for_selector(".js-plotly-plot .point", timeout=45_000)
            shot = tmp_path / "optuna-dashboard.png"
            page.screenshot(path=str(shot), full_page=False)
            study_url = page.url.rstrip("/")
            page.goto(f"{study_url}/trials", wait_until="networkidle")
            # A trial's page shows its rungflow id and state, written by the sweep as user attributes.
            expect(page.get_by_text("rungflow_trial").first).to_be_visible(timeout=45_000)
            expect(page.get_by_text("stopped_by_gate").first).to_be_visible(timeout=45_000)
            page.screenshot(path=str(tmp_path / "optuna-dashboard-trials.png"), full_page=False)
            print(f"screenshots: {shot}, {tmp_path / 'optuna-dashboard-trials.png'}")
            browser.close()
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=20)


@pytest.mark.slow
def test_the_default_study_lives_where_the_sweep_runs(prefect_server: str, tmp_path: Path) -> None:
    from rungflow.config import validate
    from rungflow.flows.sweep import run_sweep
    from tests.conftest import sweep_config

    cfg = validate(sweep_config(tmp_path / "configured", scheduler={"kind": "sha", "min_budget": 1, "max_budget": 3, "eta": 3},
                                search={"algorithm": "random", "seed": 0, "num_trials": 3}))
    run_sweep(cfg, tmp_path / "elsewhere")
    study = optuna.load_study(study_name="test-sweep", storage=f"sqlite:///{tmp_path / 'elsewhere' / 'optuna.db'}")
    assert len(study.trials) == 3 and not (tmp_path / "configured").exists()


def test_a_study_trial_carries_the_trials_own_start_and_finish_not_the_write_time(tmp_path: Path) -> None:
    import dataclasses
    from datetime import datetime

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    began, promoted, ended = 1_700_000_000.0, 1_700_000_040.0, 1_700_000_100.0  # Nov 2023: long before this write
    records = [dataclasses.replace(_r("t1", 0, 1, 0.6), started_at=began, finished_at=began + 30),
               dataclasses.replace(_r("t1", 1, 3, 0.7), started_at=promoted, finished_at=ended)]
    assert _recorder(url).sync_now(records, CONFIGS) == 1
    (trial,) = optuna.load_study(study_name="sweep-a", storage=url).trials
    assert trial.datetime_start == datetime.fromtimestamp(began)
    assert trial.datetime_complete == datetime.fromtimestamp(ended)
    assert trial.duration.total_seconds() == pytest.approx(100.0)


def test_warm_start_priors_read_back_from_the_study_are_the_ledgers_results(tmp_path: Path) -> None:
    from rungflow.tasks.optuna_study import observations_from_study

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _recorder(url).sync_now(RECORDS, CONFIGS, final=True)
    got = sorted((o["trial_id"], o["budget"], o["score"]) for o in observations_from_study(url, "sweep-a", "w1-"))
    # Each scored (trial, rung) once at its budget, the failed trial at its budget with no score.
    assert got == sorted([("w1-t0", 1.0, 0.5), ("w1-t1", 1.0, 0.6), ("w1-t1", 3.0, 0.7), ("w1-t2", 1.0, None),
                          ("w1-t3", 1.0, 0.4)], key=lambda o: (o[0], o[1], o[2] is None, o[2] or 0))
    configs = {o["trial_id"]: o["config"] for o in observations_from_study(url, "sweep-a")}
    assert configs["t1"] == CONFIGS["t1"] and configs["t0"] == CONFIGS["t0"]


def _comparable(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.value, trial.params, trial.distributions, trial.intermediate_values,
            trial.user_attrs, trial.system_attrs, trial.datetime_start, trial.datetime_complete)


def test_the_one_transaction_write_stores_what_optunas_own_add_trial_stores(tmp_path: Path) -> None:
    import dataclasses

    records = [dataclasses.replace(r, started_at=1_700_000_000.0 + i, finished_at=1_700_000_010.0 + i)
               for i, r in enumerate(RECORDS)]
    bulk_url, plain_url = f"sqlite:///{tmp_path / 'bulk.db'}", f"sqlite:///{tmp_path / 'plain.db'}"
    bulk, plain = _recorder(bulk_url), _recorder(plain_url)
    plain._bulk = False  # the trial-at-a-time path through study.add_trial
    assert bulk.sync_now(records, CONFIGS, final=True) == plain.sync_now(records, CONFIGS, final=True) == 4
    got = [_comparable(t) for t in optuna.load_study(study_name="sweep-a", storage=bulk_url).trials]
    want = [_comparable(t) for t in optuna.load_study(study_name="sweep-a", storage=plain_url).trials]
    assert got == want and [t[0] for t in got] == [0, 1, 2, 3]
    # A later batch numbers on from what the study holds, as add_trial would.
    late = [_r("t9", 0, 3, 0.9)]
    assert bulk.sync_now(records + late, {**CONFIGS, "t9": {"family": "b", "depth": 4}}) == 1
    assert [t.number for t in optuna.load_study(study_name="sweep-a", storage=bulk_url).trials] == [0, 1, 2, 3, 4]


def test_the_recorder_reads_only_new_records_and_starts_over_on_a_list_it_did_not_see_grow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    recorder = _recorder(url, asynchronous=True)
    live = list(RECORDS[:2])
    assert recorder.sync_now(live, CONFIGS) == 0  # t0, t1 at rung 0 of an ASHA sweep: undecided
    live.extend(RECORDS[2:])
    assert recorder.sync_now(live, CONFIGS) == 2  # t2 failed, t1 complete: only the new records were read
    assert recorder._groups.by_trial["t1"] == [RECORDS[1], RECORDS[4]]
    fresh = list(RECORDS)  # equal records in another list: regrouped from scratch, nothing written twice
    assert recorder.sync_now(fresh[:1], CONFIGS) == 0
    assert recorder.sync_now(fresh, CONFIGS, final=True) == 2
    assert len(optuna.load_study(study_name="sweep-a", storage=url).trials) == 4
