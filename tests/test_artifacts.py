"""Artifact builders at scale, the stop rule's savings, and artifact keys; in-process, no server.

A 1,000-trial Hyperband sweep is simulated through the real Sweep, scheduler, searcher, ledger and
controller (trials are not trained: each rung's records are charged as a worker would report them),
then the artifact builders must stay small and readable.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
from pathlib import Path

import pytest

from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.budgets.scheduling import Stage
from rungflow.config import SLUG_MAX, slug, validate
from rungflow.flows.sweep import Sweep
from rungflow.results import TOP_N, build_result
from rungflow.tasks.artifacts import (
    artifact_keys,
    decision_markdown,
    leaderboard_description,
    leaderboard_rows,
    plot_markdown,
    summary_markdown,
)
from tests.conftest import sweep_config

KEY = re.compile(r"^[a-z0-9-]+$")
GPU_SECONDS_PER_UNIT = 36.0  # 0.01 GPU-hours per epoch


def simulate(tmp_path: Path, trials_before_stop: int, fail_every: int = 29) -> dict:
    """Run Hyperband's brackets the way the flow does, stopping at a GPU-hour cap once ``trials_before_stop`` started."""
    cfg = validate(sweep_config(
        tmp_path, name="Big sweep: 1000 trials",
        scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 81, "eta": 3, "iterations": 12},
        budget={"max_gpu_hours": 1e9, "price_per_gpu_hour": 2.5},
    ))
    sweep = Sweep.create(cfg, tmp_path / "run")
    brackets = sweep.scheduler.brackets
    # The cap is the spend of the brackets that start the first `trials_before_stop` trials: the controller
    # stops before the next bracket, with the rest of the plan unspent.
    units, started, cut = 0.0, 0, len(brackets)
    for i, b in enumerate(brackets):
        if started >= trials_before_stop:
            cut = i
            break
        previous = 0.0
        for r in b.rungs:
            units += r.num_trials * (r.budget - previous)
            previous = r.budget
        started += b.num_trials
    sweep.controller.settings = type(sweep.controller.settings)(
        **{**sweep.controller.settings.__dict__, "max_gpu_hours": units * GPU_SECONDS_PER_UNIT / 3600 + 1e-6})
    rng = random.Random(0)
    clock = 1_000_000.0
    for b in brackets:
        first = b.rungs[0]
        if sweep.decide(Stage(b.index, 0), first.num_trials * first.budget).stop:
            break
        alive = [sweep.new_trial(c, b.index) for c in sweep.searcher.suggest(first.num_trials)]
        sweep.schedule.append({"bracket": b.index, "s": b.s, "rungs": []})
        previous = 0.0
        for pos, r in enumerate(b.rungs):
            scores = {}
            for t in alive:
                n = int(t[1:])
                failed = n % fail_every == 0
                score = None if failed else 1 - math.exp(-r.budget / 20) * (0.5 + sweep.trials[t]["x"] / 2) + rng.gauss(0, 0.01)
                trained = r.budget - previous
                sweep.ledger.charge(SpendRecord(
                    trial_id=t, bracket=b.index, rung=r.index, budget=r.budget, score=score,
                    status=TrialStatus.FAILED if failed else TrialStatus.COMPLETED,
                    gpu_seconds=trained * GPU_SECONDS_PER_UNIT, gpus=1, cost=sweep.ledger.cost_of(trained * GPU_SECONDS_PER_UNIT),
                    started_at=clock, finished_at=clock + trained, budget_trained=trained,
                    error=f"RuntimeError: x={sweep.trials[t]['x']:.3f} | diverged\nat step 3" if failed else None))
                clock += trained
                if score is not None:
                    scores[t] = score
            sweep.schedule[-1]["rungs"].append({"rung": r.index, "budget": r.budget, "num_trials": len(alive),
                                                "planned_trials": r.num_trials})
            if pos + 1 < len(b.rungs):
                alive = sorted(scores, key=scores.get, reverse=True)[: b.rungs[pos + 1].num_trials]
            previous = r.budget
        if sweep.stop_reason:
            break
    assert cut < len(brackets), "the simulation should stop before the plan ends"
    sweep.stop_reason = sweep.stop_reason or "schedule_complete"
    return build_result(sweep, final=True)


def assert_tables_intact(markdown: str) -> None:
    """Every row of each markdown table has as many cells as its header: no value broke a row."""
    width = None
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = len(re.findall(r"(?<!\\)\|", line))
            width = width or cells
            assert cells == width, line
        else:
            width = None


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return simulate(tmp_path_factory.mktemp("big"), 1000)


def test_thousand_trial_artifacts_stay_small_and_readable(big: dict) -> None:
    assert big["counts"]["trials"] >= 1000
    rows = leaderboard_rows(big)
    assert len(rows) == TOP_N
    assert [r["rank"] for r in rows] == list(range(1, TOP_N + 1))
    assert all(r["budget"] == 81 for r in rows[:3])  # the top rows reached the top rung
    assert len(json.dumps(rows)) < 12_000
    description = leaderboard_description(big)
    assert f"Top {TOP_N} of {big['counts']['trials']} trials" in description
    by_status = big["counts"]["by_status"]
    assert by_status["failed"] == sum(1 for t in big["trials"] if int(t[1:]) % 29 == 0)
    assert sum(by_status.values()) == big["counts"]["trials"]
    assert sum(big["counts"]["by_budget"].values()) == by_status["ok"]
    assert big["counts"]["by_budget"]["81"] == len({e["trial_id"] for e in big["events"]
                                                    if e["budget"] == 81 and e["status"] == "completed"})
    assert f"failed {by_status['failed']}" in description and "81: " in description
    assert len(description) < 500

    summary = summary_markdown(big)
    assert len(summary) < 6_000, len(summary)
    best = big["best"]
    assert best["trial_id"] in summary and f"{best['score']:.5g}" in summary
    assert f"${best['cost']:.2f}" in summary and best["cost"] == pytest.approx(best["gpu_hours"] * 2.5)
    assert "max_gpu_hours" in summary and "reaches the cap" in summary
    assert_tables_intact(summary)

    odd = {**big, "decisions": [{**big["decisions"][-1], "detail": "a | b\nc"}]}
    assert_tables_intact(decision_markdown(odd))
    assert_tables_intact(summary_markdown(odd))

    decision = decision_markdown(big)
    assert len(decision) < 2_000 and "**stop** (max_gpu_hours)" in decision

    plot = plot_markdown(big)
    assert len(plot) < 120_000, len(plot)
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", plot).group(1))
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_savings_is_the_unrun_plan_at_the_measured_rate(big: dict) -> None:
    s = big["savings"]
    ran = {(e["bracket"], e["rung"]) for e in big["events"]}
    unrun = [row for row in big["plan"] if (row["bracket"], row["rung"]) not in ran]
    assert unrun and s["remaining_units"] == pytest.approx(sum(row["units"] for row in unrun))
    assert s["remaining_trial_rungs"] == sum(row["trials"] for row in unrun)
    assert s["gpu_hours_per_unit"] == pytest.approx(GPU_SECONDS_PER_UNIT / 3600)
    assert s["gpu_hours"] == pytest.approx(s["remaining_units"] * 0.01)
    assert s["cost"] == pytest.approx(s["gpu_hours"] * 2.5)
    # Spent + saved is the whole plan at the measured rate.
    assert big["ledger"]["gpu_hours"] + s["gpu_hours"] == pytest.approx(s["planned_units"] * 0.01, rel=1e-6)
    assert f"{s['gpu_hours']:.4g} GPU-hours, ${s['cost']:.2f}" in summary_markdown(big)
    on_disk = json.loads(json.dumps(big, default=str))
    assert on_disk["savings"] == s


def test_a_completed_schedule_saved_nothing(tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path, scheduler={"kind": "sha", "min_budget": 1, "max_budget": 9, "eta": 3}))
    sweep = Sweep.create(cfg, tmp_path / "run")
    sweep.stop_reason = "schedule_complete"
    result = build_result(sweep, final=True)
    assert result["savings"]["remaining_units"] == 0 and result["savings"]["gpu_hours"] is None
    assert "nothing — every planned stage ran" in summary_markdown(result)
    assert "no trial finished" in summary_markdown(result)
    plot_markdown(result)  # an empty sweep still plots


@pytest.mark.parametrize("name, expected", [
    ("LCBench: BOHB (eta=3)", "lcbench-bohb-eta-3"),
    ("my_sweep", "my-sweep"),
    ("__--9lives--__", "9lives"),
    ("Café Über", "cafe-uber"),
    ("", "sweep"),
    ("   ", "sweep"),
])
def test_slug_normalises_names_into_valid_keys(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_slug_keeps_lossy_and_long_names_distinct_and_valid() -> None:
    lossy = [slug("实验"), slug("测试"), slug("实验 A"), slug("测试 A")]
    assert len(set(lossy)) == 4 and all(KEY.match(k) for k in lossy)
    long_a, long_b = slug("a" * 300), slug("a" * 299 + "b")
    assert long_a != long_b and len(long_a) == len(long_b) == SLUG_MAX
    for name in ["x" * 1000, "Ünïcödé 🚀 sweep", "--", "0", "a--b__c", "TAB\tNEWLINE\n"]:
        for key in artifact_keys(name).values():
            assert KEY.match(key) and not key.startswith("-") and "--" not in key, (name, key)
            assert len(key) <= SLUG_MAX + len("-leaderboard")
