"""The train task: one trial to one rung's budget, on whatever worker holds the trial's resources.

``run_trial`` is plain Python (the unit the runtimes execute); ``train_trial`` (rungflow.tasks.train_task) is its Prefect task,
named ``train-{trial}-r{rung}`` so the UI reads like the sweep. Failures never escape as
exceptions from ``run_trial``: a trial that raises or scores NaN/inf comes back as a failed
result with its error and the time it used, so the ledger bills it and the gate ranks it last.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any

from rungflow.budgets.driver import TrialJob
from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.redact import redact
from rungflow.tasks.checkpoints import CorruptCheckpoint, copy_checkpoint, open_store, save_validation_predictions
from rungflow.tasks.trainables import Trainable, TrainRequest, get_trainable_class

__all__ = ["TrialSpec", "TrialResult", "run_trial", "attempt_stamp_name"]

log = logging.getLogger("rungflow.train")


@dataclass(frozen=True, kw_only=True)
class TrialSpec(TrialJob):
    """The driver's job, with everything a worker needs to run it (picklable, no live objects)."""

    trainable_kind: str
    trainable_options: Mapping[str, Any]
    checkpoint_dir: str
    gpus: float = 0.0
    seed: int = 0
    attempt_dir: str | None = None  # where the attempt stamps when it starts training (resume bills from it)
    cpus: float = 0.0

    @classmethod
    def of(cls, job: TrialJob, **worker: Any) -> TrialSpec:
        return cls(**{**{f.name: getattr(job, f.name) for f in fields(TrialJob)}, **worker})


def attempt_stamp_name(trial_id: str, rung: int, attempt: int) -> str:
    return f"{trial_id}-r{rung}-a{attempt}.started"


def _stamp(spec: TrialSpec, when: float) -> None:
    """Record when this attempt began (first line) and ended (second): a resume after a crash bills between them."""
    if spec.attempt_dir is None:
        return
    try:
        path = os.path.join(spec.attempt_dir, attempt_stamp_name(spec.trial_id, spec.rung, spec.attempt))
        os.makedirs(spec.attempt_dir, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{when:.3f}\n")
    except OSError as exc:  # without the stamp an interrupted attempt is billed nothing, never twice
        log.warning("could not stamp the start of %s rung %s: %s", spec.trial_id, spec.rung, exc)


@dataclass(frozen=True)
class TrialResult:
    """What a worker sends back: the attempt's spend record, and what only the flow reads besides.

    ``record.cost`` is 0 here: the worker does not know the price; the flow prices the record as it bills it.
    """

    record: SpendRecord
    # Log lines the trial emitted in its worker, replayed into the Prefect task run's logs by the flow.
    logs: tuple[tuple[int, str], ...] = ()
    # Earlier attempts of this (trial, rung) whose worker was lost; each is billed once.
    lost_attempts: tuple[SpendRecord, ...] = ()

    @property
    def ok(self) -> bool:
        return self.record.ok


MAX_LOG_LINES = 200


class _TrialLogCapture(logging.Handler):
    """Keeps the log records emitted by the trial's own thread (other trials may share the process)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.lines: list[tuple[int, str]] = []
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread or record.name.startswith(("prefect", "ray")):
            return
        if len(self.lines) >= MAX_LOG_LINES:
            self.dropped += 1
            return
        try:
            self.lines.append((record.levelno, f"{record.name}: {record.getMessage()}"))
        except Exception:  # a record whose message cannot be formatted is not worth failing a trial for
            self.dropped += 1

    def collected(self) -> tuple[tuple[int, str], ...]:
        if self.dropped:
            return (*self.lines, (logging.WARNING, f"{self.dropped} more log lines from this trial were dropped"))
        return tuple(self.lines)


@lru_cache(maxsize=8)
def _trainable(kind: str, options_json: str) -> Trainable:
    # One instance per worker process and option set, so datasets and surrogate sessions stay warm
    # across the trials the worker runs (what Ray Tune's reuse_actors buys, without actors).
    return get_trainable_class(kind)(json.loads(options_json))


def _device(gpus: float) -> str:
    if gpus <= 0 or not _has_nvidia_device():
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


@lru_cache(maxsize=1)
def _has_nvidia_device() -> bool:
    # Importing torch just to learn there is no GPU costs seconds per worker; the device nodes tell at once.
    return os.path.exists("/dev/nvidiactl") or any(os.path.exists(f"/dev/nvidia{i}") for i in range(8))


def _worker_id() -> str:
    """host:pid, plus the Ray node id when running on Ray (tests and reports tell nodes apart by it)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        import ray

        if ray.is_initialized():
            worker += f":{ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:
        pass
    return worker


def run_trial(spec: TrialSpec) -> TrialResult:
    """Train ``spec`` and bill it; never raises for a trainable's failure. Keeps the trial's log lines."""
    _redact_worker_logs()
    capture = _TrialLogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        result = _run_trial(spec)
    finally:
        root.removeHandler(capture)
    return replace(result, logs=capture.collected()) if capture.lines or capture.dropped else result


def _clone(spec: TrialSpec, store: Any) -> tuple[float | None, str | None]:
    """A clone's start: its parent's checkpoint copied as its own. Returns (seconds it took, warning)."""
    if spec.clone_from is None or spec.resume_from_rung is None:
        return None, None
    t0 = time.perf_counter()
    try:
        copied = copy_checkpoint(store, (spec.clone_from, spec.resume_from_rung), (spec.trial_id, spec.resume_from_rung))
    except CorruptCheckpoint as exc:
        return time.perf_counter() - t0, f"{exc}; the clone trains from scratch"
    if not copied:
        return time.perf_counter() - t0, (f"checkpoint of {spec.clone_from} at rung {spec.resume_from_rung} is missing; "
                                          "the clone trains from scratch")
    return time.perf_counter() - t0, None


def _run_trial(spec: TrialSpec) -> TrialResult:
    store = open_store(spec.checkpoint_dir)
    # Before the clock starts: cloning is free (the parent paid for the checkpoint); its time is reported.
    clone_seconds, clone_warning = _clone(spec, store)
    started = time.time()
    t0 = time.perf_counter()
    _stamp(spec, started)
    worker = _worker_id()
    device = _device(spec.gpus)
    checkpoint: bytes | None = None
    warning: str | None = clone_warning
    if spec.resume_from_rung is not None and clone_warning is None:
        try:
            checkpoint = store.load(spec.trial_id, spec.resume_from_rung)
            if checkpoint is None:
                warning = f"checkpoint of {spec.trial_id} at rung {spec.resume_from_rung} is missing; training from scratch"
        except CorruptCheckpoint as exc:
            warning = f"{exc}; training from scratch"
    if warning:
        log.warning(warning)
    score: float | None = None
    metrics: Mapping[str, float] = {}
    reported_gpu_seconds: float | None = None
    budget_trained = 0.0
    resumed_from: float | None = None
    error: str | None = None
    status = TrialStatus.COMPLETED
    t_train = time.perf_counter()
    try:
        trainable = _trainable(spec.trainable_kind, json.dumps(dict(spec.trainable_options), sort_keys=True))
        outcome = trainable.train(
            TrainRequest(
                trial_id=spec.trial_id,
                config=dict(spec.config),
                budget=spec.budget,
                checkpoint=checkpoint,
                device=device,
                seed=spec.seed,
                cpus=spec.cpus or 1.0,
            )
        )
        trainable_seconds = time.perf_counter() - t_train
        score, metrics, reported_gpu_seconds = outcome.score, dict(outcome.metrics), outcome.gpu_seconds
        if clone_seconds is not None:
            metrics = {**metrics, "clone_seconds": clone_seconds}
        budget_trained = outcome.budget_trained
        resumed_from = outcome.budget_reached - outcome.budget_trained if checkpoint is not None else None
        if outcome.checkpoint is not None:
            store.save(spec.trial_id, spec.rung, outcome.checkpoint)
        if outcome.validation_predictions is not None:
            save_validation_predictions(store, spec.trial_id, spec.rung, outcome.validation_predictions)
        if score is None or not math.isfinite(float(score)):
            status, error = TrialStatus.FAILED, f"score is {score!r} (not a finite number)"
            score = None
        else:
            score = float(score)
    except Exception as exc:  # a trainable's failure is a result, not a crash of the sweep
        trainable_seconds = time.perf_counter() - t_train
        status = TrialStatus.FAILED
        # Workers hold the forwarded credentials too: nothing they report may carry them.
        error = redact(f"{type(exc).__name__}: {exc}")
        log.warning("trial %s rung %s failed: %s\n%s", spec.trial_id, spec.rung, error, redact(traceback.format_exc(limit=5)))
    wall = time.perf_counter() - t0
    _stamp(spec, started + wall)
    # Wall-clock x GPUs held, unless the trainable knows its own cost (a surrogate does).
    gpu_seconds = reported_gpu_seconds if reported_gpu_seconds is not None else wall * spec.gpus
    return TrialResult(SpendRecord(
        trial_id=spec.trial_id,
        bracket=spec.bracket,
        rung=spec.rung,
        budget=spec.budget,
        score=score,
        status=status,
        gpu_seconds=float(gpu_seconds),
        gpus=spec.gpus,
        cost=0.0,
        started_at=started,
        finished_at=time.time(),
        wall_seconds=wall,
        trainable_seconds=trainable_seconds,
        budget_trained=budget_trained,
        attempt=spec.attempt,
        error=error if error is None or warning is None else f"{error} ({warning})",
        metrics=metrics,
        device=device,
        worker=worker,
        resumed_from_budget=resumed_from,
        cpu_seconds=wall * spec.cpus,
        cpus=spec.cpus,
    ))


_worker_logs_redacted = False


def _redact_worker_logs() -> None:
    # A Ray worker is a process of its own, with the forwarded credentials in its environment.
    global _worker_logs_redacted
    if not _worker_logs_redacted:
        from rungflow.redact import install_log_redaction

        install_log_redaction()
        _worker_logs_redacted = True
