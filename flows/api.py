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


def build_config(train: Callable[..., Any] | str, *, space: Mapping[str, Any], metric: str | Mapping[str, Any] | None = None,
                 mode: str | None = None, name: str | None = None, out: str | Path | None = None,
                 **sections: Any) -> SweepConfig:
    """The validated config of ``sweep``'s arguments (nothing runs)."""
    from rungflow.tasks.trainables import TrainableError
    from rungflow.tasks.trainables.function import register_callable

    unknown = sorted(set(sections) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"rungflow.sweep({unknown[0]}=...): unknown argument; use space, metric, mode, name, out, "
                          f"{', '.join(_SECTIONS)}")
    if isinstance(train, str):
        trainable: dict[str, Any] = {"function": train, "options": {"base_dir": str(Path.cwd())}}
        default_name = train.rpartition(":")[2]
    else:
        try:
            token = register_callable(train)
        except TrainableError as exc:
            raise ConfigError(str(exc)) from None
        trainable = {"kind": "function", "options": {"callable": token}}
        default_name = getattr(train, "__name__", "sweep")
    data: dict[str, Any] = {"name": name or default_name, "trainable": trainable, "space": dict(space)}
    if metric is not None or mode is not None:
        data["metric"] = dict(metric) if isinstance(metric, Mapping) else {"name": metric, "mode": mode}
    for key, value in sections.items():
        data[key] = _section(key, value)
    if out is not None:
        data.setdefault("storage", {})["run_dir"] = str(out)
    return validate(data)


def sweep(train: Callable[..., Any] | str, *, space: Mapping[str, Any], metric: str | Mapping[str, Any] | None = None,
          mode: str | None = None, name: str | None = None, out: str | Path | None = None,
          search: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
          budget: Mapping[str, Any] | None = None, runtime: Mapping[str, Any] | None = None,
          storage: Mapping[str, Any] | None = None, ui: Mapping[str, Any] | None = None,
          history: Mapping[str, Any] | None = None) -> SweepResult:
    """Sweep ``train(config, budget, checkpoint)`` over ``space``; blocks until the sweep stops.

    ``out`` is the run directory (default ``runs/<name>``). Calling again with the same function and
    arguments on the same ``out`` resumes it: finished trials are replayed from the ledger, not rerun.
    ``history``: earlier sweeps to learn from, as the YAML section (``{"runs": ["runs/digits-*"]}``).
    """
    from rungflow.flows.sweep import check_resumable, run_sweep
    from rungflow.tasks.trainables import TrainableError

    sections = {k: v for k, v in {"search": search, "scheduler": scheduler, "budget": budget, "runtime": runtime,
                                  "storage": storage, "ui": ui, "history": history}.items() if v is not None}
    config = build_config(train, space=space, metric=metric, mode=mode, name=name, out=out, **sections)
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
    if "trial_id" not in best or best.get("rung") is None:
        return None
    data = open_store(config.storage.checkpoint_location(run_dir)).load(best["trial_id"], int(best["rung"]))
    return None if data is None else decode_checkpoint(data)[0]
