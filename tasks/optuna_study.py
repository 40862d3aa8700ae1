"""The sweep as an Optuna study in ``storage.optuna_url``: what ``optuna-dashboard`` and Optuna users read.

One Optuna trial per rungflow trial, written once its outcome is known: its parameters (a conditional
space's inactive ones left out, as Optuna stores them), its score at each budget as intermediate values
(step = the budget, thousandths where budgets are fractional), and its state: COMPLETE at the full
budget, PRUNED when the gate stopped it (or the sweep stopped before its next rung), FAIL with the error.
User attributes carry the rungflow trial id, bracket, GPU-hours, CPU-hours, cost and status.

The ledger stays the source of truth for money; the study is rebuilt from it, so writing is idempotent:
a trial already in the study (by its rungflow id) is never written again, after ``kill -9`` and resume too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rungflow.budgets.ledger import SpendRecord
from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from rungflow.redact import redact
from rungflow.tasks.mirror import BackgroundSync, LedgerGroups

__all__ = ["StudyRecorder", "StudyError", "sweep_fingerprint", "task_fingerprint", "observations_from_study", "study_url_for"]

TRIAL_ATTR = "rungflow_trial"
BUDGETS_ATTR = "budgets"
FINGERPRINT_ATTR = "rungflow_fingerprint"
TASK_ATTR = "rungflow_task"  # the trainable and its options: a later sweep's history reads whether scores compare
_BATCH = 500  # trials a transaction: the end of a 10,000-trial ASHA sweep is 20 commits, none of them huge
log = logging.getLogger("rungflow.optuna_study")
# A trial's outcome as an Optuna state; anything that neither finished nor failed shows as pruned.
_OPTUNA_STATE = {"full_budget": "COMPLETE", "failed": "FAIL", "timeout": "FAIL"}
# Sections that may change on resume (rungflow.config.RESUMABLE) do not make it a different sweep.
_SWEEP_SECTIONS = ("name", "trainable", "metric", "space", "search", "scheduler")


class StudyError(ValueError):
    """The study cannot be used: the message names ``storage.optuna_url`` or the study and the fix."""


def sweep_fingerprint(config_json: Mapping[str, Any]) -> str:
    identity = {k: config_json.get(k) for k in _SWEEP_SECTIONS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_fingerprint(config_json: Mapping[str, Any]) -> str:
    """What a score means: the trainable and its options (a dataset, an instance), not the space searched."""
    return hashlib.sha256(json.dumps(config_json.get("trainable"), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _step(budget: float) -> int:
    # Optuna's steps are ints: whole budgets as they are, fractional ones in thousandths (order kept).
    return int(budget) if float(budget).is_integer() else int(round(budget * 1000))


class StudyRecorder:
    """Writes finished rungflow trials into one Optuna study; ``sync`` may be called as often as wanted."""

    def __init__(self, url: str, study_name: str, *, fingerprint: str, direction: str, space: SearchSpace,
                 max_budget: float, asynchronous: bool, metric: str | None = None, task: str | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.study_name = study_name
        self._space = space
        self._max_budget = max_budget
        self._asynchronous = asynchronous
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            if url.startswith("sqlite"):
                _fast_sqlite(storage.engine)
            self.study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                             load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=0))
        except Exception as exc:  # a bad URL, a dead server, a driver that is not installed
            hint = ("; its password was redacted from the run's config.json: give it in PGPASSWORD, or resume with "
                    "--set storage.optuna_url=..." if ":***@" in url else "")
            raise StudyError(f"storage.optuna_url = {redact(url)!r}: {type(exc).__name__}: "
                             f"{redact(str(exc)).splitlines()[0][:200]}; give an SQLAlchemy URL Optuna accepts "
                             f"(sqlite:///path/optuna.db, postgresql+psycopg://user@host/db) of a database that answers{hint}") from None
        held = self.study.user_attrs.get(FINGERPRINT_ATTR)
        if held is None and self.study.trials:
            raise StudyError(f"Optuna study {study_name!r} in storage.optuna_url already holds trials not written by "
                             "rungflow; give the sweep another name or another storage.optuna_url")
        if held is not None and held != fingerprint:
            raise StudyError(f"Optuna study {study_name!r} in storage.optuna_url holds a different sweep; give this sweep "
                             "another name, or another storage.optuna_url")
        if held is None:
            self.study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
            # Read by a later sweep that takes this one as history: which metric, and whether its task is the same.
            if metric is not None:
                import warnings

                with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self.study.set_metric_names([metric])
            if task is not None:
                self.study.set_user_attr(TASK_ATTR, task)
        self._written: set[str] = {t.user_attrs[TRIAL_ATTR] for t in self.study.get_trials(deepcopy=False)
                                   if TRIAL_ATTR in t.user_attrs}
        self._storage = storage
        self._bulk = isinstance(storage, optuna.storages.RDBStorage)
        self._groups = LedgerGroups()
        self._order: dict[str, int] = {}  # first-billed order of the trials not yet written: the study's numbering
        self._unwritten_of: dict[int, set[str]] = {}  # bracket -> its trials not yet in the study

        self._background = BackgroundSync(f"Optuna study {study_name!r}", self.sync_now)

    @property
    def written(self) -> int:
        return len(self._written)

    def sync(self, records: Sequence[SpendRecord], configs: Mapping[str, Mapping[str, Any]], *, final: bool = False) -> None:
        """Catch the study up with the ledger off this thread; ``final`` waits until it is written. ``records``
        is the ledger's live list and ``configs`` the sweep's live trials, not copies (see rungflow.tasks.mirror)."""
        self._background.submit(records, configs, final=final)

    def sync_now(self, records: Sequence[SpendRecord], configs: Mapping[str, Mapping[str, Any]], *, final: bool = False) -> int:
        """Write every trial whose outcome is known (all of them when ``final``); returns how many were added."""
        touched, raised = self._groups.catch_up(records)
        groups = self._groups
        for trial_id in touched:
            if trial_id not in self._written:
                self._order.setdefault(trial_id, len(self._order))
                self._unwritten_of.setdefault(groups.bracket_of[trial_id], set()).add(trial_id)
        if final:
            candidates: list[str] = list(groups.by_trial)
        else:
            # A record decides its own trial (complete, failed); a synchronous bracket's rising rung decides
            # the trials its gate left behind. ASHA may still promote anyone, so only the end decides those.
            pending = {t for t in touched if t not in self._written}
            if not self._asynchronous:
                pending.update(t for b in raised for t in self._unwritten_of.get(b, ()))
            candidates = sorted(pending, key=self._order.__getitem__)
        batch: list[tuple[str, Any]] = []
        for trial_id in candidates:
            if trial_id in self._written or trial_id not in configs:
                continue
            outcome = groups.outcome(trial_id, self._max_budget, final=final, asynchronous=self._asynchronous)
            if outcome is not None:
                state = _OPTUNA_STATE.get(outcome, "PRUNED")
                batch.append((trial_id, self._frozen(trial_id, groups.by_trial[trial_id], configs[trial_id], state, outcome)))
        for start in range(0, len(batch), _BATCH):
            chunk = batch[start:start + _BATCH]
            self._add_trials([frozen for _, frozen in chunk])
            for trial_id, _ in chunk:
                self._written.add(trial_id)
                self._unwritten_of.get(groups.bracket_of[trial_id], set()).discard(trial_id)
        return len(batch)

    def _add_trials(self, trials: list[Any]) -> None:
        """One transaction for many trials. ``study.add_trial`` costs ~30 queries and a commit a trial (25-40 ms
        on SQLite): 1,000 ASHA trials decided at the sweep's end were half a minute of tail."""
        if self._bulk:
            try:
                _bulk_add_trials(self._storage, self.study._study_id, trials)
                return
            except (ImportError, AttributeError, TypeError) as exc:  # an Optuna whose private models moved on
                log.info("Optuna study %r: written a trial at a time from now on (%s: %s)", self.study_name,
                         type(exc).__name__, exc)
                self._bulk = False
        for frozen in trials:
            self.study.add_trial(frozen)

    def _frozen(self, trial_id: str, records: list[SpendRecord], config: Mapping[str, Any], state: str, status: str) -> Any:
        optuna = self._optuna
        params, distributions = {}, {}
        for param in self._space.active(config):
            if param.name not in config:
                continue
            params[param.name] = config[param.name]
            distributions[param.name] = _distribution(optuna, param)
        intermediate = {_step(r.budget): float(r.score) for r in records
                        if r.ok and r.score is not None and math.isfinite(r.score)}
        last = records[-1]
        attrs = {TRIAL_ATTR: trial_id, "bracket": last.bracket, "status": status,
                 "gpu_hours": sum(r.gpu_hours for r in records), "cpu_hours": sum(r.cpu_hours for r in records),
                 "cost": sum(r.cost for r in records), "budget": last.budget,
                 # The budget of each intermediate value in step order: steps of fractional budgets are thousandths.
                 BUDGETS_ATTR: sorted({r.budget for r in records if r.ok and r.score is not None and math.isfinite(r.score)})}
        if state == "FAIL" and last.error:
            attrs["error"] = last.error[:500]
        kwargs: dict[str, Any] = {}
        if state == "COMPLETE":
            kwargs["value"] = float(last.score)  # type: ignore[arg-type]
        frozen = optuna.trial.create_trial(state=getattr(optuna.trial.TrialState, state), params=params,
                                           distributions=distributions, intermediate_values=intermediate,
                                           user_attrs=attrs, **kwargs)
        # The trial's own start and end (first attempt's start, last rung's finish), not when the study was
        # written: a study caught up after a database outage or on resume still shows when each trial ran, and
        # the dashboard's timeline and durations are the trials'. Naive local times, as Optuna writes its own.
        frozen.datetime_start = datetime.fromtimestamp(min(r.started_at for r in records))
        frozen.datetime_complete = datetime.fromtimestamp(max(max(r.finished_at for r in records),
                                                              min(r.started_at for r in records)))
        return frozen


def _bulk_add_trials(storage: Any, study_id: int, trials: Sequence[Any]) -> None:
    """``study.add_trial`` for each of ``trials``, in one transaction, through Optuna's own table models.

    The rows are what Optuna's ``_get_prepared_new_trial`` writes (tests/test_optuna_study.py reads both back
    and compares them), without its per-attribute lookups: rungflow writes each trial once, whole, and
    the study's fingerprint already pins the distributions Optuna would check for compatibility.
    """
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import func

    session = storage.scoped_session()
    try:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)  # numbers are counted under it
        number = session.query(func.count(models.TrialModel.trial_id)).filter(
            models.TrialModel.study_id == study_id).scalar()
        for offset, frozen in enumerate(trials):
            row = models.TrialModel(study_id=study_id, number=number + offset, state=frozen.state)
            row.datetime_start, row.datetime_complete = frozen.datetime_start, frozen.datetime_complete
            for name, value in frozen.params.items():
                distribution = frozen.distributions[name]
                row.params.append(models.TrialParamModel(param_name=name, param_value=distribution.to_internal_repr(value),
                                                         distribution_json=distribution_to_json(distribution)))
            if frozen.value is not None:
                stored, kind = models.TrialValueModel.value_to_stored_repr(frozen.value)
                row.values.append(models.TrialValueModel(objective=0, value=stored, value_type=kind))
            for step, value in frozen.intermediate_values.items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                row.intermediate_values.append(models.TrialIntermediateValueModel(
                    step=step, intermediate_value=stored, intermediate_value_type=kind))
            for key, value in frozen.user_attrs.items():
                row.user_attributes.append(models.TrialUserAttributeModel(key=key, value_json=json.dumps(value)))
            session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _fast_sqlite(engine: Any) -> None:
    """WAL and synchronous=NORMAL: a commit per trial without an fsync each. The study is a mirror the
    ledger can rebuild, so the last commits before a power cut are not worth an fsync apiece."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened before the listener get the pragmas too


def _distribution(optuna: Any, param: Any) -> Any:
    if isinstance(param, FloatParam):
        return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, IntParam):
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log)
    assert isinstance(param, CategoricalParam)
    return optuna.distributions.CategoricalDistribution(list(param.choices))


def study_url_for(config: Any, run_dir: Path | None = None) -> str:
    """``storage.optuna_url``, or ``sqlite:///RUN_DIR/optuna.db`` of the directory the sweep runs in."""
    return config.storage.optuna_url or (f"sqlite:///{(Path(run_dir) / 'optuna.db').resolve()}" if run_dir is not None
                                         else config.optuna_url())


def observations_from_study(url: str, study_name: str, prefix: str = "") -> list[dict[str, Any]]:
    """A rungflow-written study as warm-start observations ``{trial_id, config, budget, score}``: one per
    intermediate value (the score at each budget), and a failed trial as its last budget with no score.
    ``prefix`` keeps the trial ids of two sweeps apart. Raises whatever Optuna raises for a missing study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=url)
    observations: list[dict[str, Any]] = []
    for trial in study.get_trials(deepcopy=False):
        trial_id = trial.user_attrs.get(TRIAL_ATTR)
        if trial_id is None:
            continue
        steps = sorted(trial.intermediate_values)
        budgets = trial.user_attrs.get(BUDGETS_ATTR) or steps
        if len(budgets) != len(steps):  # written by a rungflow that kept no budgets: steps are the budgets
            budgets = steps
        for step, budget in zip(steps, budgets):
            observations.append({"trial_id": prefix + trial_id, "config": dict(trial.params), "budget": float(budget),
                                 "score": float(trial.intermediate_values[step])})
        if trial.state == optuna.trial.TrialState.FAIL:
            observations.append({"trial_id": prefix + trial_id, "config": dict(trial.params),
                                 "budget": float(trial.user_attrs.get("budget", 0.0)), "score": None})
    return observations


def open_study_for(config: Any, *, asynchronous: bool, max_budget: float, mode: str,
                   run_dir: Path | None = None) -> StudyRecorder:
    """The recorder of a sweep config (``rungflow.config.SweepConfig``): study named after the sweep, in
    ``storage.optuna_url`` (default ``sqlite:///RUN_DIR/optuna.db`` of the directory the sweep runs in)."""
    url = study_url_for(config, run_dir)
    return StudyRecorder(url, config.name, fingerprint=sweep_fingerprint(config.model_dump(mode="json")),
                         direction="maximize" if mode == "max" else "minimize", space=config.search_space(),
                         max_budget=max_budget, asynchronous=asynchronous, metric=config.metric_name(),
                         task=task_fingerprint(config.model_dump(mode="json")))
