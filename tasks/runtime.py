"""Runtimes: where trials run. Threads in the flow process, or a pool of long-lived Ray actors.

Every trial is one Prefect task run in the flow process (so the UI shows each trial, named after
it); the task hands the trial to the runtime, which runs it and returns a :class:`TrialResult`.

Why not prefect-ray's ``RayTaskRunner``, which runs the Prefect task itself inside a Ray worker?
Measured here it costs ~110-170 ms per trivial trial (the Prefect task engine starts in the worker for
every task: settings, API client, state round-trips), against ~30-55 ms for Ray Tune. Here the
Prefect side stays in the flow process (a thread-pool task, ~10 ms) and the work goes to one Ray actor
per slot, kept alive across trials so datasets, surrogate sessions and CUDA contexts stay warm, as
Ray Tune's ``reuse_actors`` does. Actors are also what make trial faults manageable: a trial that hangs
past ``trial_timeout`` or a cap that cancels in-flight trials kills its actor (``ray.kill``), a dead
worker surfaces as ``RayActorError`` and is retried from the last checkpoint up to ``max_retries``
(Ray's own retries are off, so there is one owner of retries).

A trial that asks for GPUs the cluster lacks runs on CPU and is still billed its GPU share, so caps
behave as on the GPU machine the config was written for.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from rungflow.budgets.holding import RELEASE_AUTO, RELEASE_NEVER
from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.redact import is_secret_name
from rungflow.tasks.train import TrialResult, TrialSpec, run_trial
from rungflow.tasks.trainables.function import FUNCTION_FROM_WORKING_DIR_ENV, install_callables, registered_callables
from rungflow.tasks.worker_pool import HoldSink, WorkerPool

__all__ = ["Runtime", "ThreadRuntime", "RayRuntime", "make_runtime", "active_runtime", "use_runtime"]

log = logging.getLogger("rungflow.runtime")


def _unfinished(spec: TrialSpec, status: TrialStatus, started: float, error: str, gpus: float | None = None) -> TrialResult:
    """A result for a trial that produced none (cancelled, timed out, worker lost): billed wall x GPUs held."""
    now = time.time()
    wall = max(0.0, now - started)
    held = spec.gpus if gpus is None else gpus
    return TrialResult(SpendRecord(
        trial_id=spec.trial_id, bracket=spec.bracket, rung=spec.rung, budget=spec.budget, score=None, status=status,
        gpu_seconds=wall * held, gpus=held, cost=0.0, started_at=started, finished_at=now, wall_seconds=wall,
        trainable_seconds=0.0, budget_trained=0.0, attempt=spec.attempt, error=error, cpu_seconds=wall * spec.cpus,
        cpus=spec.cpus,
    ))


def _key(spec: TrialSpec) -> tuple[str, int]:
    return spec.trial_id, spec.rung


@dataclass
class Runtime(ABC):
    """Where trials run. ``execute`` is called from the trial's Prefect task thread and never raises."""

    kind: str
    slots: int
    trial_timeout: float | None = None
    max_retries: int = 0
    note: str = ""
    # What each worker holds, as billed: its GPU share even where it runs on CPU, and its CPUs.
    hold_gpus: float = 0.0
    hold_cpus: float = 1.0
    release_idle_after: float | str = RELEASE_AUTO
    _cancelled: dict[tuple[str, int], str] = field(default_factory=dict)  # trial and rung -> why
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: WorkerPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = self._make_pool()

    def _make_pool(self) -> WorkerPool:
        """The runtime's workers: created on demand, reused, given back when idle. Here, slots of the flow process,
        each held from its first trial to the end: the process keeps what its threads loaded (a CUDA context among
        them), so there is nothing to give back early."""
        return WorkerPool(self.slots, create=object, destroy=lambda _slot: None, gpus=self.hold_gpus,
                          cpus=self.hold_cpus, release_after=RELEASE_NEVER, name=self.kind)

    def bill_holds_to(self, holds: HoldSink | None) -> None:
        """Report each worker's hold on its resources (start to release) to ``holds``, the sweep's ledger."""
        self._pool.holds = holds


    @abstractmethod
    def execute(self, spec: TrialSpec) -> TrialResult:
        """Run one trial (with retries where the runtime owns them); the result says how it ended."""

    def cancel(self, specs: list[TrialSpec], reason: str) -> None:
        """Stop these trials: queued ones never start, running ones stop where the runtime can stop them."""
        with self._lock:
            self._cancelled.update((_key(s), reason) for s in specs)

    def is_cancelled(self, spec: TrialSpec) -> bool:
        with self._lock:
            return _key(spec) in self._cancelled

    def cancelled_because(self, spec: TrialSpec, when: str = "") -> str:
        """The record's error for a cancelled trial: the sweep's own reason (a cap, the Prefect API gone, a stop rule)."""
        with self._lock:
            reason = self._cancelled.get(_key(spec), "the sweep stopped")
        return f"cancelled{when}: {reason}"

    def close(self) -> None:
        """Release workers (actors); the runtime can still be used afterwards, it starts them again."""
        self._pool.close()


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in another thread at its next bytecode (how a hung Python trial is interrupted)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))


class TrialTimeout(Exception):
    """Raised inside a trial's thread when it has run past ``trial_timeout``."""


@dataclass
class ThreadRuntime(Runtime):
    """Trials in threads of the flow process: no isolation, no start-up cost; for CPU work and tests.

    A thread cannot be killed: a trial past ``trial_timeout`` gets an exception raised in its thread
    (it stops at the trainable's next Python bytecode) and is recorded as failed at once; a trial
    cancelled by a cap runs to its end and is billed in full.
    """

    def execute(self, spec: TrialSpec) -> TrialResult:
        # The flow's thread pool may be wider than the slots (it is sized for any runtime); the pool bounds the work.
        slot = self._pool.acquire()
        try:
            return self._execute(spec)
        finally:
            self._pool.release(slot)

    def _execute(self, spec: TrialSpec) -> TrialResult:
        started = time.time()
        if self.is_cancelled(spec):
            return _unfinished(spec, TrialStatus.CANCELLED, started, self.cancelled_because(spec))
        if self.trial_timeout is None:
            return run_trial(spec)
        box: list[TrialResult] = []
        worker = threading.Thread(target=lambda: box.append(run_trial(spec)), name=f"trial-{spec.trial_id}", daemon=True)
        worker.start()
        worker.join(self.trial_timeout)
        if box:
            return box[0]
        if worker.ident is not None:
            _raise_in_thread(worker.ident, TrialTimeout)
        log.warning("trial %s rung %s ran past runtime.trial_timeout=%gs; recorded as failed",
                    spec.trial_id, spec.rung, self.trial_timeout)
        return _unfinished(spec, TrialStatus.TIMEOUT, started,
                           f"timed out: no result within runtime.trial_timeout={self.trial_timeout:g}s")


def _rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 elsewhere, which disables the limit)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _trial_worker_class() -> Any:
    """The actor class, built on first use so the thread runtime never imports Ray."""
    import ray

    @ray.remote(max_restarts=0, max_task_retries=0)
    class TrialWorker:
        """Runs trials one at a time in a long-lived worker process; optionally watches its memory."""

        def __init__(self, memory_limit_bytes: int | None) -> None:
            self.started_at = time.time()  # where Ray's own actor start falls: the worker's hold starts here
            self._limit = memory_limit_bytes
            self._trial_thread: int | None = None
            if memory_limit_bytes:
                threading.Thread(target=self._watch_memory, daemon=True).start()

        def _watch_memory(self) -> None:
            assert self._limit is not None
            while True:
                time.sleep(0.1)
                if _rss_bytes() > self._limit and self._trial_thread is not None:
                    # A MemoryError in the trial's thread fails the trial with a reason and frees its memory;
                    # if the trainable is stuck in C code and never returns to Python, the worker goes,
                    # which the flow sees as a lost worker.
                    _raise_in_thread(self._trial_thread, MemoryError)
                    time.sleep(5.0)
                    if _rss_bytes() > self._limit:
                        os._exit(137)

        def ready(self) -> float:
            return self.started_at

        def run(self, spec: TrialSpec, function_token: str | None = None, function_blob: bytes | None = None) -> TrialResult:
            if function_token is not None and function_blob is not None:
                install_callables({function_token: function_blob})
            self._trial_thread = threading.get_ident()
            try:
                result = run_trial(spec)
            finally:
                self._trial_thread = None
            error = result.record.error
            if error and error.startswith("MemoryError") and self._limit:
                result = replace(result, record=replace(
                    result.record, error=f"MemoryError: the trial's worker passed runtime.memory_per_trial_gb="
                                         f"{self._limit / 2**30:g} GiB"))
            return result

    return TrialWorker


@dataclass
class RayRuntime(Runtime):
    """Trials on a pool of Ray actors, one per slot, each holding a trial's CPUs and GPUs."""

    address: str | None = None
    ray_num_gpus: float = 0.0
    ray_num_cpus: float = 1.0
    memory_limit_bytes: int | None = None
    _running: dict[tuple[str, int], Any] = field(default_factory=dict)
    _actor_started: dict[int, float] = field(default_factory=dict)
    _function_refs: dict[str, Any] = field(default_factory=dict)

    def _function_args(self, spec: TrialSpec) -> tuple[Any, ...]:
        """A user's training function passed from Python travels to the workers as Ray ships functions:
        cloudpickled once into the object store, installed by each worker on first use."""
        token = spec.trainable_options.get("callable")  # the function, Ray Tune and Optuna kinds alike
        if token is None:
            return ()
        import ray

        with self._lock:
            if token not in self._function_refs:
                blob = registered_callables().get(token)
                if blob is None:
                    return ()  # not registered here: the worker's trainable names the fix
                self._function_refs[token] = ray.put(blob)
            return (token, self._function_refs[token])

    def _make_pool(self) -> WorkerPool:
        return WorkerPool(self.slots, create=self._start_actor, destroy=_kill_actor, gpus=self.hold_gpus,
                          cpus=self.hold_cpus, release_after=self.release_idle_after, name="actor",
                          started_at=lambda actor: self._actor_started.pop(id(actor), None))

    def _start_actor(self) -> Any:
        import ray

        options: dict[str, Any] = {"num_cpus": self.ray_num_cpus, "num_gpus": self.ray_num_gpus,
                                   "scheduling_strategy": "SPREAD"}
        if self.memory_limit_bytes:
            options["memory"] = self.memory_limit_bytes
        actor = _trial_worker_class().options(**options).remote(self.memory_limit_bytes)
        try:
            # Wait for the worker process to start and import rungflow before any trial clock runs, so
            # start-up (seconds on a busy node) never counts against runtime.trial_timeout.
            started_at = ray.get(actor.ready.remote())
        except Exception:
            _kill_actor(actor)
            raise
        with self._lock:
            self._actor_started[id(actor)] = started_at
        return actor

    def execute(self, spec: TrialSpec) -> TrialResult:
        lost: list[SpendRecord] = []
        attempt_spec = spec
        while True:
            result = self._attempt(attempt_spec)
            record = result.record
            if record.status != TrialStatus.LOST or attempt_spec.attempt - spec.attempt >= self.max_retries:
                if record.status == TrialStatus.LOST:
                    result = replace(result, record=replace(
                        record, status=TrialStatus.FAILED,
                        error=f"{record.error}; gave up after runtime.max_retries={self.max_retries}"))
                return replace(result, lost_attempts=tuple(lost)) if lost else result
            log.warning("trial %s rung %s: %s; retrying from its last checkpoint (attempt %d of %d)",
                        spec.trial_id, spec.rung, record.error, attempt_spec.attempt - spec.attempt + 1, self.max_retries)
            lost.append(record)
            attempt_spec = replace(attempt_spec, attempt=attempt_spec.attempt + 1)

    def _attempt(self, spec: TrialSpec) -> TrialResult:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, WorkerCrashedError

        started = time.time()
        if self.is_cancelled(spec):
            return _unfinished(spec, TrialStatus.CANCELLED, started, self.cancelled_because(spec))
        try:
            actor = self._pool.acquire()
        except Exception as exc:
            return _unfinished(spec, TrialStatus.LOST, started, f"worker did not start ({type(exc).__name__}: {exc})")
        with self._lock:
            self._running[_key(spec)] = actor
        started = time.time()
        try:
            result = ray.get(actor.run.remote(spec, *self._function_args(spec)), timeout=self.trial_timeout)
        except GetTimeoutError:
            self._pool.discard(actor)
            log.warning("trial %s rung %s ran past runtime.trial_timeout=%gs; its worker was stopped",
                        spec.trial_id, spec.rung, self.trial_timeout)
            return _unfinished(spec, TrialStatus.TIMEOUT, started,
                               f"timed out: no result within runtime.trial_timeout={self.trial_timeout:g}s")
        except (RayActorError, WorkerCrashedError) as exc:
            self._pool.discard(actor)
            if self.is_cancelled(spec):
                return _unfinished(spec, TrialStatus.CANCELLED, started, self.cancelled_because(spec, " mid-trial"))
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _unfinished(spec, TrialStatus.LOST, started, f"worker lost ({type(exc).__name__}: {cause[:200]})")
        except Exception as exc:  # e.g. the spec or result could not be (de)serialized
            self._pool.release(actor)
            return _unfinished(spec, TrialStatus.FAILED, started, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.pop(_key(spec), None)
        self._pool.release(actor)
        return result

    def cancel(self, specs: list[TrialSpec], reason: str) -> None:
        import ray

        super().cancel(specs, reason)
        with self._lock:
            running = [self._running[_key(s)] for s in specs if _key(s) in self._running]
        for actor in running:
            # The waiting task thread sees RayActorError, finds the trial cancelled and bills its time.
            ray.kill(actor, no_restart=True)

def _kill_actor(actor: Any) -> None:
    import ray

    ray.kill(actor, no_restart=True)


# --- the runtime the flow's train tasks use -----------------------------------------------------------
_active: Runtime | None = None


def active_runtime() -> Runtime:
    if _active is None:
        raise RuntimeError("no runtime is active: train tasks run inside a sweep (flows.sweep), which sets one")
    return _active


class use_runtime:
    """``with use_runtime(rt):`` makes ``rt`` the runtime of the train tasks submitted inside."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._previous: Runtime | None = None

    def __enter__(self) -> Runtime:
        global _active
        self._previous, _active = _active, self.runtime
        return self.runtime

    def __exit__(self, *exc: object) -> None:
        global _active
        _active = self._previous
        self.runtime.close()


def _ray_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The flow's Prefect and rungflow settings for the workers, credentials left out.

    Workers import Prefect (with no API URL one would start an ephemeral server of its own), but
    never call its API: trials report back through Ray. A runtime_env is stored in Ray's GCS and
    shown by ``ray list actors --detail`` and the dashboard, so an API key or auth string put there
    would leak to anyone who can read the cluster.
    """
    env = os.environ if environ is None else environ
    forwarded = {k: v for k, v in env.items()
                 if (k.startswith("PREFECT_") or k.startswith("RUNGFLOW_")) and not is_secret_name(k)}
    forwarded.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return forwarded


def make_runtime(kind: str, *, address: str | None, gpus_per_trial: float, cpus_per_trial: float,
                 max_concurrent: int | None, trial_timeout: float | None = None, max_retries: int = 0,
                 memory_per_trial_gb: float | None = None, working_dir: str | None = None,
                 release_idle_after: float | str = RELEASE_AUTO) -> Runtime:
    held = {"hold_gpus": gpus_per_trial, "hold_cpus": cpus_per_trial}
    if kind == "thread":
        slots = max_concurrent or max(1, int((os.cpu_count() or 1) // max(cpus_per_trial, 1)))
        return ThreadRuntime("thread", slots, trial_timeout=trial_timeout, max_retries=0, **held)
    import ray

    init_kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": _ray_env()},
        "include_dashboard": False,
        "log_to_driver": True,
        "ignore_reinit_error": True,
        "logging_level": logging.WARNING,
    }
    if not ray.is_initialized():
        if address:
            if working_dir:
                # Ray's own convention: the folder of the user's code is the job's working directory on every node.
                init_kwargs["runtime_env"]["working_dir"] = working_dir
                init_kwargs["runtime_env"]["env_vars"][FUNCTION_FROM_WORKING_DIR_ENV] = "1"
            ray.init(address=address, **init_kwargs)
        else:
            # "local" always starts a fresh instance; without it Ray attaches to any cluster recorded in
            # /tmp/ray and then refuses num_cpus.
            ray.init(address="local", num_cpus=os.cpu_count(), **init_kwargs)
    resources = ray.cluster_resources()
    cluster_gpus = float(resources.get("GPU", 0.0))
    cluster_cpus = float(resources.get("CPU", 1.0))
    note = ""
    ray_gpus = gpus_per_trial
    if gpus_per_trial > 0 and cluster_gpus < gpus_per_trial:
        ray_gpus = 0.0
        note = (
            f"runtime.gpus_per_trial={gpus_per_trial:g} but the Ray cluster has {cluster_gpus:g} GPUs: "
            f"trials run on CPU and are billed {gpus_per_trial:g} GPU each"
        )
        log.warning(note)
    by_cpu = int(cluster_cpus // cpus_per_trial) if cpus_per_trial else 1
    by_gpu = int(cluster_gpus // ray_gpus) if ray_gpus > 0 else by_cpu
    slots = max(1, min(by_cpu, by_gpu))
    if max_concurrent:
        slots = min(slots, max_concurrent)
    memory = int(memory_per_trial_gb * 2**30) if memory_per_trial_gb else None
    return RayRuntime("ray", slots, trial_timeout=trial_timeout, max_retries=max_retries, note=note, address=address,
                      release_idle_after=release_idle_after, **held,
                      ray_num_gpus=ray_gpus, ray_num_cpus=cpus_per_trial, memory_limit_bytes=memory)
