"""A user's own training function as a trainable: ``train(config, budget, checkpoint)``.

The function returns a number or a :class:`Report`. ``checkpoint`` is what the same trial returned at
its previous rung (None at its first), so a promoted trial continues instead of starting again.
Checkpoints go through the run's checkpoint store (local or S3, atomic, checksummed) as bytes:
raw ``bytes`` as they are, anything else as ``torch.save`` writes it, read back with
``torch.load(weights_only=True)`` (tensors, state dicts, numbers, strings, lists, dicts), never as
an arbitrary pickle. A value JSON gives back unchanged (numbers, strings, lists and str-keyed dicts of them) is
stored as JSON, and so is any JSON-serialisable value without torch installed.

Where the function comes from:

- from Python, ``rungflow.sweep(train, ...)``: the callable is registered in this process under a
  token; thread runtimes call it directly and Ray ships it to each worker as Ray ships functions
  (cloudpickle);
- from YAML, ``trainable: {function: "train.py:train"}``: a file relative to the config's folder, like a
  ``prefect.yaml`` entrypoint. That runs the file, so ``RUNGFLOW_ALLOW_ENTRYPOINTS=0`` refuses it for
  configs from untrusted sources. Dotted imports of arbitrary modules are never accepted.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib.util
import inspect
import io
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator

from rungflow.tasks.trainables.base import Trainable, TrainableError, TrainableOptions, TrainOutcome, TrainRequest, register

__all__ = ["Report", "trial_device", "FunctionOptions", "CallableTrainable", "FunctionTrainable", "register_callable", "registered_callables",
           "install_callables", "ALLOWED_CHECKPOINT_TYPES", "ENTRYPOINTS_ENV", "FUNCTION_FROM_WORKING_DIR_ENV"]

ENTRYPOINTS_ENV = "RUNGFLOW_ALLOW_ENTRYPOINTS"
# Set on a remote cluster's workers, whose working directory is a copy of the config's folder.
FUNCTION_FROM_WORKING_DIR_ENV = "RUNGFLOW_FUNCTION_FROM_WORKING_DIR"
ALLOWED_CHECKPOINT_TYPES = ("bytes, or what torch.load(weights_only=True) reads: tensors, state dicts, numbers, strings, "
                            "lists, tuples and dicts of them")
_MAGIC = b"RUNGFLOW-CHECKPOINT-1 "


@dataclass(frozen=True)
class Report:
    """What a training function returns at the end of a rung: its score, optionally a checkpoint and metrics."""

    score: float
    checkpoint: Any = None
    metrics: Mapping[str, float] = field(default_factory=dict)


_device: contextvars.ContextVar[str] = contextvars.ContextVar("rungflow_trial_device", default="cpu")


def trial_device() -> str:
    """The device the running trial holds: ``"cuda"`` when it was given a GPU share on a CUDA machine, else ``"cpu"``."""
    return _device.get()


# token -> callable (the driver's own) and token -> cloudpickled callable (what workers are sent).
_CALLABLES: dict[str, Callable[..., Any]] = {}
_SHIPPED: dict[str, bytes] = {}


def register_callable(fn: Callable[..., Any], *, check: bool = True) -> str:
    """Register ``fn`` for this process's sweeps; the token names it in the sweep's config.

    ``check=False`` is for the callables of other shapes (a Ray Tune function, an Optuna objective), whose
    trainables check them their own way.
    """
    if check:
        _check_signature(fn, describe=getattr(fn, "__qualname__", repr(fn)))
    # Stable across processes, so a rerun of the same script resumes its run directory; redefining the
    # function (a notebook cell run again) replaces it under the same name.
    digest = hashlib.blake2b(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode(), digest_size=4)
    token = f"{getattr(fn, '__name__', 'function')}-{digest.hexdigest()}"
    _CALLABLES[token] = fn
    _SHIPPED.pop(token, None)
    return token


def registered_callables() -> dict[str, bytes]:
    """Every registered callable, cloudpickled, for a Ray worker to install (:func:`install_callables`)."""
    import cloudpickle

    for token, fn in _CALLABLES.items():
        if token not in _SHIPPED:
            module = sys.modules.get(getattr(fn, "__module__", "") or "")
            if module is not None and module.__name__ != "__main__" and _is_user_module(module):
                # A user's script or notebook module is not importable on the worker: send its code, not its name.
                cloudpickle.register_pickle_by_value(module)
            _SHIPPED[token] = cloudpickle.dumps(fn)
    return dict(_SHIPPED)


def install_callables(shipped: Mapping[str, bytes]) -> None:
    import cloudpickle

    for token, blob in shipped.items():
        if token not in _CALLABLES:
            _CALLABLES[token] = cloudpickle.loads(blob)


def _is_user_module(module: Any) -> bool:
    path = getattr(module, "__file__", None)
    if not path:
        return False
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return not any(str(Path(path).resolve()).startswith(str(Path(p).resolve())) for p in prefixes) or "site-packages" not in path


class FunctionOptions(TrainableOptions):
    """Where the training function is: a registered Python callable, or ``file.py:function`` beside the config."""

    entrypoint: str | None = None
    base_dir: str | None = None
    callable: str | None = None
    integer_budget: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> FunctionOptions:
        if (self.entrypoint is None) == (self.callable is None):
            raise ValueError("give the training function as trainable.function: 'train.py:train' (YAML) or pass it to "
                             "rungflow.sweep(train, ...) (Python)")
        if self.entrypoint is not None:
            file, sep, name = self.entrypoint.rpartition(":")
            if not sep or not file or not name.isidentifier():
                raise ValueError(f"trainable.function = {self.entrypoint!r}: expected 'path/to/file.py:function_name'")
            if not file.endswith(".py"):
                raise ValueError(f"trainable.function = {self.entrypoint!r}: name a .py file relative to the config "
                                 "(e.g. 'train.py:train'); dotted module imports are not accepted")
            if Path(file).is_absolute() or ".." in Path(file).parts:
                raise ValueError(f"trainable.function = {self.entrypoint!r}: the file must lie in the config's folder; "
                                 "give a path relative to it without '..'")
        return self


def _check_signature(fn: Any, describe: str) -> None:
    if not callable(fn):
        raise TrainableError(f"trainable.function {describe} is a {type(fn).__name__}, not a function; "
                             "point it at def train(config, budget, checkpoint)")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return  # a builtin or C callable: trust it
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if len(required) > 3 or (len(positional) < 3 and not varargs):
        names = ", ".join(p.name for p in params) or "no parameters"
        raise TrainableError(f"trainable.function {describe} takes ({names}); it must take (config, budget, checkpoint)")


def _load_entrypoint(entrypoint: str, base_dir: str | None, check: bool = True) -> Callable[..., Any]:
    if os.environ.get(ENTRYPOINTS_ENV, "1").strip().lower() in ("0", "false", "no"):
        raise TrainableError(f"trainable.function = {entrypoint!r}: file entrypoints are switched off here "
                             f"({ENTRYPOINTS_ENV}=0); use a registered trainable kind, or ask the operator")
    file, _, name = entrypoint.rpartition(":")
    # On a remote cluster the config's folder is the job's working directory, so a relative file is found from there.
    candidates = [Path(base_dir) / file] if base_dir else []
    if os.environ.get(FUNCTION_FROM_WORKING_DIR_ENV) == "1" or not candidates:
        candidates.insert(0, Path.cwd() / file)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise TrainableError(f"trainable.function = {entrypoint!r}: {candidates[0]} does not exist; give a .py file "
                             "relative to the config's folder")
    # As when the file is run as a script: its folder is on the path, so it can import its siblings.
    if str(path.parent.resolve()) not in sys.path:
        sys.path.insert(0, str(path.parent.resolve()))
    module_name = "rungflow_user_" + hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise TrainableError(f"trainable.function = {entrypoint!r}: importing {path.name} raised "
                                 f"{type(exc).__name__}: {exc}; fix the file") from None
    if not hasattr(module, name):
        raise TrainableError(f"trainable.function = {entrypoint!r}: {path.name} has no {name!r}; define "
                             f"def {name}(config, budget, checkpoint) there")
    fn = getattr(module, name)
    if check:
        _check_signature(fn, describe=repr(entrypoint))
    return fn


def encode_checkpoint(value: Any, budget: float) -> bytes:
    """The bytes the store keeps for a function's checkpoint at ``budget``; TrainableError names the allowed types."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _envelope("raw", budget, bytes(value))
    as_json = _as_json(value)
    if as_json is not None:
        # No torch import for a value JSON keeps as it is: a fresh Ray worker paid over a second for it.
        return _envelope("json", budget, as_json)
    try:
        import torch
    except ImportError:
        try:
            return _envelope("json", budget, json.dumps(value).encode())
        except (TypeError, ValueError) as exc:
            raise TrainableError(f"checkpoint of type {type(value).__name__} cannot be stored without torch ({exc}); "
                                 "return bytes or JSON-serialisable values, or install rungflow[torch]") from None
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        data = buffer.getvalue()
        torch.load(io.BytesIO(data), weights_only=True)  # what resume will do: refuse now what it could not read
    except Exception as exc:
        raise TrainableError(f"checkpoint of type {type(value).__name__} cannot be loaded with torch.load(weights_only=True) "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); return {ALLOWED_CHECKPOINT_TYPES}") from None
    return _envelope("torch", budget, data)


def _as_json(value: Any) -> bytes | None:
    """JSON of a value that JSON gives back equal (numbers, strings, lists and str-keyed dicts of them), else None."""
    try:
        data = json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError):
        return None
    return data if json.loads(data) == value else None  # tuples, int keys: torch keeps them, JSON would not


def decode_checkpoint(data: bytes) -> tuple[Any, float]:
    """(the function's checkpoint value, the budget it was taken at)."""
    if not data.startswith(_MAGIC) or b"\n" not in data:
        raise TrainableError("checkpoint was not written by a training function (unknown header); start the trial afresh")
    header_line, payload = data[len(_MAGIC):].split(b"\n", 1)
    header = json.loads(header_line)
    fmt, budget = header["format"], float(header["budget"])
    if fmt == "raw":
        return payload, budget
    if fmt == "json":
        return json.loads(payload), budget
    import torch

    return torch.load(io.BytesIO(payload), weights_only=True, map_location=trial_device()), budget


def _envelope(fmt: str, budget: float, payload: bytes) -> bytes:
    return _MAGIC + json.dumps({"format": fmt, "budget": budget}).encode() + b"\n" + payload


class CallableTrainable(Trainable):
    """A trainable around a user's callable: registered from Python in this process, or a file entrypoint.

    Subclasses say how errors name the callable and how to pass it again, and whether an entrypoint must
    take rungflow's ``(config, budget, checkpoint)``.
    """

    options: FunctionOptions
    callable_noun: ClassVar[str]
    rerun_with: ClassVar[str]
    takes_budget_and_checkpoint: ClassVar[bool] = True

    def _function(self) -> Callable[..., Any]:
        if self.options.callable is not None:
            fn = _CALLABLES.get(self.options.callable)
            if fn is None:
                raise TrainableError(f"trainable: this sweep's {self.callable_noun} was passed from Python and is not "
                                     f"registered in this process; rerun it with {self.rerun_with}")
            return fn
        assert self.options.entrypoint is not None
        return _load_entrypoint(self.options.entrypoint, self.options.base_dir, check=self.takes_budget_and_checkpoint)

    def check(self) -> None:
        self._function()


@register
class FunctionTrainable(CallableTrainable):
    """A plain ``train(config, budget, checkpoint)`` function; its score is whatever metric the sweep names."""

    kind: ClassVar[str] = "function"
    metric: ClassVar[str] = "score"
    budget_unit: ClassVar[str] = "budget units"
    Options: ClassVar[type[TrainableOptions]] = FunctionOptions
    options: FunctionOptions
    resumable: ClassVar[bool] = True
    # The function is handed the whole config with each checkpoint: which parameters it can take on
    # resume is its author's call, so population-based training may mutate any (name them in mutations).
    mutable_params: ClassVar[frozenset[str] | None] = None
    callable_noun: ClassVar[str] = "training function"
    rerun_with: ClassVar[str] = "rungflow.sweep(train, ..., out=RUN_DIR), which resumes the same run directory"

    def train(self, request: TrainRequest) -> TrainOutcome:
        fn = self._function()
        previous, budget_from = decode_checkpoint(request.checkpoint) if request.checkpoint is not None else (None, 0.0)
        budget: float | int = int(round(request.budget)) if self.options.integer_budget else request.budget
        token = _device.set(request.device)
        try:
            returned = fn(dict(request.config), budget, previous)
        finally:
            _device.reset(token)
        report = returned if isinstance(returned, Report) else Report(score=returned)
        score = report.score
        if isinstance(score, bool) or not isinstance(score, (int, float)) and not hasattr(score, "__float__"):
            raise TrainableError(f"the training function returned {type(score).__name__} {score!r} as its score; "
                                 "return a number or rungflow.Report(score=...)")
        score = float(score)
        if not math.isfinite(score):
            raise TrainableError(f"the training function returned score {score!r} (not a finite number)")
        metrics: dict[str, float] = {}
        for key, value in dict(report.metrics or {}).items():
            try:
                metrics[str(key)] = float(value)
            except (TypeError, ValueError):
                raise TrainableError(f"metric {key!r} = {value!r} is not a number; metrics are numbers") from None
        checkpoint = encode_checkpoint(report.checkpoint, request.budget) if report.checkpoint is not None else None
        # Without a checkpoint the function trained from scratch: all of the budget was this call's work.
        return TrainOutcome(score=score, budget_reached=float(request.budget),
                            budget_trained=max(0.0, float(request.budget) - budget_from), checkpoint=checkpoint,
                            metrics=metrics)

    def estimate_gpu_seconds(self, config: Mapping[str, Any], budget_from: float, budget_to: float) -> float | None:
        return None

