"""Prefect artifacts for a sweep: leaderboard, budget progress, the controller's latest decision.

Keys are stable per sweep (``<sweep-slug>-leaderboard`` …) so the UI shows one evolving artifact per
kind; tables are top-N so they stay readable at thousands of trials. Publishing never fails a
sweep: an API hiccup costs an artifact update, not the trials.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping
from uuid import UUID

from rungflow.config import slug

__all__ = ["SweepArtifacts"]

log = logging.getLogger("rungflow.artifacts")


class SweepArtifacts:
    def __init__(self, sweep_name: str, top_n: int = 20) -> None:
        self.key = slug(sweep_name)
        self.top_n = top_n
        self._progress_id: UUID | None = None

    def publish(self, result: Mapping[str, Any], cap_gpu_hours: float | None) -> None:
        try:
            self._leaderboard(result)
            self._budget(result, cap_gpu_hours)
            self._decision(result)
        except Exception as exc:  # monitoring must not stop spending decisions or lose trials
            log.warning("could not publish Prefect artifacts: %s", exc)

    def _leaderboard(self, result: Mapping[str, Any]) -> None:
        from prefect.artifacts import create_table_artifact

        rows = [
            {
                "rank": row["rank"], "trial": row["trial_id"], "bracket": row["bracket"], "rung": row["rung"],
                "budget": row["budget"], "score": None if row["score"] is None else round(row["score"], 5),
                "gpu_hours": round(row["gpu_hours"], 5), "status": row["status"],
                "config": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["config"].items()),
            }
            for row in result["leaderboard"][: self.top_n]
        ]
        create_table_artifact(rows, key=f"{self.key}-leaderboard",
                              description=f"Top {self.top_n} trials of {result['name']} by budget reached, then score")

    def _budget(self, result: Mapping[str, Any], cap_gpu_hours: float | None) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        spent = result["ledger"]["gpu_hours"]
        if cap_gpu_hours:
            percent = min(100.0, 100.0 * spent / cap_gpu_hours)
            description = f"{spent:.4f} of {cap_gpu_hours:g} GPU-hours spent, cost {result['ledger']['cost']:.2f}"
        else:
            percent = 100.0 if result["status"] == "finished" else 0.0
            description = f"{spent:.4f} GPU-hours spent (no cap), cost {result['ledger']['cost']:.2f}"
        if self._progress_id is None:
            self._progress_id = create_progress_artifact(percent, key=f"{self.key}-budget", description=description)
        else:
            update_progress_artifact(self._progress_id, percent, description=description)

    def _decision(self, result: Mapping[str, Any]) -> None:
        from prefect.artifacts import create_markdown_artifact

        decisions = result.get("decisions") or []
        last = decisions[-1] if decisions else None
        lines = [f"# Budget controller: {result['name']}", ""]
        if result.get("stop_reason"):
            lines += [f"**Stopped:** `{result['stop_reason']}` ({result.get('stop_detail', '')})", ""]
        if last:
            def fmt(v: Any) -> str:
                return "—" if v is None else (f"{v:.5g}" if isinstance(v, float) else str(v))

            lines += [
                "| figure | value |", "|---|---|",
                f"| stage | {last['stage']} |",
                f"| decision | **{last['action']}** {'(' + last['reason'] + ')' if last.get('reason') else ''} |",
                f"| spent GPU-hours | {fmt(last['spent_gpu_hours'])} |",
                f"| spent cost | {fmt(last['spent_cost'])} |",
                f"| best score | {fmt(last['best'])} |",
                f"| gain per GPU-hour | {fmt(last['gain_per_gpu_hour'])} |",
                f"| threshold | {fmt(last['threshold'])} |",
                f"| next stage (predicted GPU-hours) | {fmt(last['next_stage_gpu_hours'])} |",
                f"| detail | {last['detail']} |",
            ]
        best = result.get("best")
        if best:
            lines += ["", f"**Best so far:** `{best['trial_id']}` score {best['score']:.5g} at budget {best['budget']:g}"]
        create_markdown_artifact("\n".join(lines), key=f"{self.key}-decision",
                                 description="The controller's latest decision and its figures")
