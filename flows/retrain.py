"""The weekly retrain: this week's data → warm-started budget-capped sweep → full-budget winner → champion vs challenger.

One flow run (``rungflow-retrain``):

1. ``load_week``: read this week's table (CSV/Parquet, local or ``s3://``), check its columns
   against last week's run (new or missing columns stop the run, naming them), split it.
2. The warm rung: last week's best configurations trained at the full budget on this week's data,
   best first and one at a time, until one reaches last week's quality (its best score minus
   ``warm_start.tolerance``; the budget controller's target stop). If one does, the problem is
   stable: the sweep only explores, capped at ``warm_start.stable_budget_fraction`` of the last
   full search's GPU-hours (0 skips it). If none does, the week has drifted and the sweep runs
   with its full caps.
3. ``run_sweep``: a budget-capped sweep (:mod:`flows.sweep`) whose ``history:`` is last week's run
   and this week's warm rung, read as any sweep's history is (:mod:`rungflow.tasks.history_retrain`:
   last week's Optuna studies, else the registry's copy), their results the model's priors.
4. ``retrain_winner``: the best configuration trained from scratch at the full budget.
5. ``evaluate_models``: challenger and production model (the champion) scored on the same held-out
   rows; the challenger is promoted only if it beats the champion by more than ``promote_margin``.
6. Everything spent, found and decided goes to the registry (``runs/<run_id>.json``, and the study
   for next week's warm start under ``studies/``) and to a Prefect markdown artifact.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rungflow.config import ConfigError, SweepConfig, _one_line, slug, validate
from rungflow.tasks.data import DataError, Dataset, DataSpec, load_dataset
from rungflow.tasks.registry import ModelRegistry, RegistryError, default_registry
from rungflow.tasks.s3 import S3Error

__all__ = ["RetrainConfig", "RetrainError", "SchemaChanged", "retrain_flow", "load_retrain_config", "run_retrain"]

log = logging.getLogger("rungflow.retrain")


class RetrainError(RuntimeError):
    """A retrain that cannot go on; ``str()`` is one line saying what and the fix. Nothing recorded is lost."""


class SchemaChanged(DataError):
    """This week's columns differ from last week's."""


class WarmStartConfig(BaseModel):
    """How much of last week's study this week starts from.

    Up to ``top_k`` of last week's best configurations are trained at the full budget on this
    week's data, best first and one at a time (the *warm rung*), until one scores within
    ``tolerance`` of last week's best. Then the problem is stable and the exploratory sweep gets
    ``stable_budget_fraction`` of the GPU-hours the last full search spent (0 skips it); otherwise
    the week has drifted and the sweep runs with its full caps. Either way its searcher starts
    from last week's observations and the warm rung's as priors.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    top_k: int = Field(3, ge=0, description="last week's best configurations tried first, at the full budget, best first")
    tolerance: float = Field(0.005, ge=0.0, description="a stable problem reaches last week's best score minus this")
    stable_budget_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="a stable week's sweep: this share of the last full search's GPU-hours")


class RetrainConfig(BaseModel):
    """A weekly retrain: the model's name in the registry, the data, the sweep, and the promotion rule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the model's name in the registry, e.g. churn-weekly")
    data: dict[str, Any] = Field(description="rungflow.tasks.data.DataSpec fields: source, label, task, validation_fraction, seed")
    sweep: dict[str, Any] = Field(description="a sweep config without name, trainable.options.data and storage.run_dir")
    registry: str = Field(default_factory=default_registry, description="a directory or s3://bucket/prefix")
    promote_margin: float = Field(0.0, ge=0.0, description="the challenger must beat the champion by more than this")
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    allow_schema_change: bool = False
    run_root: str = Field(default_factory=lambda: os.environ.get("RUNGFLOW_RUNS") or "runs/retrain")

    @field_validator("sweep")
    @classmethod
    def _no_history(cls, sweep: dict[str, Any]) -> dict[str, Any]:
        if sweep.get("history") is not None:
            raise ValueError("has a history: section; a retrain's history is its own last week's run (warm_start:), "
                             "so remove sweep.history, or sweep that history with rungflow run")
        return sweep

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name or slug(name) != name.lower():
            raise ValueError(f"{name!r}: use lowercase letters, digits and dashes, e.g. digits-weekly")
        return name

    def data_spec(self, source: str | None = None) -> DataSpec:
        return DataSpec.parse({**self.data, **({"source": source} if source else {})})

    def sweep_config(self, spec: DataSpec, run_dir: Path, run_id: str, week: int = 0) -> SweepConfig:
        """The sweep of the ``week``-th run (0: the first): its search seed moves on by one a week.

        With last week's seed, a model-based searcher's random start-up proposals would repeat
        last week's configurations, whose results this week's warm start already holds.
        """
        raw = json.loads(json.dumps(self.sweep))
        raw["name"] = f"{self.name}-{run_id}"
        search = raw.setdefault("search", {})
        search["seed"] = int(search.get("seed", 0)) + week
        trainable = raw.setdefault("trainable", {})
        trainable.setdefault("options", {})["data"] = spec.model_dump(mode="json")
        raw.setdefault("storage", {})["run_dir"] = str(run_dir)
        try:
            return validate(raw)
        except ConfigError as exc:
            raise ConfigError(f"sweep.{exc}" if not str(exc).startswith("sweep.") else str(exc)) from None


def load_retrain_config(config: str | Path | Mapping[str, Any]) -> RetrainConfig:
    """A validated :class:`RetrainConfig` from a YAML path or a mapping; errors are one-line ``ConfigError``."""
    if isinstance(config, Mapping):
        data: Any = dict(config)
    else:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"retrain config {str(path)!r} does not exist; pass a YAML like deployments/retrain-digits.yaml")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"retrain config {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("retrain config must be a mapping with name, data and sweep")
    try:
        return RetrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


# --- steps ----------------------------------------------------------------------------------------
def last_run(registry: ModelRegistry, name: str) -> dict[str, Any] | None:
    """The most recent run record of ``name`` (run ids sort by time), or None in the first week."""
    keys = registry.keys(name, "runs")
    return registry.get_json(name, "runs", keys[-1]) if keys else None


def check_schema(schema: Mapping[str, str], previous: Mapping[str, Any] | None, source: str) -> None:
    """Raise :class:`SchemaChanged` naming the columns that appeared or disappeared since ``previous``."""
    if not previous or not previous.get("data", {}).get("schema"):
        return
    before = previous["data"]["schema"]
    new = sorted(set(schema) - set(before))
    missing = sorted(set(before) - set(schema))
    if new or missing:
        parts = ([f"new columns {new}"] if new else []) + ([f"missing columns {missing}"] if missing else [])
        raise SchemaChanged(
            f"data.source = {source!r}: the schema changed since run {previous['run_id']}: {'; '.join(parts)}; fix the "
            "export, or set allow_schema_change: true to retrain without last week's study"
        )


@task(name="load-week", cache_policy=NO_CACHE, persist_result=False)
def load_week(spec: DataSpec, previous: dict[str, Any] | None, allow_schema_change: bool) -> Dataset:
    """This week's table, split; its columns checked against last week's."""
    dataset = load_dataset(spec)
    if not allow_schema_change:
        check_schema(dataset.schema, previous, spec.source)
    return dataset


def _studies_of(sweeps: list[tuple[SweepConfig, Path, str, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """Where this week's Optuna studies are (their URLs redacted: a password never reaches the record)."""
    from rungflow.redact import redact
    from rungflow.tasks.optuna_study import study_url_for

    return [{"url": redact(study_url_for(config, run_dir)), "study": config.name, "prefix": prefix}
            for config, run_dir, prefix, result in sweeps if result is not None]


def ranked_configs(observations: Iterable[Any], top_k: int, mode: str) -> tuple[list[dict[str, Any]], float | None]:
    """Up to ``top_k`` configurations, best at the highest budget reached first, and the best score: the warm rung's
    queue and its yardstick. ``observations``: :class:`~rungflow.budgets.searchers.Observation` or its dict form."""
    as_dicts = [o if isinstance(o, Mapping) else {"trial_id": o.trial_id, "config": o.config, "budget": o.budget,
                                                  "score": o.score} for o in observations]
    sign = 1.0 if mode == "max" else -1.0
    best_per_trial: dict[str, Mapping[str, Any]] = {}
    for o in as_dicts:
        if o.get("score") is None:
            continue
        held = best_per_trial.get(o["trial_id"])
        if held is None or (o["budget"], sign * o["score"]) > (held["budget"], sign * held["score"]):
            best_per_trial[o["trial_id"]] = o
    ranked = sorted(best_per_trial.values(), key=lambda o: (-o["budget"], -sign * o["score"]))
    return [dict(o["config"]) for o in ranked[:top_k]], (ranked[0]["score"] if ranked else None)


def warm_start_from(registry: ModelRegistry, name: str, previous: dict[str, Any] | None, top_k: int,
                    mode: str, optuna_url: str | None = None) -> dict[str, Any] | None:
    """Last week's ``top_k`` configurations and best score, read as the history reader reads a retrain run
    (its Optuna studies, else the registry's JSON copy): what this week's warm rung will retrain."""
    from rungflow.tasks.history_retrain import read_retrain_run

    if previous is None:
        return None
    run = read_retrain_run(registry, f"{name}/{previous['run_id']}", optuna_url)
    observations = run.observations()
    if not observations:
        return None
    enqueue, last_best = ranked_configs(observations, top_k, mode)
    return {"observations": observations, "enqueue": enqueue, "from_run": previous["run_id"], "last_best": last_best,
            "source": run.read_from}


def last_week_history(cfg: RetrainConfig, previous: Mapping[str, Any]) -> dict[str, Any]:
    """The ``history:`` section that makes last week's run this week's prior.

    ``model: all``: last week's results are this task's, though the table changed (the task fingerprint holds the
    data spec). ``portfolio: 0``: the warm rung already plays the portfolio's part (last week's best, retrained
    on this week's data, judged against last week's score), so the sweep proposes no configuration of last week's
    again, and with no portfolio the keep-or-drop judgement has nothing to drop: the priors stay, as they always did.
    """
    registry = cfg.registry if cfg.registry.startswith("s3://") else str(Path(cfg.registry).expanduser().resolve())
    return {"registry": registry, "retrain_runs": [f"{cfg.name}/{previous['run_id']}"], "model": "all",
            "portfolio": 0}


def with_history(sweep_config: SweepConfig, history: Mapping[str, Any] | None) -> SweepConfig:
    raw = sweep_config.model_dump(mode="json")
    raw["history"] = None if history is None else dict(history)
    return validate(raw)


def warm_rung_config(sweep_config: SweepConfig, count: int, run_dir: Path, target: float | None) -> SweepConfig:
    """The sweep config that trains ``count`` enqueued configurations at the full budget, best first, one at a time.

    One slot, so the order holds and nothing runs beside the configuration that reaches ``target``
    (the budget controller's target stop ends the rung there); one rung, so no trial is cut short.
    """
    _, hi = sweep_config.budget_range()
    raw = sweep_config.model_dump(mode="json")
    raw["name"] = f"{sweep_config.name}-warm"
    raw["scheduler"] = {"kind": "asha", "min_budget": hi, "max_budget": hi, "eta": sweep_config.scheduler.eta}
    raw["search"] = {"algorithm": "random", "seed": sweep_config.search.seed, "num_trials": count}
    raw["runtime"] = {**raw["runtime"], "max_concurrent": 1}
    raw["budget"] = {**raw["budget"], "target_score": target, "min_gain_per_gpu_hour": None}
    raw["storage"] = {**raw["storage"], "run_dir": str(run_dir)}
    raw["history"] = None  # it trains the queue it is given, nothing proposed from a model
    return validate(raw)


def explore_budget(sweep_config: SweepConfig, gpu_hours: float) -> SweepConfig:
    """``sweep_config`` capped at ``gpu_hours`` (or its own cap, if lower); its money cap scaled alike."""
    raw = sweep_config.model_dump(mode="json")
    budget = raw["budget"]
    cap = budget.get("max_gpu_hours")
    budget["max_gpu_hours"] = gpu_hours if cap is None else min(cap, gpu_hours)
    if budget.get("max_cost") is not None and cap:
        budget["max_cost"] = budget["max_cost"] * budget["max_gpu_hours"] / cap
    for key in ("window_gpu_hours", "min_gpu_hours"):
        if budget.get(key) is not None:
            budget[key] = min(budget[key], budget["max_gpu_hours"])
    return validate(raw)


def search_reference(previous: Mapping[str, Any] | None) -> float | None:
    """GPU-hours of the last full search (a stable week's short sweep does not reset the reference)."""
    if previous is None:
        return None
    warm = previous.get("warm_start") or {}
    if warm.get("reference_gpu_hours") is not None:
        return float(warm["reference_gpu_hours"])
    return float(previous.get("sweep", {}).get("gpu_hours") or 0.0) or None


def study_of(result: Mapping[str, Any] | None, prefix: str = "") -> list[dict[str, Any]]:
    """A sweep's results as observations (``prefix`` keeps trial ids of two sweeps apart)."""
    if not result:
        return []
    trials = result.get("trials", {})
    return [{"trial_id": prefix + e["trial_id"], "config": trials.get(e["trial_id"], {}), "budget": e["budget"],
             "score": e["score"] if e["status"] == "completed" else None}
            for e in result.get("events", []) if e["status"] != "cancelled"]


def _better(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, mode: str) -> Mapping[str, Any] | None:
    """The better of two ``best`` entries: higher budget first, then score (the leaderboard's order)."""
    if a is None or b is None:
        return a or b
    sign = 1.0 if mode == "max" else -1.0
    return a if (a["budget"], sign * a["score"]) >= (b["budget"], sign * b["score"]) else b


@task(name="retrain-winner", cache_policy=NO_CACHE, persist_result=False)
def retrain_winner(sweep_config: SweepConfig, config: dict[str, Any], dataset: Dataset, out_dir: Path) -> dict[str, Any]:
    """The winning configuration from scratch at the full budget, saved to ``out_dir``; billed like a trial."""
    from rungflow.tasks.models import fit_model, save_model

    _, max_budget = sweep_config.budget_range()
    gpus = sweep_config.runtime.gpus_per_trial
    t0 = time.perf_counter()
    model = fit_model(sweep_config.trainable.kind, sweep_config.trainable.options, config, max_budget, dataset,
                      seed=sweep_config.search.seed)
    wall = time.perf_counter() - t0
    save_model(model, out_dir)
    gpu_hours = wall * gpus / 3600.0
    return {"budget": max_budget, "wall_seconds": wall, "gpu_hours": gpu_hours,
            "cost": gpu_hours * sweep_config.budget.price_per_gpu_hour, "dir": str(out_dir)}


def reuse_best_model(result: Mapping[str, Any] | None, best: Mapping[str, Any], sweep_config: SweepConfig) -> dict[str, Any] | None:
    """The sweep's own refit of ``best`` (``best_model/``) when it was made at the full budget; billed like a trial."""
    saved = (result or {}).get("best_model") or {}
    _, hi = sweep_config.budget_range()
    if not saved.get("path") or saved.get("error") or saved.get("trial_id") != best["trial_id"] or float(saved.get("budget", -1)) < hi - 1e-9:
        return None
    gpu_hours = float(saved.get("refit_seconds", 0.0)) * sweep_config.runtime.gpus_per_trial / 3600.0
    return {"budget": hi, "wall_seconds": saved.get("refit_seconds", 0.0), "gpu_hours": gpu_hours,
            "cost": gpu_hours * sweep_config.budget.price_per_gpu_hour, "dir": saved["path"], "reused": True}


def held_out_score(model: Any, dataset: Dataset) -> float:
    """Accuracy (classification) or R² (regression) on ``dataset``'s held-out rows, from raw columns.

    Raw columns, not the encoded matrix: last week's model encodes with its own categories, so both
    models see exactly the same rows and each encodes them as it was trained to.
    """
    _, valid = dataset.frames()
    features = valid.drop(columns=[dataset.label])
    pred = model.predict(features)
    if dataset.task == "classification":
        assert dataset.classes is not None
        truth = np.asarray(dataset.classes, dtype=object)[dataset.y_valid]
        return float(np.mean([str(p) == str(t) for p, t in zip(pred, truth)]))
    y = np.asarray(dataset.y_valid, dtype=np.float64)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - np.asarray(pred, dtype=np.float64)) ** 2).sum()) / total if total > 0 else 0.0


@task(name="evaluate-models", cache_policy=NO_CACHE, persist_result=False)
def evaluate_models(registry: ModelRegistry, name: str, challenger_dir: str, dataset: Dataset) -> dict[str, Any]:
    """Challenger and champion on the same held-out split; a corrupt or missing champion is reported, not loaded."""
    from rungflow.tasks.models import load_model

    out: dict[str, Any] = {"metric": "accuracy" if dataset.task == "classification" else "r2",
                           "held_out_rows": int(len(dataset.y_valid)),
                           "challenger": held_out_score(load_model(challenger_dir), dataset),
                           "champion": None, "champion_version": registry.production(name), "champion_error": None}
    if out["champion_version"] is not None:
        try:
            out["champion"] = held_out_score(registry.load_model(name), dataset)
        except Exception as exc:  # a corrupt or unloadable champion cannot defend its title; say why
            out["champion_error"] = f"{type(exc).__name__}: {exc}"
    return out


def decide(evaluation: Mapping[str, Any], margin: float) -> tuple[bool, str]:
    """Promote when there is no usable champion, or the challenger beats it by more than ``margin``."""
    challenger, champion = evaluation["challenger"], evaluation["champion"]
    if evaluation["champion_version"] is None:
        return True, "no production model yet"
    if champion is None:
        return True, f"production {evaluation['champion_version']} could not be evaluated ({evaluation['champion_error']})"
    gain = challenger - champion
    if gain > margin:
        return True, f"challenger {challenger:.4f} beats champion {champion:.4f} by {gain:+.4f} > margin {margin:g}"
    return False, f"challenger {challenger:.4f} vs champion {champion:.4f}: {gain:+.4f} is not above margin {margin:g}"


def warm_line(warm: Mapping[str, Any]) -> str:
    """What the warm rung tried and what it concluded, in one line."""
    if not warm.get("from_run"):
        return f"none (cold: {warm['cold_reason']})" if warm.get("cold_reason") else "none (cold)"
    rung = warm.get("rung")
    head = f"from {warm['from_run']} as the sweep's history, {warm['priors']} priors (read from {warm.get('priors_from')})"
    if not rung:
        return head + "; no configuration of last week's to retry"
    target = "—" if warm.get("target") is None else f"{warm['target']:.4f}"
    tried = f"{rung['trials']} of last week's {warm['enqueued']} best retrained at the full budget (target {target})"
    if warm["stable"]:
        verdict = f"stable: the sweep only explored, capped at {warm['explore_gpu_hours'] or 0.0:.4g} GPU-h"
    else:
        verdict = f"drifted (best {rung['best_score']}): full sweep"
    return f"{head}; {tried}; {verdict}"


def markdown_of(record: Mapping[str, Any]) -> str:
    ev, sw, dec = record["evaluation"], record["sweep"], record["decision"]
    champion = "—" if ev["champion"] is None else f"{ev['champion']:.4f}"
    lines = [
        f"# Retrain {record['name']} — run {record['run_id']}",
        "",
        f"**Decision:** {'promoted ' + dec['version'] if dec['promoted'] else 'kept ' + str(ev['champion_version'])} — {dec['reason']}",
        "",
        "| | value |", "|---|---|",
        f"| data | `{record['data']['source']}` ({record['data']['rows']} rows, fingerprint `{record['data']['fingerprint'][:12]}`) |",
        f"| warm start | {warm_line(record['warm_start'])} |",
        f"| sweep | {sw['trials']} trials, stop: {sw['stop_reason']}, best {sw['best_score']} |",
        f"| spent | {record['spent']['gpu_hours']:.4g} GPU-hours (sweep {sw['gpu_hours']:.4g}, retrain "
        f"{record['retrain']['gpu_hours']:.4g}), cost {record['spent']['cost']:.4g} |",
        f"| held-out {ev['metric']} | challenger {ev['challenger']:.4f}, champion {champion} ({ev['held_out_rows']} rows) |",
    ]
    return "\n".join(lines)


# --- the flow -------------------------------------------------------------------------------------
def _new_run_id() -> str:
    # Sortable by time, so the latest run is the last key.
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def run_retrain(config: str | Path | Mapping[str, Any], data_source: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """The retrain's body (called by :func:`retrain_flow`); returns the run record."""
    from rungflow.flows.sweep import run_sweep

    cfg = load_retrain_config(config)
    spec = cfg.data_spec(data_source)
    registry = ModelRegistry(cfg.registry)
    run_id = run_id or _new_run_id()
    run_dir = Path(cfg.run_root) / cfg.name / run_id
    started = time.time()
    previous = last_run(registry, cfg.name)
    dataset = load_week(spec, previous, cfg.allow_schema_change)
    sweep_config = cfg.sweep_config(spec, run_dir / "sweep", run_id, week=len(registry.keys(cfg.name, "runs")))
    schema_same = previous is not None and set(previous.get("data", {}).get("schema", {})) == set(dataset.schema)
    mode = sweep_config.mode()
    sign = 1.0 if mode == "max" else -1.0
    # Last week's run is this week's history: read now, as the sweep will read it, so that a run that no longer
    # fits (another space or metric) is known before anything is spent; the week then starts cold and says why.
    history = last_week_history(cfg, previous) if previous and cfg.warm_start.enabled and schema_same else None
    warm: dict[str, Any] | None = None
    cold_reason = None
    if history is not None:
        from rungflow.redact import redact
        from rungflow.tasks.history import HistoryError, load_history

        try:
            last_week = load_history(with_history(sweep_config, history), run_dir / "sweep")
        except HistoryError as exc:
            cold_reason = redact(str(exc))
            log.warning("retrain %s: last week's run is no prior for this week (%s); starting cold", cfg.name, cold_reason)
            history = None
        else:
            assert last_week is not None
            enqueue, last_best = ranked_configs(last_week.sweeps[0].observations, cfg.warm_start.top_k, mode)
            warm = {"from_run": previous["run_id"], "enqueue": enqueue, "last_best": last_best,
                    "source": last_week.sources[0]["read_from"], "observations": len(last_week.sweeps[0].observations)}

    rung: dict[str, Any] | None = None
    stable = False
    target = None
    reference = search_reference(previous)
    full_caps = sweep_config.budget.max_gpu_hours
    if warm and warm["enqueue"]:
        target = None if warm["last_best"] is None else warm["last_best"] - sign * cfg.warm_start.tolerance
        rung = run_sweep(warm_rung_config(sweep_config, len(warm["enqueue"]), run_dir / "warm-rung", target),
                         run_dir / "warm-rung", warm_start={"observations": [], "enqueue": warm["enqueue"]},
                         refit=False)  # its winner is refitted only if it wins the week (retrain_winner)
        stable = rung.get("stop_reason") == "target_score"
        # This week's warm rung is history too: the same task, on this week's data.
        assert history is not None
        history = {**history, "runs": [str((run_dir / "warm-rung").resolve())]}
    explore = cfg.warm_start.stable_budget_fraction * (reference or full_caps or 0.0) if stable else None
    if explore:
        sweep_config = explore_budget(sweep_config, explore)
    # The sweep takes last week's run (and the warm rung) as a user's history: section, through the same reader.
    # Last week's configurations were trained this week at the full budget: priors now, not to be trained again.
    sweep_config = with_history(sweep_config, history)
    result = None if stable and not explore else run_sweep(sweep_config, run_dir / "sweep")
    if not stable and result is not None:
        reference = result["ledger"]["gpu_hours"]  # this week searched in full: the next stable week's yardstick
    got = (result or {}).get("history") or {}
    if warm is not None:
        retrain_source = next((s for s in got.get("sources", []) if s.get("kind") == "retrain"), None)
        warm["source"] = (retrain_source or {}).get("read_from", warm["source"])
        warm["priors"] = (got["model_observations"] if "model_observations" in got
                          else warm["observations"] + len(study_of(rung, "warm-")))
    study_key = run_id
    # The registry's copy of this week's results: next week's history where these Optuna studies cannot be read.
    from rungflow.tasks.optuna_study import task_fingerprint

    registry.put_json(cfg.name, "studies", study_key, {
        "run_id": run_id, "mode": mode, "metric": sweep_config.metric_name(),
        "task": task_fingerprint(sweep_config.model_dump(mode="json")),
        "observations": study_of(rung, "warm-") + study_of(result)})
    best = _better((rung or {}).get("best"), (result or {}).get("best"), mode)
    if best is None:
        events = (rung or {}).get("events", []) + (result or {}).get("events", [])
        errors = [e["error"] for e in events if e.get("error")]
        raise RetrainError(f"run {run_id}: the sweep finished no trial ({len(errors)} failed; first error: "
                           f"{errors[0] if errors else 'none'}); the ledger is in {run_dir}")

    retrained = reuse_best_model(rung if best is (rung or {}).get("best") else result, best, sweep_config)
    if retrained is None:
        retrained = retrain_winner(sweep_config, best["config"], dataset, run_dir / "challenger")
    # The sweep's own refit of a winner that lost the week to the warm rung was spent all the same.
    saved = (result or {}).get("best_model") or {}
    unused_refit = None
    if saved.get("refit_seconds") and saved.get("path") != retrained["dir"]:
        hours = float(saved["refit_seconds"]) * sweep_config.runtime.gpus_per_trial / 3600.0
        unused_refit = {"budget": float(saved.get("budget", 0.0)), "gpu_hours": hours,
                        "cost": hours * sweep_config.budget.price_per_gpu_hour}
    evaluation = evaluate_models(registry, cfg.name, retrained["dir"], dataset)
    promoted, reason = decide(evaluation, cfg.promote_margin)
    empty = {"trials_started": 0, "gpu_hours": 0.0, "cost": 0.0}
    sweep_spent = result["ledger"] if result else empty
    rung_spent = rung["ledger"] if rung else empty
    record: dict[str, Any] = {
        "run_id": run_id, "name": cfg.name, "started_at": started,
        "data": {"source": spec.source, "rows": int(len(dataset.y_train) + len(dataset.y_valid)),
                 "fingerprint": dataset.fingerprint, "schema": dict(dataset.schema), "task": dataset.task},
        "warm_start": {"from_run": warm["from_run"] if warm else None,
                       "priors": warm["priors"] if warm else 0, "priors_from": warm["source"] if warm else None,
                       "history": history, "cold_reason": cold_reason, "enqueued": len(warm["enqueue"]) if warm else 0,
                       "last_best": warm["last_best"] if warm else None, "target": target, "stable": stable,
                       "reference_gpu_hours": reference,
                       "explore_gpu_hours": explore,
                       "rung": None if rung is None else {"run_dir": str(run_dir / "warm-rung"), "trials": rung_spent["trials_started"],
                                                          "gpu_hours": rung_spent["gpu_hours"], "cost": rung_spent["cost"],
                                                          "best_score": (rung.get("best") or {}).get("score"),
                                                          "stop_reason": rung.get("stop_reason")}},
        "sweep": {"run_dir": None if result is None else str(run_dir / "sweep"), "trials": sweep_spent["trials_started"],
                  "gpu_hours": sweep_spent["gpu_hours"], "cost": sweep_spent["cost"],
                  "max_gpu_hours": sweep_config.budget.max_gpu_hours, "full_max_gpu_hours": full_caps,
                  "stop_reason": result["stop_reason"] if result else "skipped: stable problem", "best_score": best["score"],
                  "best_config": best["config"], "best_budget": best["budget"], "unused_refit": unused_refit},
        "retrain": {k: retrained[k] for k in ("budget", "wall_seconds", "gpu_hours", "cost")},
        "spent": {"gpu_hours": rung_spent["gpu_hours"] + sweep_spent["gpu_hours"] + retrained["gpu_hours"]
                  + (unused_refit or {}).get("gpu_hours", 0.0),
                  "cost": rung_spent["cost"] + sweep_spent["cost"] + retrained["cost"] + (unused_refit or {}).get("cost", 0.0)},
        "evaluation": evaluation,
        "study": study_key,
        # Next week's history reads this week's results back from these (rungflow.tasks.history_retrain).
        "optuna": {"studies": _studies_of(
            ([(warm_rung_config(sweep_config, 1, run_dir / "warm-rung", target), run_dir / "warm-rung", "warm-", rung)]
             if rung is not None else []) + [(sweep_config, run_dir / "sweep", "", result)])},
    }
    version = registry.register(
        cfg.name, retrained["dir"], config={"trainable": sweep_config.trainable.kind, **best["config"]},
        metrics={"held_out_" + evaluation["metric"]: evaluation["challenger"], "sweep_score": best["score"]},
        cost=record["spent"], data_fingerprint=dataset.fingerprint, extra={"run_id": run_id},
    )
    if promoted:
        registry.promote(cfg.name, version, reason=reason)
    record["decision"] = {"promoted": promoted, "version": version, "reason": reason, "margin": cfg.promote_margin,
                          "production": version if promoted else evaluation["champion_version"]}
    record["finished_at"] = time.time()
    # The run record last: a run without one did not finish, and next week warm-starts from the one before.
    registry.put_json(cfg.name, "runs", run_id, record)
    (run_dir / "record.json").write_text(json.dumps(record, indent=2, default=str))
    _publish(record)
    log.info("retrain %s run %s: %s", cfg.name, run_id, reason)
    return record


def _publish(record: Mapping[str, Any]) -> None:
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=f"{slug(record['name'])}-retrain", markdown=markdown_of(record),
                                 description=f"retrain {record['name']} run {record['run_id']}")
    except Exception as exc:  # outside a flow run or with the API down: the registry record already holds it all
        log.warning("retrain artifact not published: %s", exc)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    config = flow_run.parameters.get("config")
    name = config.get("name") if isinstance(config, Mapping) else Path(str(config)).stem.removeprefix("retrain-")
    return f"retrain-{name}"


@flow(name="rungflow-retrain", flow_run_name=_flow_run_name, log_prints=True, persist_result=False)
def retrain_flow(config: str | dict[str, Any], data_source: str | None = None) -> dict[str, Any]:
    """Weekly retrain: warm-started budget-capped sweep, full-budget winner, champion/challenger promotion.

    ``config``: a retrain YAML path (relative to the working directory) or the config as a mapping;
    ``data_source``: this week's table, overriding ``data.source`` (e.g. ``s3://bucket/week-47.parquet``).
    """
    try:
        return run_retrain(config, data_source)
    except (ConfigError, DataError, RegistryError, RetrainError, S3Error) as exc:
        # One line in the flow run's state message; the traceback adds nothing for bad input.
        raise RetrainError(str(exc)) from None
