"""Prefect artifacts for a sweep: leaderboard, budget progress, the controller's decision, plot, summary.

Keys are stable per sweep (``<sweep-slug>-leaderboard`` …) so the UI shows one evolving artifact per
kind. Tables are top-N plus counts, so an artifact stays a few kilobytes at thousands of trials.
(Sized for 1,000 trials in tests/test_artifacts.py.)
The plot is a PNG embedded in a markdown artifact: Prefect 3.8's UI renders ``data:image/…`` sources
in markdown, while an image artifact needs a URL the browser can fetch and prints that URL in full.
The builders are plain functions of ``result.json`` so they can be checked without a server.

Publishing never fails a sweep over a bad response: an API hiccup costs an artifact update, not the
trials. While the API does not answer at all (a server restart), publishing is skipped and the next
publish after it is back writes every artifact from the whole ``result.json``; only an outage past
``ui.api_outage_seconds`` stops the sweep (:mod:`rungflow.tasks.api_watch`).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from rungflow.config import slug
from rungflow.results import TOP_N, anytime_png, ensemble_line, history_line, schedule_png
from rungflow.tasks.api_watch import PrefectAPIUnreachable, PrefectAPIWatch

__all__ = ["SweepArtifacts", "PrefectAPIUnreachable", "leaderboard_rows", "leaderboard_description",
           "decision_markdown", "summary_markdown", "plot_markdown", "artifact_keys"]

log = logging.getLogger("rungflow.artifacts")


def artifact_keys(sweep_name: str) -> dict[str, str]:
    key = slug(sweep_name)
    return {kind: f"{key}-{kind}" for kind in ("leaderboard", "budget", "decision", "plot", "summary")}


def _fmt(v: Any, digits: int = 5) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _config_text(config: Mapping[str, Any], limit: int = 160) -> str:
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: Any) -> str:
    # Pipes and newlines in a config value or an error would break the markdown table.
    return str(text).replace("|", "\\|").replace("\n", " ")


def leaderboard_rows(result: Mapping[str, Any], top_n: int = TOP_N) -> list[dict[str, Any]]:
    return [
        {
            "rank": row["rank"], "trial": row["trial_id"], "bracket": row["bracket"], "rung": row["rung"],
            "budget": row["budget"], "score": None if row["score"] is None else round(row["score"], 5),
            "gpu_hours": float(f"{row['gpu_hours']:.3g}"), "status": row["status"],
            "config": _config_text(row["config"]),
            "metrics": _config_text(row.get("metrics") or {}),
            "error": str(row["error"])[:200] if row.get("error") and row["score"] is None else "",
        }
        for row in result["leaderboard"][:top_n]
    ]


def _held_lines(ledger: Mapping[str, Any]) -> list[str]:
    if "gpu_hours_held" not in ledger:
        return []
    billed = "the caps and the money read this figure (`budget.bill: held`)" if ledger.get("bill") == "held" else \
        "the caps read GPU-hours trained (`budget.bill: trained`)"
    return [f"**Held:** {ledger['gpu_hours_held']:.4g} GPU-hours by {ledger.get('workers_held', 0)} workers, busy or "
            f"idle, ${ledger.get('cost_held', 0.0):.2f}; {billed}.", ""]


def _counts_line(result: Mapping[str, Any]) -> str:
    c = result.get("counts") or {}
    if not c:
        return ""
    status = ", ".join(f"{k} {v}" for k, v in c.get("by_status", {}).items())
    budgets = ", ".join(f"{k}: {v}" for k, v in c.get("by_budget", {}).items())
    return f"by status: {status}; scored trials by highest budget reached: {budgets or 'none yet'}"


def leaderboard_description(result: Mapping[str, Any], top_n: int = TOP_N) -> str:
    shown = min(top_n, len(result["leaderboard"]))
    total = (result.get("counts") or {}).get("trials", shown)
    return (f"Top {shown} of {total} trials of {result['name']}, ranked by budget reached, then score. "
            + _counts_line(result))


def decision_markdown(result: Mapping[str, Any]) -> str:
    decisions = result.get("decisions") or []
    last = decisions[-1] if decisions else None
    lines = [f"# Budget controller: {result['name']}", ""]
    if result.get("stop_reason"):
        lines += [f"**Stopped:** `{result['stop_reason']}` ({result.get('stop_detail', '')})", ""]
    if last:
        lines += _decision_table(last)
    best = result.get("best")
    if best:
        lines += ["", f"**Best so far:** `{best['trial_id']}` score {best['score']:.5g} at budget {best['budget']:g}"]
    return "\n".join(lines)


def _decision_table(d: Mapping[str, Any]) -> list[str]:
    return [
        "| figure | value |", "|---|---|",
        f"| stage | {_cell(d.get('stage'))} |",
        f"| decision | **{d['action']}** {'(' + d['reason'] + ')' if d.get('reason') else ''} |",
        f"| spent GPU-hours | {_fmt(d.get('spent_gpu_hours'))} |",
        f"| spent cost ($) | {_fmt(d.get('spent_cost'))} |",
        f"| best score | {_fmt(d.get('best'))} |",
        f"| gain per GPU-hour | {_fmt(d.get('gain_per_gpu_hour'))} |",
        f"| threshold | {_fmt(d.get('threshold'))} |",
        f"| next stage (predicted GPU-hours) | {_fmt(d.get('next_stage_gpu_hours'))} |",
        f"| detail | {_cell(d.get('detail', ''))} |",
    ]


def _cpu_price(result: Mapping[str, Any]) -> str:
    price = (result.get("budget") or {}).get("price_per_cpu_hour") or 0.0
    return f", ${price:g} per CPU-hour" if price else ""


def summary_markdown(result: Mapping[str, Any], top: int = 5) -> str:
    """The final summary: best configuration, its score and cost, why the sweep stopped, what stopping saved."""
    ledger = result["ledger"]
    price = (result.get("budget") or {}).get("price_per_gpu_hour", ledger.get("price_per_gpu_hour", 0.0))
    metric = result.get("metric", {})
    lines = [f"# Sweep summary: {result['name']}", ""]
    best = result.get("best")
    if best:
        lines += [
            f"**Best:** `{best['trial_id']}` — {metric.get('name', 'score')} **{best['score']:.5g}** "
            f"({metric.get('mode', 'max')}) at budget {best['budget']:g}; this trial cost "
            f"{best['gpu_hours']:.4g} GPU-hours, ${best.get('cost', best['gpu_hours'] * price):.2f}.", "",
            "| parameter | value |", "|---|---|",
            *[f"| {_cell(k)} | {_cell(_fmt(v, 6))} |" for k, v in best["config"].items()], "",
        ]
    else:
        lines += ["**Best:** no trial finished with a score.", ""]
    lines += schedule_markdown(result)
    lines += [
        f"**Spent:** {ledger['gpu_hours']:.4g} GPU-hours trained, {ledger.get('cpu_hours', 0.0):.4g} CPU-hours, "
        f"${ledger['cost']:.2f} (at ${price:g} per GPU-hour{_cpu_price(result)}) on "
        f"{(result.get('counts') or {}).get('trials', 0)} trials; {_counts_line(result)}.", "",
        *_held_lines(ledger),
        f"**Stop reason:** `{result.get('stop_reason')}` — {result.get('stop_detail', '')}", "",
    ]
    if result.get("history"):
        lines += [f"**History:** {history_line(result['history']).removeprefix('history: ')}", ""]
    saved = result.get("best_model") or {}
    if saved.get("path"):
        lines += [f"**Saved model:** {saved['family']} in `{saved['path']}`"
                  + (f"; {ensemble_line(saved['ensemble'])}" if saved.get("ensemble") else ""), ""]
    stops = [d for d in result.get("decisions") or [] if d.get("action") == "stop"]
    if stops:
        lines += ["The controller's figures at the stop:", "", *_decision_table(stops[-1]), ""]
    lines += [_savings_text(result), ""]
    board = result.get("leaderboard", [])[:top]
    if board:
        lines += [f"Top {len(board)} (the full top {TOP_N} is in the `{slug(result['name'])}-leaderboard` artifact):", "",
                  "| rank | trial | budget | score | GPU-hours | config |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['rank']} | {r['trial_id']} | {r['budget']:g} | {_fmt(r['score'])} | {r['gpu_hours']:.4g} | "
                  f"{_cell(_config_text(r['config'], 100))} |" for r in board]
    return "\n".join(lines)


def schedule_markdown(result: Mapping[str, Any]) -> list[str]:
    """The winner's hyperparameter schedule along its lineage (population-based training), table and plot; [] if none."""
    stretches = (result.get("best") or {}).get("hyperparameter_schedule") or []
    if len(stretches) < 2:
        return []
    names = [k for k in stretches[0]["config"] if len({repr(s["config"].get(k)) for s in stretches}) > 1]
    lines = [f"**Hyperparameter schedule of the winner** (its lineage, {len(stretches)} trials):", "",
             "| budget | trial | " + " | ".join(_cell(n) for n in names) + " |", "|---|---|" + "---|" * len(names)]
    lines += [f"| {s['from_budget']:g}–{s['to_budget']:g} | {s['trial_id']} | "
              + " | ".join(_cell(_fmt(s["config"].get(n), 4)) for n in names) + " |" for s in stretches]
    png = schedule_png(result)
    if png is not None:
        lines += ["", f"![the winner's hyperparameters against budget](data:image/png;base64,"
                      f"{base64.b64encode(png).decode('ascii')})"]
    return lines + [""]


def _savings_text(result: Mapping[str, Any]) -> str:
    s = result.get("savings") or {}
    if result.get("stop_reason") in (None, "schedule_complete") or not s:
        return "**Saved by stopping:** nothing — every planned stage ran."
    if not s.get("remaining_units"):
        return "**Saved by stopping:** nothing measurable — the sweep stopped in its last planned stage."
    units = (f"{s['remaining_trial_rungs']} planned trial-rungs ({s['remaining_units']:g} budget units, "
             f"{100 * s['fraction_of_plan']:.0f}% of the plan) did not run")
    if s.get("gpu_hours") is None:
        return f"**Saved by stopping:** {units}; no trial trained long enough to price them."
    return (f"**Saved by stopping:** {units}; at the measured {s['gpu_hours_per_unit']:.3g} GPU-hours per unit they "
            f"would have cost **{s['gpu_hours']:.4g} GPU-hours, ${s['cost']:.2f}**.")


def plot_markdown(result: Mapping[str, Any]) -> str:
    png = base64.b64encode(anytime_png(result)).decode("ascii")
    state = "final" if result.get("status") == "finished" else "while running"
    ledger = result.get("ledger", {})
    return (f"# Best score vs GPU-hours: {result['name']}\n\n"
            f"![best score against GPU-hours, stop point marked](data:image/png;base64,{png})\n\n"
            f"{ledger.get('gpu_hours', 0.0):.4g} GPU-hours spent ({state}); stop: `{result.get('stop_reason')}`.")


class SweepArtifacts:
    """Publishes a sweep's artifacts from its ``result.json``.

    Each artifact is created once per flow run and then updated in place, so the flow run holds one
    artifact per kind and a key's history holds one version per sweep run (last week's, this week's),
    not one per stage. The plot is redrawn at most every ``plot_every_seconds``, and at the end.
    """

    def __init__(self, sweep_name: str, top_n: int = TOP_N, plot_every_seconds: float = 30.0,
                 watch: PrefectAPIWatch | None = None) -> None:
        self.watch = watch
        self.skipped = 0  # publishes skipped while the API was down
        self.keys = artifact_keys(sweep_name)
        self.top_n = top_n
        self.plot_every_seconds = plot_every_seconds
        self.ids: dict[str, UUID] = {}
        self._plotted_at = -float("inf")

    def publish(self, result: Mapping[str, Any], cap_gpu_hours: float | None) -> None:
        """Skipped while the API is down; raises :class:`PrefectAPIUnreachable` once it has been down longer than
        the watch allows (or at once without a watch); other failures only log."""
        if self.watch is None:
            _check_api()
        elif not self.watch.check():
            self.skipped += 1
            return
        final = result.get("status") == "finished"
        steps = [self._leaderboard, lambda r: self._budget(r, cap_gpu_hours), self._decision]
        if final or time.monotonic() - self._plotted_at >= self.plot_every_seconds:
            steps.append(self._plot)
        if final:
            steps.append(self._summary)
        for step in steps:
            try:
                step(result)
            except Exception as exc:  # monitoring must not stop spending decisions or lose trials
                if _unreachable(exc):
                    if self.watch is None:
                        raise PrefectAPIUnreachable(_unreachable_message()) from None
                    # Died between the probe and this call: the rest waits for the next publish after it is back.
                    self.watch.failed()
                    self.skipped += 1
                    return
                log.warning("could not publish a Prefect artifact: %s", exc)

    def _put(self, kind: str, create: Any, payload: Any, data: Any, description: str) -> None:
        """Create the artifact on first use (inside the flow run, so it links to it); later, update it in place."""
        if kind not in self.ids:
            self.ids[kind] = create(payload, key=self.keys[kind], description=description)
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        get_client(sync_client=True).update_artifact(self.ids[kind], ArtifactUpdate(data=data, description=description))

    def _leaderboard(self, result: Mapping[str, Any]) -> None:
        from prefect.artifacts import create_table_artifact

        rows = leaderboard_rows(result, self.top_n)
        # A table artifact's data is its rows as a JSON string; rows hold no NaN (unscored trials have None).
        self._put("leaderboard", create_table_artifact, rows, json.dumps(rows),
                  leaderboard_description(result, self.top_n))

    def _budget(self, result: Mapping[str, Any], cap_gpu_hours: float | None) -> None:
        from prefect.artifacts import create_progress_artifact

        ledger = result["ledger"]
        held = ledger.get("bill") == "held"
        # The bar fills with what the caps read; the other figure rides in the description.
        spent = ledger.get("gpu_hours_held", 0.0) if held else ledger["gpu_hours"]
        cost = ledger.get("cost_held", 0.0) if held else ledger["cost"]
        what = "held" if held else "trained"
        other = (f"; {ledger['gpu_hours']:.4f} trained" if held else
                 f"; {ledger['gpu_hours_held']:.4f} held" if "gpu_hours_held" in ledger else "")
        if cap_gpu_hours:
            percent = min(100.0, 100.0 * spent / cap_gpu_hours)
            description = f"{spent:.4f} of {cap_gpu_hours:g} GPU-hours spent ({what}{other}), cost ${cost:.2f}"
        else:
            percent = 100.0 if result["status"] == "finished" else 0.0
            description = f"{spent:.4f} GPU-hours spent ({what}{other}, no cap), cost ${cost:.2f}"
        self._put("budget", create_progress_artifact, percent, percent, description)

    def _decision(self, result: Mapping[str, Any]) -> None:
        from prefect.artifacts import create_markdown_artifact

        text = decision_markdown(result)
        self._put("decision", create_markdown_artifact, text, text, "The controller's latest decision and its figures")

    def _plot(self, result: Mapping[str, Any]) -> None:
        from prefect.artifacts import create_markdown_artifact

        self._plotted_at = time.monotonic()
        text = plot_markdown(result)
        self._put("plot", create_markdown_artifact, text, text,
                  "Best score (at the highest budget reached) against GPU-hours spent")

    def publish_saved_model(self, result: Mapping[str, Any]) -> None:
        """The summary once more after the winner (or the ensemble) is saved: which one it is, and by how much."""
        try:
            self._summary(result)
        except Exception as exc:  # the model is saved and result.json says so; the UI is only a view of it
            log.warning("could not publish the saved model to the summary artifact: %s", exc)

    def _summary(self, result: Mapping[str, Any]) -> None:
        from prefect.artifacts import create_markdown_artifact

        text = summary_markdown(result)
        self._put("summary", create_markdown_artifact, text, text,
                  "Best configuration, its cost, why the sweep stopped, what stopping saved")


def _check_api(attempts: int = 3, timeout: float = 2.0, pause: float = 1.0) -> None:
    """A few quick probes of ``/health``: a server restarting gets seconds, a dead one ends the sweep.

    Prefect's own client retries a lost connection with exponential backoff (about a minute a call),
    which would make a sweep with a dead API crawl from call to call instead of stopping.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    for attempt in range(attempts):
        try:
            httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
            return
        except httpx.TransportError:
            if attempt + 1 < attempts:
                time.sleep(pause)
    raise PrefectAPIUnreachable(_unreachable_message())


def _unreachable(exc: BaseException) -> bool:
    import httpx

    # A server killed mid-request ends the call with a dropped connection, after Prefect's own retries.
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError))


def _unreachable_message() -> str:
    from prefect.settings import PREFECT_API_URL

    return (f"PREFECT_API_URL={PREFECT_API_URL.value()} stopped answering mid-sweep; the sweep stopped and billed "
            "every trial it had started")
