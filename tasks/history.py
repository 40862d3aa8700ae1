"""Reads ``history:``: earlier sweeps' run directories, Optuna studies and weekly retrain runs, as results in this
sweep's space.

Weekly retrain runs in a model registry (``registry`` + ``retrain_runs``) are read by
:mod:`rungflow.tasks.history_retrain`: the weekly retrain's warm start is this reader, last week's run the history.

Data only: a run directory's ``config.json``, ``ledger.jsonl`` and ``result.json`` and a registry's run records
are parsed as JSON and a study's rows read through Optuna's storage API; nothing is unpickled and no checkpoint is opened, so a history
from another team's storage cannot run code here. Everything that makes a source unusable (it cannot be
read, a parameter is missing or of another type, another metric or mode) is a :class:`HistoryError` of one
line naming the source and the fix, raised before the sweep spends anything. What is usable but not whole
(values outside this sweep's ranges, studies of another space under ``studies: all``) is left out and said
in :attr:`History.notes`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rungflow.budgets.history_stop import learn, top_fidelity_scores
from rungflow.budgets.ledger import SpendRecord
from rungflow.budgets.prior import PastSweep, config_key
from rungflow.budgets.space import SearchSpace, SpaceError
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
from rungflow.tasks.history_s3 import fetch_s3_runs
from rungflow.tasks.optuna_study import TASK_ATTR, task_fingerprint
from rungflow.tasks.s3 import is_s3_url

__all__ = ["HistoryError", "History", "load_history", "prior_for", "save_prior", "given_configs"]


@dataclass
class History:
    sweeps: list[PastSweep] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)  # per sweep: where it came from, its trials, its task
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"sweeps": len(self.sweeps), "trials": sum(s["trials"] for s in self.sources),
                "tasks": len({s["task"] for s in self.sources}), "same_task": sum(s["same_task"] for s in self.sources),
                "sources": self.sources, "notes": self.notes, "stop_rule": self.stop_rule()}

    def stop_rule(self) -> dict[str, Any] | None:
        """The stop rule these sweeps' incumbent trajectories teach (:mod:`rungflow.budgets.history_stop`), or None
        where too few of them are long enough; saved with the prior, so a resumed sweep judges by the same rule."""
        rule = learn(top_fidelity_scores([(o.budget, o.score) for o in s.observations], s.mode) for s in self.sweeps)
        return rule.to_json() if rule is not None else None


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HistoryError(f"{where}: {path.name} is missing, so this is not a finished rungflow run directory; "
                           "point history.runs at one, or resume that sweep first") from None
    except (OSError, ValueError) as exc:
        raise HistoryError(f"{where}: {path.name} cannot be read ({type(exc).__name__}); fix its permissions or leave "
                           "it out of history.runs") from None


def _run_dirs(patterns: list[str], own: Path | None) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for i, pattern in enumerate(patterns):
        if is_s3_url(pattern):
            continue  # fetched by tasks/history_s3.py
        where = f"history.runs[{i}] = {pattern!r}"
        expanded = str(Path(pattern).expanduser())
        if glob.has_magic(expanded):
            paths = [Path(p) for p in sorted(glob.glob(expanded)) if Path(p).is_dir()]
            if not paths:
                raise HistoryError(f"{where}: matches no directory; fix the glob, or remove it")
        else:
            if not Path(expanded).is_dir():
                raise HistoryError(f"{where}: no such run directory; fix the path, or remove it")
            paths = [Path(expanded)]
        # A glob such as runs/digits-* matches the sweep's own directory: never its own history.
        out += [(where, p) for p in paths if own is None or p.resolve() != own.resolve()]
    return out


def _read_run(path: Path, where: str, config: Any, space: SearchSpace, task: str,
              shown: str | None = None) -> tuple[PastSweep, dict[str, Any], int]:
    """``shown``: where the run is as the user named it (an S3 URL), when ``path`` is a local copy of it."""
    shown = shown or str(path)
    where = f"{where} ({shown})" if shown not in where else where
    saved = _read_json(path / "config.json", where)
    result = _read_json(path / "result.json", where)
    metric = result.get("metric") or {}
    if metric.get("name") != config.metric_name() or metric.get("mode") != config.mode():
        raise HistoryError(f"{where}: it optimised {metric.get('name')!r} ({metric.get('mode')}) and this sweep "
                           f"optimises {config.metric_name()!r} ({config.mode()}); leave it out of history.runs, or "
                           "set metric: to match")
    try:
        if saved.get("space") is not None:
            source_space = SearchSpace.from_dict(saved["space"])
        else:
            from rungflow.config import validate

            source_space = validate(saved).search_space()
    except (SpaceError, ValueError, TypeError) as exc:
        raise HistoryError(f"{where}: its config.json has no readable space ({str(exc)[:120]}); leave it out of "
                           "history.runs") from None
    check_params(space, {p.name: param_kind(p) for p in source_space.params}, where,
                  "leave that run out of history.runs, or remove the parameter from this sweep's space")
    ledger = path / "ledger.jsonl"
    results: list[tuple[str, float, float | None]] = []
    spent: list[float] = []  # GPU-hours billed so far, after each result
    brackets: dict[int, float] = {}
    try:
        with ledger.open("r", encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill: the ones before it are whole
                if entry.get("type") == "spend":
                    record = SpendRecord.from_json(entry["record"])
                    ok = record.ok and record.score is not None and math.isfinite(record.score)
                    results.append((record.trial_id, float(record.budget), float(record.score) if ok else None))
                    spent.append((spent[-1] if spent else 0.0) + record.gpu_seconds / 3600.0)
                    brackets[record.bracket] = brackets.get(record.bracket, 0.0) + record.gpu_seconds / 3600.0
    except OSError as exc:
        raise HistoryError(f"{where}: ledger.jsonl cannot be read ({type(exc).__name__}); point history.runs at a "
                           "run directory rungflow wrote") from None
    fitter = SpaceFitter(space)
    observations, kept = observations_in_space(fitter, result.get("trials") or {}, results)
    trainable = saved.get("trainable") or {}
    past_task = task_fingerprint({"trainable": trainable})
    name = str(saved.get("name") or path.name)
    sweep = PastSweep(name=f"{name}@{path.name}", observations=observations, mode=config.mode(), same_task=past_task == task,
                      spent_gpu_hours=tuple(spent[i] for i in kept),
                      first_bracket_gpu_hours=brackets[min(brackets)] if brackets else None)
    source = {"source": shown, "kind": "run", "name": name, "trials": len({o.trial_id for o in observations}),
              "task": past_task, "same_task": past_task == task}
    return sweep, source, fitter.outside


def _open_storage(url: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = redact(url)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        # Optuna would create an empty database there: a typo must not look like a history of no studies.
        raise HistoryError(f"history.optuna_url = {shown!r}: no such SQLite file; fix the path")
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        names = optuna.study.get_all_study_names(storage)
    except Exception as exc:
        raise HistoryError(f"history.optuna_url = {shown!r}: {type(exc).__name__}: {redact(str(exc)).splitlines()[0][:160]}; "
                           "give an Optuna RDB storage that answers (sqlite:///path/optuna.db, "
                           "postgresql+psycopg://user@host/db, or {secret: NAME})") from None
    return storage, names


def _check_study(study: Any, where: str, config: Any, space: SearchSpace, leave_out: str) -> None:
    """Another metric or mode, a missing parameter or one of another type: one line naming ``where``."""
    import optuna

    mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
    metric = (study.metric_names or [None])[0]
    if mode != config.mode() or (metric is not None and metric != config.metric_name()):
        raise HistoryError(f"{where}: it {'maximised' if mode == 'max' else 'minimised'} {metric or 'its objective'!r} "
                           f"and this sweep {'maximises' if config.mode() == 'max' else 'minimises'} "
                           f"{config.metric_name()!r}; leave it out of {leave_out}, or set metric: to match")
    check_params(space, study_param_kinds(study), where, f"leave that study out of {leave_out}, or remove the parameter "
                                                     "from this sweep's space")


def _read_study(storage: Any, name: str, config: Any, space: SearchSpace, task: str, max_budget: float,
                shown: str) -> tuple[PastSweep, dict[str, Any], int]:
    import optuna

    where = f"history.studies: {name!r} in {shown}"
    study = optuna.load_study(study_name=name, storage=storage)
    _check_study(study, where, config, space, "history.studies")
    trials, results = study_results(study, max_budget)
    fitter = SpaceFitter(space)
    observations, _ = observations_in_space(fitter, trials, results)
    past_task = str(study.user_attrs.get(TASK_ATTR) or f"study:{name}")
    sweep = PastSweep(name=name, observations=observations, mode=config.mode(), same_task=past_task == task)
    source = {"source": f"{shown} study {name}", "kind": "study", "name": name,
              "trials": len({o.trial_id for o in observations}), "task": past_task, "same_task": past_task == task}
    return sweep, source, fitter.outside


def load_history(config: Any, run_dir: Path | None = None) -> History | None:
    """The history of a sweep config (``rungflow.config.SweepConfig``), or None without ``history:``."""
    h = config.history
    if h is None:
        return None
    space = config.search_space()
    task = task_fingerprint(config.model_dump(mode="json"))
    _, max_budget = config.budget_range()
    history = History()
    runs: list[tuple[str, Path, str | None]] = [(where, path, None) for where, path in _run_dirs(h.runs, run_dir)]
    with tempfile.TemporaryDirectory(prefix="rungflow-history-") as fetched:
        for i, pattern in enumerate(h.runs):
            if is_s3_url(pattern):
                where = f"history.runs[{i}] = {redact(pattern)!r}"
                try:
                    runs += [(where, path, url) for url, path in fetch_s3_runs(pattern, where, config.storage.s3,
                                                                             Path(fetched) / str(i))]
                except ValueError as exc:
                    raise HistoryError(str(exc)) from None
        for where, path, shown in runs:
            sweep, source, outside = _read_run(path, where, config, space, task, shown)
            history.sweeps.append(sweep)
            history.sources.append(source)
            if outside:
                history.notes.append(f"{shown or path}: {outside} trial(s) outside this sweep's ranges left out")
    if h.retrain_runs:
        from rungflow.tasks.history_retrain import retrain_run_as_history
        from rungflow.tasks.registry import ModelRegistry

        registry = ModelRegistry(str(h.registry))
        for i, entry in enumerate(h.retrain_runs):
            sweep, source, outside = retrain_run_as_history(registry, i, entry, config, space, task, max_budget)
            history.sweeps.append(sweep)
            history.sources.append(source)
            if outside:
                history.notes.append(f"retrain run {source['name']}: {outside} trial(s) outside this sweep's ranges left out")
    if h.optuna_url is not None:
        shown = redact(str(h.optuna_url))
        storage, names = _open_storage(str(h.optuna_url))
        if h.studies == "all":
            own = {config.name} if (config.storage.optuna_url or "") == h.optuna_url else set()
            wanted = []
            for name in names:
                if name in own:
                    continue
                import optuna

                study = optuna.load_study(study_name=name, storage=storage)
                kinds = study_param_kinds(study)
                metric = (study.metric_names or [None])[0]
                mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
                if not all(kinds.get(p.name) == param_kind(p) for p in space.params):
                    history.notes.append(f"study {name}: another space, left out")
                elif mode != config.mode() or metric not in (None, config.metric_name()):
                    history.notes.append(f"study {name}: another metric or mode, left out")
                else:
                    wanted.append(name)
            if not wanted:
                raise HistoryError(f"history.studies: all: no study in {shown} has this sweep's parameters "
                                   f"({', '.join(space.names)}); name the studies, or use another history.optuna_url")
        else:
            assert h.studies is not None
            for name in h.studies:
                if name not in names:
                    held = ", ".join(sorted(names)[:8]) + (" ..." if len(names) > 8 else "")
                    raise HistoryError(f"history.studies: no study {name!r} in {shown} (it holds: {held or 'none'}); "
                                       "fix the name, or write studies: all")
            wanted = list(h.studies)
        for name in wanted:
            sweep, source, outside = _read_study(storage, name, config, space, task, max_budget, shown)
            history.sweeps.append(sweep)
            history.sources.append(source)
            if outside:
                history.notes.append(f"study {name}: {outside} trial(s) outside this sweep's ranges left out")
    if (h.runs or h.studies or h.retrain_runs) and not any(s.observations for s in history.sweeps):
        raise HistoryError("history: its sources hold no finished trial in this sweep's space; point it at sweeps that "
                           "ran, or remove the section")
    return history


PRIOR_FILE = "history.json"


def prior_for(config: Any, run_dir: Path) -> dict[str, Any] | None:
    """The prior a sweep in ``run_dir`` starts from: ``{"summary", "portfolio", "warm_start"}``, or None.

    A resumed sweep reads the one its first session saved (:func:`save_prior`), not the sources again: a glob
    that now matches more runs would change the proposals the ledger replays.
    """
    if config.history is None:
        return None
    saved = run_dir / PRIOR_FILE
    if saved.is_file() and (run_dir / "ledger.jsonl").is_file():
        try:
            return json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HistoryError(f"{saved} cannot be read ({type(exc).__name__}); a resume replays the prior saved "
                               "there: restore it, or start a new sweep with a new run directory") from None
    from rungflow.budgets.prior import build_prior

    history = load_history(config, run_dir)
    assert history is not None
    h = config.history
    given = given_configs(config)
    prior = build_prior(config.search_space(), history.sweeps, portfolio_size=h.portfolio - len(given),
                        model=h.model != "off", every_task=h.model == "all")
    if given:
        given_keys = {config_key(g) for g in given}
        learned = [c for c in prior.portfolio if config_key(c) not in given_keys]
        prior.portfolio = [*given, *learned][:h.portfolio]
        if len(given) < len(h.configs):
            history.notes.append(f"history.configs: {len(h.configs) - len(given)} of {len(h.configs)} outside this "
                                 "sweep's space, left out")
    from rungflow.budgets.transfer_prior import transfer_data

    transfer = transfer_data(history.sweeps, config.search_space()) if h.model_prior == "auto" else []
    from rungflow.budgets.prior_estimate import estimate_prior

    expected = estimate_prior(config.search_space(), history.sweeps, h.portfolio)
    summary = {**history.summary(), "configs_source": h.configs_source, "configs": len(h.configs),
               "configs_in_space": len(given), "portfolio_size": h.portfolio, "model": h.model,
               "model_observations": len(prior.model_observations), "expected": dataclasses.asdict(expected),
               "model_prior": h.model_prior, "model_prior_sweeps": len(transfer)}
    return {"summary": summary, "portfolio": prior.portfolio, "warm_start": prior.warm_start(), "transfer": transfer}


def given_configs(config: Any) -> list[dict[str, Any]]:
    """``history.configs`` that this sweep's space holds, at most ``history.portfolio`` of them; a list given where
    the space holds none of them is one line, since trying nothing of it is not what was asked."""
    h = config.history
    if h is None or not h.configs:
        return []
    space = config.search_space()
    held = [dict(c) for c in h.configs if space.contains(c)]
    if not held:
        raise HistoryError(f"history.configs: none of its {len(h.configs)} configurations is in this sweep's space "
                           f"({', '.join(space.names[:6])}{' ...' if len(space.names) > 6 else ''}); give configurations "
                           "that set exactly the space's active parameters within its ranges, or remove them")
    return held[:h.portfolio]


def save_prior(run_dir: Path, prior: Mapping[str, Any]) -> None:
    from rungflow.results import write_json_atomic

    write_json_atomic(run_dir / PRIOR_FILE, prior)
