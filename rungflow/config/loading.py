"""Reading a sweep config: YAML from a file, `--set dotted.key=value` overrides, validation into one error line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rungflow.config.errors import ConfigError, _one_line
from rungflow.config.sweep import SweepConfig


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}: empty key in the path; use e.g. --set scheduler.eta=3")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if key not in node or node[key] is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is a value, not a section")
        node = node[key]
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; the value is read as YAML (so 3, 0.5, true, [a, b] work)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set scheduler.eta=4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    return data


def validate(data: Mapping[str, Any]) -> SweepConfig:
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path to a sweep YAML, e.g. examples/digits.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is a directory, not a file; pass the path to a sweep YAML inside it")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; save the sweep YAML as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc.strerror}); check its permissions") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping with at least 'name' and 'trainable'")
    data = apply_overrides(data, list(overrides or []))
    trainable = data.get("trainable")
    if isinstance(trainable, dict) and "function" in trainable:
        # A function's file is relative to the config, as a prefect.yaml entrypoint is to its project.
        options = trainable.setdefault("options", {}) or {}
        trainable["options"] = options
        if isinstance(options, dict):
            options.setdefault("base_dir", str(path.resolve().parent))
            _resolve_function_kind(data, trainable, options)
    config = validate(data)
    if config.trainable.kind == "optuna_objective":
        config.trainable.options["full_budget"] = config.budget_range()[1]
    return config


def _resolve_function_kind(data: dict[str, Any], trainable: dict[str, Any], options: dict[str, Any]) -> None:
    """``function: file.py:name`` may be a Ray Tune function or an Optuna objective: its signature decides."""
    from rungflow.tasks.trainables import TrainableError
    from rungflow.tasks.trainables.callable_kind import callable_kind
    from rungflow.tasks.trainables.function import _load_entrypoint

    entrypoint = trainable.get("function")
    if not isinstance(entrypoint, str) or trainable.get("kind", "function") != "function":
        return
    try:
        kind = callable_kind(_load_entrypoint(entrypoint, options.get("base_dir"), check=False), "space" in data)
    except TrainableError:
        return  # the function family's own check names the problem
    if kind == "function":
        return
    trainable.pop("function")
    trainable["kind"] = kind
    options["entrypoint"] = entrypoint
    metric = data.get("metric") or {}
    if kind == "raytune_function" and isinstance(metric, dict) and metric.get("name"):
        options.setdefault("metric", metric["name"])
    if kind == "optuna_objective" and isinstance(metric, dict) and metric.get("mode"):
        options.setdefault("mode", metric["mode"])
    if kind == "optuna_objective" and "scheduler" not in data and not _objective_reports(options):
        # As rungflow.sweep does: an objective that never reports runs whole, so rungs would cut nothing.
        data["scheduler"] = {"kind": "fifo", "min_budget": 1, "max_budget": 1}


def _objective_reports(options: dict[str, Any]) -> bool:
    """Whether the objective calls trial.report (probed once; a problem is left for validation's one line)."""
    from rungflow.tasks.trainables import TrainableError
    from rungflow.tasks.trainables.optuna_objective import OptunaObjectiveTrainable

    try:
        return OptunaObjectiveTrainable(options).probe()[1]
    except (TrainableError, ValueError):
        return True
