"""Trial reporting through MLflow, so results outlive the cluster: ``tracking: {mlflow: {tracking_uri, experiment}}``.

A parent run holds the sweep (its summary and anytime plot as artifacts once it ends); each trial is a child
run with its parameters, its score per budget as the ``score`` metric with step = the budget, its GPU- and
CPU-hours, and a status. Like the Optuna study it is rebuilt from the ledger: the tracker finds its parent
run again by the sweep's fingerprint, and its children by trial id, so a resumed sweep logs nothing twice.
An unreachable server costs the sweep nothing: what could not be sent is sent at the next write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rungflow.budgets.ledger import SpendRecord
from rungflow.redact import redact
from rungflow.tasks.mirror import BackgroundSync, LedgerGroups

# A trial's outcome as an MLflow run status; anything that neither finished nor failed was killed.
_MLFLOW_RUN_STATUS = {"full_budget": "FINISHED", "failed": "FAILED", "timeout": "FAILED"}

__all__ = ["MLflowTracker", "TrackingError", "open_tracker_for"]

SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "rungflow.sweep", "rungflow.trial", "mlflow.parentRunId"


class TrackingError(ValueError):
    """MLflow cannot be used as configured; the message names ``tracking.mlflow`` and the fix."""


def _without_credentials(uri: str) -> str:
    import os
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username or ""))
    os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _step(budget: float) -> int:
    return int(budget) if float(budget).is_integer() else int(round(budget * 1000))


class MLflowTracker:
    def __init__(self, tracking_uri: str, experiment: str, *, sweep_name: str, fingerprint: str, max_budget: float,
                 asynchronous: bool) -> None:
        from mlflow.tracking import MlflowClient

        self._max_budget, self._asynchronous = max_budget, asynchronous
        # MLflow prints run URLs built from the tracking URI; credentials in it travel as MLflow's own basic-auth
        # variables instead, so no printed URL carries them.
        self.client = MlflowClient(tracking_uri=_without_credentials(tracking_uri))
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            parents = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{fingerprint}'",
                                              max_results=1)
        except Exception as exc:
            raise TrackingError(f"tracking.mlflow.tracking_uri = {redact(tracking_uri)!r}: {type(exc).__name__}: "
                                f"{redact(str(exc)).splitlines()[0][:200]}; start the MLflow server or fix the URI") from None
        if parents:
            self.parent_id = parents[0].info.run_id
        else:
            self.parent_id = self.client.create_run(self.experiment_id, run_name=sweep_name,
                                                    tags={SWEEP_TAG: fingerprint}).info.run_id
        self._background = BackgroundSync("MLflow", self.sync_now)
        self._children: dict[str, str] = {}
        self._logged: dict[str, set[tuple[int, int]]] = {}  # trial -> (rung, attempt) logged
        self._groups = LedgerGroups()
        self._closed: set[str] = set()
        for run in self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}'",
                                           max_results=50_000):
            trial = run.data.tags.get(TRIAL_TAG)
            if trial is None:
                continue
            self._children[trial] = run.info.run_id
            if run.info.status != "RUNNING":
                self._closed.add(trial)
            for step_key in run.data.tags.get("rungflow.logged", "").split():
                rung, attempt = step_key.split(".")
                self._logged.setdefault(trial, set()).add((int(rung), int(attempt)))

    def sync(self, records: Sequence[SpendRecord], configs: Mapping[str, Mapping[str, Any]], *, final: bool = False,
             summary_markdown: str | None = None, plot: Path | None = None) -> None:
        """Catch MLflow up with the ledger off this thread; ``final`` waits until it is written. ``records`` and
        ``configs`` are the sweep's live ledger list and trials, not copies (see rungflow.tasks.mirror)."""
        self._background.submit(records, configs, final=final, summary_markdown=summary_markdown, plot=plot)

    def sync_now(self, records: Sequence[SpendRecord], configs: Mapping[str, Mapping[str, Any]], *, final: bool = False,
                 summary_markdown: str | None = None, plot: Path | None = None) -> None:
        touched, raised = self._groups.catch_up(records)
        groups = self._groups
        if final:
            candidates = list(groups.by_trial)
        else:
            candidates = touched
            if raised and not self._asynchronous:  # a synchronous gate closes the runs it left behind
                behind = [t for t, b in groups.bracket_of.items() if b in raised and t not in self._closed]
                candidates = list(dict.fromkeys([*touched, *behind]))
        for trial_id in candidates:
            if trial_id in self._closed or trial_id not in configs:
                continue
            trial_records = groups.by_trial[trial_id]
            run_id = self._child(trial_id, configs[trial_id], trial_records[0].bracket)
            logged = self._logged.setdefault(trial_id, set())
            fresh = [r for r in trial_records if (r.rung, r.attempt) not in logged]
            for r in fresh:
                if r.ok and r.score is not None and math.isfinite(r.score):
                    self.client.log_metric(run_id, "score", float(r.score), step=_step(r.budget))
                logged.add((r.rung, r.attempt))
            if fresh:
                self.client.log_metric(run_id, "gpu_hours", sum(r.gpu_hours for r in trial_records))
                self.client.log_metric(run_id, "cpu_hours", sum(r.cpu_hours for r in trial_records))
                self.client.set_tag(run_id, "rungflow.logged", " ".join(f"{rung}.{attempt}" for rung, attempt in sorted(logged)))
            outcome = groups.outcome(trial_id, self._max_budget, final=final, asynchronous=self._asynchronous)
            if outcome is not None:
                self.client.set_tag(run_id, "status", outcome)
                self.client.set_terminated(run_id, _MLFLOW_RUN_STATUS.get(outcome, "KILLED"))
                self._closed.add(trial_id)
        if final:
            if summary_markdown:
                self.client.log_text(self.parent_id, summary_markdown, "summary.md")
            if plot is not None and plot.is_file():
                self.client.log_artifact(self.parent_id, str(plot))
            self.client.set_terminated(self.parent_id, "FINISHED")

    def _child(self, trial_id: str, config: Mapping[str, Any], bracket: int) -> str:
        if trial_id not in self._children:
            run = self.client.create_run(self.experiment_id, run_name=trial_id,
                                         tags={PARENT_TAG: self.parent_id, TRIAL_TAG: trial_id, "bracket": str(bracket)})
            for key, value in config.items():
                self.client.log_param(run.info.run_id, key, value)
            self._children[trial_id] = run.info.run_id
        return self._children[trial_id]


def open_tracker_for(config: Any, *, asynchronous: bool, max_budget: float) -> MLflowTracker | None:
    """The tracker of a sweep config, or None without ``tracking.mlflow``."""
    settings = config.tracking.mlflow
    if settings is None:
        return None
    from rungflow.tasks.optuna_study import sweep_fingerprint

    return MLflowTracker(settings.tracking_uri, settings.experiment or config.name, sweep_name=config.name,
                         fingerprint=sweep_fingerprint(config.model_dump(mode="json")), max_budget=max_budget,
                         asynchronous=asynchronous)
