"""``rungflow.sweep(train, space=..., ...)``: a sweep of the user's own training function from Python.

The keyword arguments mirror the YAML sections and are validated by the same models, with the same
one-line errors. Called inside a Prefect flow, the sweep runs as its subflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rungflow.config import ConfigError, SweepConfig, validate

__all__ = ["sweep", "SweepResult"]

_SECTIONS = ("search", "scheduler", "budget", "runtime", "storage", "ui", "history")


class _View:
    """Attribute access over a JSON mapping (``result.best.config``), the mapping itself one ``.raw`` away."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.raw = data

    def __getattr__(self, name: str) -> Any:
        try:
            value = self.raw[name]
        except KeyError:
            raise AttributeError(f"no {name!r} here; present: {', '.join(sorted(self.raw))}") from None
        return _View(value) if isinstance(value, Mapping) else value

    def __getitem__(self, name: str) -> Any:
        return self.raw[name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.raw)!r})"


class SweepResult(_View):
    """The sweep's ``result.json`` as an object, plus the best trial's saved checkpoint (``best_checkpoint``)."""

    def __init__(self, data: Mapping[str, Any], run_dir: Path, best_checkpoint: Any) -> None:
        super().__init__(data)
        self.run_dir = run_dir
        self.best_checkpoint = best_checkpoint


def _section(name: str, value: Any) -> Any:
    if value is None or isinstance(value, Mapping):
        return dict(value or {})
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise ConfigError(f"{name} = {value!r}: pass a dict (as the YAML section) or its config model")


def build_config(train: Callable[..., Any] | str, *, space: Mapping[str, Any] | None = None,
                 metric: str | Mapping[str, Any] | None = None, mode: str | None = None, name: str | None = None,
                 out: str | Path | None = None, budget_metric: str | None = None, **sections: Any) -> SweepConfig:
    """The validated config of ``sweep``'s arguments (nothing runs but an Optuna objective's space probe)."""
    from rungflow.tasks.trainables import TrainableError
    from rungflow.tasks.trainables.callable_kind import callable_kind
    from rungflow.tasks.trainables.function import register_callable

    unknown = sorted(set(sections) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"rungflow.sweep({unknown[0]}=...): unknown argument; use space, metric, mode, name, out, "
                          f"budget_metric, {', '.join(_SECTIONS)}")
    kind = "function" if isinstance(train, str) else callable_kind(train, has_space=space is not None)
    if space is None and kind == "function":
        raise ConfigError("rungflow.sweep(train, ...): give space={...} (the parameters to search); only an Optuna "
                          "objective(trial) defines its own")
    if budget_metric is not None and kind != "raytune_function":
        raise ConfigError("rungflow.sweep(budget_metric=...): only a Ray Tune function train(config) reports metrics "
                          "that can count the budget; remove it")
    if isinstance(train, str):
        trainable: dict[str, Any] = {"function": train, "options": {"base_dir": str(Path.cwd())}}
        default_name = train.rpartition(":")[2]
    else:
        try:
            token = register_callable(train, check=kind == "function")
        except TrainableError as exc:
            raise ConfigError(str(exc)) from None
        trainable = {"kind": kind, "options": {"callable": token}}
        default_name = getattr(train, "__name__", None) or type(train).__name__.lower()
    metric_name = metric.get("name") if isinstance(metric, Mapping) else metric
    data: dict[str, Any] = {"name": name or default_name, "trainable": trainable}
    if kind == "raytune_function":
        from rungflow.budgets.foreign_space import tune_param_space
        from rungflow.budgets.space import SpaceError

        if not metric_name:
            raise ConfigError("metric: name the key your function passes to tune.report, e.g. metric='mean_loss', mode='min'")
        try:
            converted = tune_param_space(space or {})
        except SpaceError as exc:
            raise ConfigError(str(exc)) from None
        data["space"] = converted.space
        trainable["options"].update(metric=metric_name, layout=converted.layout, steps=converted.steps,
                                    **({"budget_metric": budget_metric} if budget_metric else {}))
    elif kind == "optuna_objective":
        trainable["options"]["mode"] = (metric.get("mode") if isinstance(metric, Mapping) else mode) or "max"
        if "scheduler" not in sections and not _objective_reports(trainable["options"]):
            sections["scheduler"] = {"kind": "fifo", "min_budget": 1, "max_budget": 1}
    else:
        data["space"] = dict(space or {})
    if metric is not None or mode is not None:
        data["metric"] = dict(metric) if isinstance(metric, Mapping) else {"name": metric, "mode": mode}
    for key, value in sections.items():
        data[key] = _section(key, value)
    if out is not None:
        data.setdefault("storage", {})["run_dir"] = str(out)
    config = validate(data)
    if kind == "optuna_objective":
        config.trainable.options["full_budget"] = config.budget_range()[1]
    return config


def _objective_reports(options: Mapping[str, Any]) -> bool:
    """Whether the objective calls trial.report (probed once; a problem surfaces as the config's one line)."""
    from rungflow.tasks.trainables import TrainableError
    from rungflow.tasks.trainables.optuna_objective import OptunaObjectiveTrainable

    try:
        return OptunaObjectiveTrainable(options).probe()[1]
    except TrainableError as exc:
        raise ConfigError(str(exc)) from None


def sweep(train: Callable[..., Any] | str, *, space: Mapping[str, Any] | None = None,
          metric: str | Mapping[str, Any] | None = None, mode: str | None = None, name: str | None = None,
          out: str | Path | None = None, budget_metric: str | None = None,
          search: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
          budget: Mapping[str, Any] | None = None, runtime: Mapping[str, Any] | None = None,
          storage: Mapping[str, Any] | None = None, ui: Mapping[str, Any] | None = None,
          history: Mapping[str, Any] | None = None) -> SweepResult:
    """Sweep ``train(config, budget, checkpoint)`` over ``space``; blocks until the sweep stops.

    ``train`` may also be a Ray Tune function ``train(config)`` with its ``param_space`` as ``space`` (Ray Tune's
    samplers allowed; ``budget_metric`` names a reported metric that counts the budget, ``training_iteration``
    by default), or an Optuna ``objective(trial)`` with no ``space``: its own is learned from it (docs/migrate.md).

    ``out`` is the run directory (default ``runs/<name>``). Calling again with the same function and
    arguments on the same ``out`` resumes it: finished trials are replayed from the ledger, not rerun.
    ``history``: earlier sweeps to learn from, as the YAML section (``{"runs": ["runs/digits-*"]}``).
    """
    from rungflow.flows.sweep import check_resumable, run_sweep
    from rungflow.tasks.trainables import TrainableError

    sections = {k: v for k, v in {"search": search, "scheduler": scheduler, "budget": budget, "runtime": runtime,
                                  "storage": storage, "ui": ui, "history": history}.items() if v is not None}
    config = build_config(train, space=space, metric=metric, mode=mode, name=name, out=out, budget_metric=budget_metric,
                          **sections)
    try:
        config.trainable_class()(config.trainable.options).check()  # file, function and signature, before spending
    except TrainableError as exc:
        raise ConfigError(str(exc)) from None
    run_dir = config.run_dir()
    if (run_dir / "config.json").is_file():
        check_resumable(run_dir / "config.json", config)
    result = run_sweep(config, run_dir, refit=False)
    return SweepResult(result, run_dir, _best_checkpoint(config, run_dir, result))


def _best_checkpoint(config: SweepConfig, run_dir: Path, result: Mapping[str, Any]) -> Any:
    from rungflow.tasks.checkpoints import open_store
    from rungflow.tasks.trainables.function import decode_checkpoint

    best = result.get("best") or {}
    if "trial_id" not in best or best.get("rung") is None or config.trainable.kind == "optuna_objective":
        return None
    data = open_store(config.storage.checkpoint_location(run_dir)).load(best["trial_id"], int(best["rung"]))
    if data is not None and config.trainable.kind == "raytune_function":
        from rungflow.tasks.trainables.raytune_function import restore_checkpoint

        return restore_checkpoint(data, run_dir / "best_checkpoint")
    return None if data is None else decode_checkpoint(data)[0]
