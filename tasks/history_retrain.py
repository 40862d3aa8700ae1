"""Weekly retrain runs in a model registry as history (``history: {registry: ..., retrain_runs: [NAME/RUN_ID]}``).

A retrain run is read from the Optuna studies its run record names (its warm rung's and its sweep's, each in
``storage.optuna_url`` or its run directory's SQLite file), and where one of them cannot be read (a deleted SQLite
file, a database that does not answer), from the registry's JSON copy of the same results
(``models/NAME/studies/RUN_ID.json``). Which one was read is said in the source (``read_from``). The weekly
retrain's warm start is this reader, with last week's run as the history; a user's sweep may name a retrain's runs
the same way. Data only, as the rest of :mod:`rungflow.tasks.history`: JSON and study rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rungflow.budgets.prior import PastSweep
from rungflow.budgets.space import SearchSpace
from rungflow.redact import redact
from rungflow.tasks.history_results import (
    HistoryError,
    SpaceFitter,
    check_params,
    observations_in_space,
    param_kind,
    study_param_kinds,
    study_results,
)
from rungflow.tasks.optuna_study import TASK_ATTR

__all__ = ["RetrainRun", "read_retrain_run", "retrain_run_as_history"]

log = logging.getLogger("rungflow.history")


@dataclass
class RetrainRun:
    """A weekly retrain run's results as read, before they are checked against a sweep.

    ``read_from``: ``optuna`` (the studies its record names) or ``registry`` (the registry's JSON copy);
    ``parts``: per study read (or the copy), what it says about itself: ``(what, mode, metric, kinds)``, where
    ``kinds`` maps each parameter to its type (None: the copy records none, only the names its configs hold)."""

    name: str
    run_id: str
    record: dict[str, Any]
    trials: dict[str, dict[str, Any]]
    results: list[tuple[str, float, float | None]]
    read_from: str
    task: str | None
    parts: list[tuple[str, str | None, str | None, dict[str, str] | None]]

    def observations(self) -> list[dict[str, Any]]:
        return [{"trial_id": t, "config": self.trials.get(t, {}), "budget": b, "score": s} for t, b, s in self.results]


def _retrain_record(registry: Any, entry: str, where: str) -> tuple[str, str, dict[str, Any]]:
    """(model name, run id, the run record) of ``NAME/RUN_ID`` or ``NAME/latest``."""
    from rungflow.tasks.registry import RegistryError
    from rungflow.tasks.s3 import S3Error

    name, _, run_id = entry.partition("/")
    try:
        keys = registry.keys(name, "runs") if run_id == "latest" else [run_id]
        record = registry.get_json(name, "runs", keys[-1]) if keys else None
        held = "" if record is not None else ", ".join(registry.keys(name, "runs")[-4:]) or "none"
    except (RegistryError, S3Error, OSError, ValueError) as exc:
        raise HistoryError(f"{where}: the registry {registry.location_safe} cannot be read ({type(exc).__name__}: "
                           f"{redact(str(exc)).splitlines()[0][:160]}); fix history.registry, or check the store "
                           "answers") from None
    if record is None:
        raise HistoryError(f"{where}: no run {run_id!r} of {name!r} in {registry.location_safe} (its latest: {held}); "
                           f"fix the run id, or write {name}/latest")
    return name, str(record.get("run_id") or keys[-1]), record


def _load_study_or_none(url: str, study_name: str) -> Any:
    """The study, or None where it cannot be read (a deleted SQLite file, a database that does not answer)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None  # Optuna would create an empty database there
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        study = optuna.load_study(study_name=study_name, storage=storage)
        study.get_trials(deepcopy=False)
        return study
    except Exception:
        return None


def _from_studies(run: RetrainRun, optuna_url: str | None, max_budget: float, where: str) -> bool:
    """Fill ``run`` from the Optuna studies its record names; False if one of them cannot be read.

    The record's URLs have their password redacted; ``optuna_url`` (this sweep's ``storage.optuna_url``)
    supplies it when it is the same URL with the password in."""
    import optuna

    studies = (run.record.get("optuna") or {}).get("studies")
    if not studies:
        return False
    for entry in studies:
        url = optuna_url if optuna_url and entry["url"] != optuna_url and redact(optuna_url) == entry["url"] else entry["url"]
        study = _load_study_or_none(url, entry["study"])
        if study is None:
            log.warning("%s: its Optuna study %r in %s cannot be read; reading the registry's copy of its results",
                        where, entry["study"], redact(url))
            return False
        trials, results = study_results(study, max_budget, entry.get("prefix", ""))
        run.trials.update(trials)
        run.results += results
        run.task = run.task or study.user_attrs.get(TASK_ATTR)
        mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
        run.parts.append((f"study {entry['study']!r}", mode, (study.metric_names or [None])[0], study_param_kinds(study)))
    run.read_from = "optuna"
    return True


def read_retrain_run(registry: Any, entry: str, optuna_url: str | None = None, max_budget: float = 1.0,
                     where: str | None = None) -> RetrainRun:
    """A retrain run (``NAME/RUN_ID`` or ``NAME/latest`` in ``registry``) from its Optuna studies, or where one cannot
    be read, from the registry's JSON copy (``models/NAME/studies/RUN_ID.json``). Unchecked: see :func:`load_history`.
    ``max_budget`` is a plain Optuna trial's budget (rungflow's own trials record theirs)."""
    where = where or f"retrain run {entry!r}"
    name, run_id, record = _retrain_record(registry, entry, where)
    run = RetrainRun(name, run_id, record, {}, [], "", None, [])
    if _from_studies(run, optuna_url, max_budget, where):
        return run
    run = RetrainRun(name, run_id, record, {}, [], "registry", None, [])
    copy = registry.get_json(name, "studies", str(record.get("study") or run_id))
    if not copy or not copy.get("observations"):
        raise HistoryError(f"{where}: its Optuna studies cannot be read and the registry holds no copy of its results; "
                           "leave it out of history.retrain_runs")
    for o in copy["observations"]:
        run.trials.setdefault(str(o["trial_id"]), dict(o.get("config") or {}))
        run.results.append((str(o["trial_id"]), float(o["budget"]), None if o.get("score") is None else float(o["score"])))
    run.task = copy.get("task")
    run.parts.append(("the registry's copy", copy.get("mode"), copy.get("metric"), None))
    return run


def _check_retrain_run(run: RetrainRun, where: str, config: Any, space: SearchSpace) -> None:
    for what, mode, metric, kinds in run.parts:
        if (mode or config.mode()) != config.mode() or metric not in (None, config.metric_name()):
            raise HistoryError(f"{where}: {what} optimised {metric or 'its metric'!r} ({mode}) and this sweep "
                               f"optimises {config.metric_name()!r} ({config.mode()}); leave it out of "
                               "history.retrain_runs, or set metric: to match")
        if kinds is None:  # the copy records values, not types: a type that differs leaves its trials out (SpaceFitter)
            kinds = {p.name: param_kind(p) for p in space.params
                     if any(p.name in config_ for config_ in run.trials.values())}
        check_params(space, kinds, f"{where}: {what}", "leave that run out of history.retrain_runs, or remove the "
                                                        "parameter from this sweep's space")


def retrain_run_as_history(registry: Any, i: int, entry: str, config: Any, space: SearchSpace, task: str,
                           max_budget: float) -> tuple[PastSweep, dict[str, Any], int]:
    """One weekly retrain run (its warm rung's and its sweep's results), checked against this sweep."""
    where = f"history.retrain_runs[{i}] = {entry!r}"
    run = read_retrain_run(registry, entry, config.storage.optuna_url, max_budget, where)
    _check_retrain_run(run, where, config, space)
    past_task = str(run.task or f"retrain:{run.name}")
    fitter = SpaceFitter(space)
    observations, _ = observations_in_space(fitter, run.trials, run.results)
    name = f"{run.name}/{run.run_id}"
    sweep = PastSweep(name=name, observations=observations, mode=config.mode(), same_task=past_task == task)
    source = {"source": f"{registry.location_safe} run {name}", "kind": "retrain", "name": name,
              "trials": len({o.trial_id for o in observations}), "task": past_task, "same_task": past_task == task,
              "read_from": run.read_from}
    return sweep, source, fitter.outside
