"""A Ray Tune function trainable, unchanged: ``train(config)`` calling ``ray.tune.report(metrics, checkpoint=...)``.

``ray.tune.report``, ``ray.tune.get_checkpoint`` and ``ray.tune.get_context()`` all read one process-wide slot,
``ray.train._internal.session._session``, which Ray's own function trainable fills with a ``_TrainSession``.
While a rungflow trial runs, that slot holds a :class:`_SessionRouter` instead: it answers for whichever trial
runs in the calling thread (thread runtimes run several in one process), so the user's imports and calls are
Ray's own, untouched, on thread and Ray runtimes alike. Patching ``ray.tune.report`` itself would miss a
``from ray.tune import report`` made before the trial started, and Ray's integrations (the XGBoost and LightGBM
callbacks) reach the slot through other paths.

A rung ends at the report whose ``budget_metric`` (``training_iteration``, counted as Ray counts it, unless
the sweep names a metric the function reports, such as ``epoch``) reaches the rung's budget: the last reported
checkpoint is kept and the function is stopped by an exception it cannot catch with ``except Exception``.
A promoted trial calls the function again; ``ray.tune.get_checkpoint()`` then returns that checkpoint, and the
iteration count continues from where it was taken, as when Ray Tune restores a paused trial. A function that does
not ask for its checkpoint before its first report has started over (Ray Tune's XGBoost and LightGBM examples
never ask: under Ray Tune's ASHA a trial is never paused, so it never restarts), and its iterations count from zero
again: it runs to the rung's budget, and each of those iterations is billed.
"""

from __future__ import annotations

import contextvars
import io
import json
import math
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from rungflow.budgets.foreign_space import materialize
from rungflow.tasks.trainables.base import TrainableError, TrainOutcome, TrainRequest, register
from rungflow.tasks.trainables.function import CallableTrainable, FunctionOptions

__all__ = ["RayTuneFunctionOptions", "RayTuneFunctionTrainable", "SUPPORTED_TUNE_CALLS", "restore_checkpoint"]

SUPPORTED_TUNE_CALLS = ("ray.tune.report(metrics, checkpoint=...)", "ray.tune.get_checkpoint()",
                        "ray.tune.get_context().get_trial_id/get_trial_name/get_trial_dir/get_experiment_name()",
                        "ray.tune.Checkpoint.from_directory")
_MAGIC = b"RUNGFLOW-TUNE-CHECKPOINT-1 "


class RayTuneFunctionOptions(FunctionOptions):
    """Where the function is, the metric it reports, what counts as budget and how to rebuild its config."""

    metric: str
    budget_metric: str = "training_iteration"
    layout: Any = None
    steps: dict[str, float] = {}


class _RungReached(BaseException):
    """Raised out of ``tune.report`` at the rung's budget; a BaseException so ``except Exception`` lets it pass."""


class _Misuse(BaseException):
    """A call rungflow cannot honour; carried out of the user's code the same way, then failed with its message."""


class _TuneTrial:
    """One running call of the user's function: what it reported, its last checkpoint, where to stop."""

    def __init__(self, request: TrainRequest, options: RayTuneFunctionOptions, start_iteration: int,
                 loaded: Any, workdir: _LazyFolder) -> None:
        self.request = request
        self.options = options
        self.iteration = start_iteration
        self.start_iteration = start_iteration
        self._loaded_checkpoint = loaded
        self.asked_for_checkpoint = False
        self.workdir = workdir
        self.last: dict[str, Any] | None = None
        self.checkpoint: bytes | None = None
        self.checkpoint_iteration = start_iteration
        self.error: str | None = None

    def fail(self, message: str) -> None:
        self.error = message
        raise _Misuse(message)

    @property
    def loaded_checkpoint(self) -> Any:
        self.asked_for_checkpoint = True
        return self._loaded_checkpoint

    def report(self, metrics: Any, checkpoint: Any = None) -> None:
        if not isinstance(metrics, Mapping):
            self.fail(f"ray.tune.report got {type(metrics).__name__}; pass a dict, e.g. tune.report({{{self.options.metric!r}: value}})")
        if self.last is None and self.start_iteration and not self.asked_for_checkpoint:
            self.iteration = self.start_iteration = self.checkpoint_iteration = 0  # it started over
        self.iteration += 1
        result = {**dict(metrics), "training_iteration": self.iteration}
        metric, budget_metric = self.options.metric, self.options.budget_metric
        if metric not in result:
            self.fail(f"ray.tune.report({sorted(metrics)}) has no {metric!r}, the sweep's metric; report it, or pass "
                      f"metric= one of {sorted(metrics)}")
        if budget_metric not in result:
            self.fail(f"ray.tune.report({sorted(metrics)}) has no {budget_metric!r}, which counts the budget; report it, "
                      "or leave the budget to training_iteration")
        if checkpoint:
            self.checkpoint = _pack(checkpoint, self.iteration)
            self.checkpoint_iteration = self.iteration
        self.last = result
        if _number(result[budget_metric]) >= self.request.budget - 1e-9:
            raise _RungReached

    # What Ray's TuneContext reads from its session.
    @property
    def trial_id(self) -> str:
        return self.request.trial_id

    @property
    def trial_name(self) -> str:
        return self.request.trial_id

    @property
    def trial_dir(self) -> str:
        return str(self.workdir.get())

    @property
    def experiment_name(self) -> str:
        return "rungflow"


_current: contextvars.ContextVar[_TuneTrial | None] = contextvars.ContextVar("rungflow_tune_trial", default=None)


class _SessionRouter:
    """Stands in Ray's session slot; every attribute is the calling thread's rungflow trial's."""

    world_rank = None  # what makes Ray treat the caller as a Tune function (not a Train worker)
    local_rank = None
    world_size = None

    def __bool__(self) -> bool:
        return _current.get() is not None

    def _trial(self) -> _TuneTrial:
        trial = _current.get()
        if trial is None:
            raise RuntimeError("ray.tune was called outside a trial; call it from the function passed to rungflow.sweep")
        return trial

    def report(self, metrics: Any, checkpoint: Any = None) -> None:
        self._trial().report(metrics, checkpoint)

    @property
    def loaded_checkpoint(self) -> Any:
        return self._trial().loaded_checkpoint

    @property
    def trial_id(self) -> str:
        return self._trial().trial_id

    @property
    def trial_name(self) -> str:
        return self._trial().trial_name

    @property
    def trial_dir(self) -> str:
        return self._trial().trial_dir

    @property
    def experiment_name(self) -> str:
        return self._trial().experiment_name

    def __getattr__(self, name: str) -> Any:
        trial = _current.get()
        message = (f"the function called a Ray Tune API that reads the session's {name!r}, which rungflow does not "
                   f"provide; use only {'; '.join(SUPPORTED_TUNE_CALLS)}")
        if trial is None:
            raise AttributeError(message)
        trial.fail(message)


_router = _SessionRouter()
_installed = 0
_install_lock = threading.Lock()


def _install() -> None:
    global _installed
    from ray.train._internal import session

    with _install_lock:
        if _installed == 0:
            if session._session is not None and session._session is not _router:
                raise TrainableError("a Ray Tune or Ray Train session is already active in this process; run the "
                                     "sweep from a plain script, not from inside a Ray Tune trial")
            session._session = _router
        _installed += 1


def _uninstall() -> None:
    global _installed
    from ray.train._internal import session

    with _install_lock:
        _installed -= 1
        if _installed == 0 and session._session is _router:
            session._session = None


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TrainableError(f"reported value {value!r} is not a number") from None
    return number


def _pack(checkpoint: Any, iteration: int) -> bytes:
    """The checkpoint's files as bytes, taken now: the function usually deletes its temporary folder right after."""
    buffer = io.BytesIO()
    folder = _local_folder(checkpoint)
    if folder is not None:
        # Read in place: Checkpoint.to_directory copies through pyarrow under a file lock into a fresh folder,
        # which cost 13 ms a report here, a function that checkpoints every iteration pays it every iteration.
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(folder, arcname=".")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = checkpoint.to_directory(str(Path(tmp) / "checkpoint"))
            except AttributeError:
                raise TrainableError(f"tune.report(checkpoint=...) got {type(checkpoint).__name__}; pass "
                                     "ray.tune.Checkpoint.from_directory(folder)") from None
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                tar.add(local, arcname=".")
    return _MAGIC + json.dumps({"iteration": iteration}).encode() + b"\n" + buffer.getvalue()


def _local_folder(checkpoint: Any) -> str | None:
    """The checkpoint's folder when it lies on this machine's file system (from_directory), else None."""
    try:
        from pyarrow.fs import LocalFileSystem
    except ImportError:
        return None
    filesystem, path = getattr(checkpoint, "filesystem", None), getattr(checkpoint, "path", None)
    if isinstance(filesystem, LocalFileSystem) and isinstance(path, str) and Path(path).is_dir():
        return path
    return None


class _LazyFolder:
    """A temporary folder made on first use: most rungs never need one, and making and removing a folder cost
    about 2 ms a rung on this development machine's file system."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.path: Path | None = None

    def get(self) -> Path:
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix=self.prefix))
        return self.path

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


def _unpack(data: bytes, into: Path | _LazyFolder) -> tuple[Path | None, int]:
    """(the checkpoint's folder, the iteration it was taken at); (None, 0) for a trial that never checkpointed."""
    if not data.startswith(_MAGIC) or b"\n" not in data:
        raise TrainableError("checkpoint was not written by a Ray Tune function trial (unknown header); start the trial afresh")
    header, payload = data[len(_MAGIC):].split(b"\n", 1)
    iteration = int(json.loads(header)["iteration"])
    if not payload:
        return None, iteration
    # A rung's own folder is the checkpoint's: one folder fewer to make and remove each resumed rung.
    folder = into.get() if isinstance(into, _LazyFolder) else into / "restored"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:  # written uncompressed: no format sniffing
        tar.extractall(folder, filter="data")
    return folder, iteration


def restore_checkpoint(data: bytes, into: Path) -> Any:
    """The ``ray.tune.Checkpoint`` a trial last reported, unpacked under ``into`` (replaced); None if it reported none."""
    import ray.tune

    shutil.rmtree(into, ignore_errors=True)
    folder, _ = _unpack(data, into)
    return ray.tune.Checkpoint.from_directory(str(folder)) if folder is not None else None


@register
class RayTuneFunctionTrainable(CallableTrainable):
    """A Ray Tune function trainable; its score is the reported ``metric`` at the rung's last report."""

    kind: ClassVar[str] = "raytune_function"
    metric: ClassVar[str] = "score"
    budget_unit: ClassVar[str] = "reported iterations"
    default_budget: ClassVar[tuple[float, float]] = (1, 27)
    Options: ClassVar[type[FunctionOptions]] = RayTuneFunctionOptions
    options: RayTuneFunctionOptions
    resumable: ClassVar[bool] = True
    mutable_params: ClassVar[frozenset[str] | None] = None
    callable_noun: ClassVar[str] = "Ray Tune function"
    rerun_with: ClassVar[str] = "rungflow.sweep(train, ..., out=RUN_DIR)"
    takes_budget_and_checkpoint: ClassVar[bool] = False  # train(config)

    def train(self, request: TrainRequest) -> TrainOutcome:
        import ray.tune

        fn = self._function()
        config = materialize(request.config, self.options.layout, self.options.steps) if self.options.layout else dict(request.config)
        workdir = _LazyFolder(prefix=f"rungflow-{request.trial_id}-")
        restored = _LazyFolder(prefix=f"rungflow-{request.trial_id}-checkpoint-")
        try:
            loaded, start = None, 0
            if request.checkpoint is not None:
                folder, start = _unpack(request.checkpoint, restored)
                loaded = ray.tune.Checkpoint.from_directory(str(folder)) if folder is not None else None
            trial = _TuneTrial(request, self.options, start, loaded, workdir)
            _install()
            token = _current.set(trial)
            try:
                returned = fn(config)
                if isinstance(returned, Mapping):  # Ray Tune takes a returned dict as the function's last report
                    trial.report(returned)
            except (_RungReached, _Misuse):
                pass
            finally:
                _current.reset(token)
                _uninstall()
        finally:
            workdir.remove()
            restored.remove()
        if trial.error:
            raise TrainableError(trial.error)
        if trial.last is None:
            raise TrainableError(f"the Ray Tune function returned without calling ray.tune.report; call "
                                 f"tune.report({{{self.options.metric!r}: value}}) each iteration")
        score = _number(trial.last[self.options.metric])
        metrics = {k: float(v) for k, v in trial.last.items()
                   if k != self.options.metric and isinstance(v, (int, float)) and math.isfinite(float(v))}
        reached = _number(trial.last[self.options.budget_metric])
        checkpoint = trial.checkpoint
        if checkpoint is None and request.checkpoint is not None:
            checkpoint = request.checkpoint  # nothing new saved this rung: the trial still resumes from the old one
        if checkpoint is None:
            # Never checkpointed: a promoted trial starts again, counting iterations from zero.
            checkpoint = _MAGIC + json.dumps({"iteration": 0}).encode() + b"\n"
        return TrainOutcome(score=score, budget_reached=reached, budget_trained=float(trial.iteration - trial.start_iteration),
                            checkpoint=checkpoint, metrics=metrics)
