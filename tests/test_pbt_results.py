"""The winner's hyperparameter schedule: built from lineage, shown in the summary artifact with a plot, and by the CLI."""

from __future__ import annotations

import base64

from rungflow.flows.cli import summary_lines
from rungflow.results import hyperparameter_schedule, schedule_png
from rungflow.tasks.artifacts import summary_markdown

TRIALS = {"t0000": {"lr": 0.01, "units": 64}, "t0001": {"lr": 0.001, "units": 32},
          "t0004": {"lr": 0.008, "units": 64}, "t0006": {"lr": 0.0064, "units": 64}}
LINEAGE = {"t0000": {"parent": None, "cloned_at": None}, "t0001": {"parent": None, "cloned_at": None},
           "t0004": {"parent": "t0000", "cloned_at": 2.0}, "t0006": {"parent": "t0004", "cloned_at": 4.0}}


def test_the_schedule_follows_the_lineage_back_to_the_initial_population() -> None:
    assert hyperparameter_schedule("t0006", TRIALS, LINEAGE, 6.0) == [
        {"trial_id": "t0000", "from_budget": 0.0, "to_budget": 2.0, "config": TRIALS["t0000"]},
        {"trial_id": "t0004", "from_budget": 2.0, "to_budget": 4.0, "config": TRIALS["t0004"]},
        {"trial_id": "t0006", "from_budget": 4.0, "to_budget": 6.0, "config": TRIALS["t0006"]},
    ]
    assert hyperparameter_schedule("t0001", TRIALS, LINEAGE, 6.0) == [
        {"trial_id": "t0001", "from_budget": 0.0, "to_budget": 6.0, "config": TRIALS["t0001"]}]


def _result(best: str) -> dict:
    return {"name": "pbt", "status": "finished", "metric": {"name": "val_accuracy", "mode": "max"},
            "ledger": {"gpu_hours": 0.01, "cost": 0.0, "cpu_hours": 0.01, "trials_started": 4, "trials_completed": 2,
                       "trials_failed": 0},
            "best": {"trial_id": best, "config": TRIALS[best], "score": 0.9, "budget": 6.0, "gpu_hours": 0.001,
                     "hyperparameter_schedule": hyperparameter_schedule(best, TRIALS, LINEAGE, 6.0)},
            "stop_reason": "schedule_complete", "stop_detail": "every planned stage ran", "runtime": {}}


def test_the_summary_shows_the_changed_parameters_and_a_plot() -> None:
    text = summary_markdown(_result("t0006"))
    assert "Hyperparameter schedule of the winner" in text and "| 2–4 | t0004 | 0.008 |" in text
    assert "| budget | trial | lr |\n" in text  # units is unchanged along the lineage: not a column
    png = schedule_png(_result("t0006"))
    assert png is not None and png.startswith(b"\x89PNG") and base64.b64encode(png).decode()[:40] in text
    line = next(x for x in summary_lines(_result("t0006")) if x.startswith("hyperparameter schedule"))
    assert "0-2 t0000 lr=0.01" in line and "4-6 t0006 lr=0.0064" in line


def test_a_winner_without_lineage_has_no_schedule_section() -> None:
    assert "Hyperparameter schedule" not in summary_markdown(_result("t0001"))
    assert schedule_png(_result("t0001")) is None
    assert not any(x.startswith("hyperparameter schedule") for x in summary_lines(_result("t0001")))
