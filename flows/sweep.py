"""The sweep flow: the pure driver (:mod:`budgets.driver`) with Prefect task runs as its executor.

Synchronous schedulers (fifo, sha, hyperband) run each rung as a stage:
``search`` → ``train`` mapped over the rung's trials → ``gate`` → ``promote``.
ASHA runs without barriers: whenever a trial finishes, the scheduler promotes or starts another.
The loop, the controller's checks and the stop reasons are the driver's; this module builds and
resumes a sweep from its run directory, turns jobs into ``train`` task runs on the runtime, and
rewrites ``result.json`` (and the Prefect artifacts) after each stage.

Resume is replay: a sweep whose run directory already holds a ledger (``rungflow resume``, or a
retried Prefect flow run with the same ``run_dir``) runs the same deterministic driver from the
start. Whenever it is about to train a (trial, rung) whose latest attempt the ledger holds as
finished, it takes that record instead (:meth:`SweepDriver.replayed`), so the searcher, the scheduler and
the controller see the same inputs in the same order and continue as if nothing happened. An attempt
that was dispatched (a ``started`` marker) but never billed is billed once as ``interrupted``, from
the moment the trial began (its start stamp under ``attempts/``) to the dead process's last sign of
life (the newest of ``heartbeat``, touched every ``HEARTBEAT_SECONDS``, the ledger's last write and the
attempts' stamps) or to its own end stamp if it ended unbilled, then runs again as the next attempt
from its previous rung's checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from rungflow.budgets.controller import BudgetController, StopReason
from rungflow.budgets.driver import SweepDriver, TrialJob
from rungflow.budgets.history_stop import stop_rule_in_use
from rungflow.budgets.ledger import Ledger, SetupSpend, SpendRecord, StartMarker, TrialStatus
from rungflow.budgets.prior_guard import PriorGuardSearcher
from rungflow.budgets.schedulers import RungDecision, TrialScore, make_scheduler
from rungflow.budgets.search_registry import make_searcher
from rungflow.budgets.searchers import Observation, Searcher
from rungflow.budgets.transfer_prior import TransferModel, TransferPriorSearcher
from rungflow.config import ConfigError, SweepConfig, resume_conflicts, validate
from rungflow.faults import fault_point
from rungflow.flows.prefect_server import SERVER_LOG, prefect_api
from rungflow.redact import install_log_redaction, redact, redact_json
from rungflow.tasks.api_watch import PrefectAPIWatch
from rungflow.tasks.artifacts import PrefectAPIUnreachable, SweepArtifacts
from rungflow.tasks.history import HistoryError, prior_for, save_prior
from rungflow.tasks.mlflow_tracking import TrackingError, open_tracker_for
from rungflow.tasks.optuna_study import StudyError, open_study_for
from rungflow.tasks.runtime import Runtime, make_runtime, use_runtime
from rungflow.tasks.stages import gate_trials, promote_survivors, suggest_trials
from rungflow.tasks.train import TrialResult, TrialSpec, attempt_stamp_name
from rungflow.tasks.train_task import train_trial
from rungflow.tasks.ui_sync import RecordedTaskRuns

__all__ = ["Sweep", "PrefectExecutor", "sweep_flow", "run_sweep", "set_reporter", "HEARTBEAT_SECONDS",
           "MAX_RUNTIME_FAILURES"]

# How often a running sweep touches RUN_DIR/heartbeat: a killed sweep's interrupted trials are
# billed up to its last sign of life, so at most this many seconds of their work go unbilled.
# RUNGFLOW_HEARTBEAT_SECONDS overrides it (the fault-injection tests beat faster than their kills).
HEARTBEAT_SECONDS = float(os.environ.get("RUNGFLOW_HEARTBEAT_SECONDS", "1.0"))

# Trials in a row whose worker was lost (after the runtime's own retries) before the sweep stops as
# runtime_failed instead of spending its schedule on a dead cluster; RUNGFLOW_MAX_RUNTIME_FAILURES overrides it.
MAX_RUNTIME_FAILURES = int(os.environ.get("RUNGFLOW_MAX_RUNTIME_FAILURES", "5"))

log = logging.getLogger("rungflow.sweep")

_reporter: Callable[[str, dict[str, Any]], None] | None = None


def set_reporter(callback: Callable[[str, dict[str, Any]], None] | None) -> None:
    """Install a callback for progress events ("planned", "result", "decision", "done"), e.g. a progress bar."""
    global _reporter
    _reporter = callback


def _report(kind: str, **data: Any) -> None:
    if _reporter is not None:
        _reporter(kind, data)


def _mirror(sweep: Sweep, final: bool, result: dict[str, Any]) -> None:
    """The Optuna study and MLflow runs, caught up from the ledger. The ledger is the truth: a blip of their
    database or server costs the sweep nothing and is caught up at the next write."""
    if sweep.study is not None:
        try:
            sweep.study.sync(sweep.ledger.records, sweep.trials, final=final)
        except Exception as exc:
            log.warning("Optuna study %r not updated (%s: %s); retried at the next result", sweep.study.study_name,
                        type(exc).__name__, redact(str(exc)).splitlines()[0][:200])
    if sweep.tracker is not None:
        try:
            extra: dict[str, Any] = {}
            if final:
                from rungflow.results import plot_anytime
                from rungflow.tasks.artifacts import summary_markdown

                extra = {"summary_markdown": summary_markdown(result),
                         "plot": plot_anytime(result, sweep.run_dir / "anytime.png")}
            sweep.tracker.sync(sweep.ledger.records, sweep.trials, final=final, **extra)
        except Exception as exc:
            log.warning("MLflow not updated (%s: %s); retried at the next result", type(exc).__name__,
                        redact(str(exc)).splitlines()[0][:200])


@dataclass(kw_only=True)
class Sweep(SweepDriver):
    """One sweep in the flow process: the driver's state (:class:`budgets.driver.SweepDriver`) with its
    run directory, config and Prefect edge."""

    config: SweepConfig
    run_dir: Path
    runtime_note: str = ""
    artifacts: Any = None
    recorded: RecordedTaskRuns | None = None
    started_at: float = field(default_factory=time.time)
    resumed: bool = False
    _lock: Any = None
    study: Any = None  # the Optuna study the sweep is mirrored into (rungflow.tasks.optuna_study)
    tracker: Any = None  # the MLflow runs it is reported to, if tracking.mlflow is set
    api_watch: PrefectAPIWatch | None = None  # whether the Prefect API answers (rungflow.tasks.api_watch)
    history: dict[str, Any] | None = None  # the prior from history: (rungflow.tasks.history.prior_for)

    @classmethod
    def create(cls, config: SweepConfig, run_dir: str | Path | None = None, clock: Callable[[], float] = time.time) -> Sweep:
        """A new sweep in ``run_dir``, or the resumption of the one whose ledger is already there."""
        run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        lo, hi = config.budget_range()
        integer = config.trainable_class().integer_budget
        mode = config.mode()
        scheduler = make_scheduler(
            config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta, integer=integer,
            iterations=config.scheduler.iterations, num_trials=config.search.num_trials, mode=mode,
            **config.scheduler_options(),
        )
        searcher = make_searcher(
            config.search.algorithm, config.search_space(), seed=config.search.seed, mode=mode, max_budget=hi,
            grid_points=config.search.grid_points, random_fraction=config.search.random_fraction,
            min_points_in_model=config.search.min_points_in_model, cost_aware=config.search.cost_aware,
        )
        # A missing dataset fails the flow now, naming the fix, not as a sweep of failed trials.
        trainable = config.trainable_class()(config.trainable.options)
        trainable.check()
        settings = dataclasses.replace(config.budget.settings(), brackets_per_iteration=scheduler.brackets_per_iteration)
        ledger_path, config_path = run_dir / "ledger.jsonl", run_dir / "config.json"
        # One process per run directory: a second one would bill the first one's running trials as interrupted.
        lock = lock_run_dir(run_dir)
        resumed = ledger_path.exists()
        if resumed and config_path.exists():
            check_resumable(config_path, config)
        try:  # before anything is spent: a bad storage.optuna_url or tracking URI, or another sweep's study, is one line
            study = open_study_for(config, asynchronous=not scheduler.synchronous, max_budget=hi, mode=mode,
                                   run_dir=run_dir)
            tracker = open_tracker_for(config, asynchronous=not scheduler.synchronous, max_budget=hi)
        except (StudyError, TrackingError) as exc:
            lock.close()
            raise ConfigError(str(exc)) from None
        # Read before the ledger is opened: trimming a torn tail would move the ledger's mtime.
        last_alive = last_sign_of_life(run_dir) if resumed else None
        ledger = Ledger(ledger_path, price_per_gpu_hour=settings.price_per_gpu_hour,
                        price_per_cpu_hour=settings.price_per_cpu_hour, replay=resumed, clock=clock,
                        last_alive=last_alive)
        rt = config.runtime
        for spent in trainable.spent_before_sweep():  # the user's code run before any trial: billed at a trial's share
            wall = float(spent["wall_seconds"])
            ledger.charge_setup(SetupSpend(**spent, gpus=rt.gpus_per_trial, cpus=rt.cpus_per_trial,
                                           gpu_seconds=wall * rt.gpus_per_trial, cpu_seconds=wall * rt.cpus_per_trial,
                                           cost=ledger.cost_of(wall * rt.gpus_per_trial, wall * rt.cpus_per_trial)))
        now = clock()
        elapsed_before, first_start = 0.0, now
        if ledger.sessions and last_alive is not None:
            last = ledger.sessions[-1]
            elapsed_before = float(last.get("elapsed_before", 0.0)) + max(0.0, last_alive - float(last["started_at"]))
            first_start = float(ledger.sessions[0]["started_at"])
        # A deadline counts the time the sweep ran, not the time it lay dead before the resume.
        controller = BudgetController(settings, mode=mode, clock=clock, started_at=now - elapsed_before, full_budget=hi)
        write_json_atomic_config(config_path, config)
        sweep = cls(searcher=searcher, scheduler=scheduler, ledger=ledger, controller=controller, mode=mode,
                    min_budget=lo, max_budget=hi, seed=config.search.seed, gpus_per_trial=config.runtime.gpus_per_trial,
                    cpus_per_trial=config.runtime.cpus_per_trial, clock=clock, max_runtime_failures=MAX_RUNTIME_FAILURES,
                    config=config, run_dir=run_dir, started_at=first_start, resumed=resumed, _lock=lock,
                    study=study, tracker=tracker)
        if resumed:
            sweep._bill_interrupted(last_alive if last_alive is not None else now)
            log.info("resuming %s: %d records to replay", run_dir, sweep.load_replay())
        ledger.record_session({"started_at": now, "elapsed_before": elapsed_before, "pid": os.getpid(),
                               "resumed": resumed})
        return sweep

    def _bill_interrupted(self, last_alive: float) -> None:
        """Bill, once, each attempt that was dispatched but died with the process, for the time it ran."""
        for marker in self.ledger.unbilled_starts():
            began, ended = trial_stamps(self.attempts_dir, marker)
            # A trial that ended but was not billed before the crash is billed to its end, not beyond.
            until = min(last_alive, ended) if ended is not None else last_alive
            wall = max(0.0, until - began) if began is not None else 0.0
            cpus = self.config.runtime.cpus_per_trial
            self.ledger.bill_pending(SpendRecord(
                trial_id=marker.trial_id, bracket=marker.bracket, rung=marker.rung, budget=marker.budget, score=None,
                status=TrialStatus.INTERRUPTED, gpu_seconds=wall * marker.gpus, gpus=marker.gpus,
                cpu_seconds=wall * cpus, cpus=cpus, cost=self.ledger.cost_of(wall * marker.gpus, wall * cpus), started_at=began if began is not None else marker.started_at,
                finished_at=max(until, began or 0.0), attempt=marker.attempt, wall_seconds=wall,
                error="interrupted: the sweep process died mid-trial; billed from the trial's start to the process's "
                      "last sign of life" if began is not None else "interrupted before the trial started: nothing billed",
            ))

    def close(self) -> None:
        """Let another process run this directory (the lock also goes with the process, however it dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def attempts_dir(self) -> Path:
        return self.run_dir / "attempts"

    def on_record(self, record: SpendRecord) -> None:
        _report("result", record=record, gpu_hours=self.ledger.gpu_hours, cost=self.ledger.cost)

    def on_decision(self, decision: Mapping[str, Any]) -> None:
        _report("decision", decision=dict(decision))

    def spec(self, job: TrialJob) -> TrialSpec:
        rt = self.config.runtime
        return TrialSpec.of(
            job,
            config=dict(job.config),
            trainable_kind=self.config.trainable.kind,
            trainable_options=self.config.trainable.options,
            checkpoint_dir=self.config.storage.checkpoint_location(self.run_dir),
            gpus=rt.gpus_per_trial,
            cpus=rt.cpus_per_trial,
            seed=self.config.search.seed,
            attempt_dir=str(self.attempts_dir.resolve()),
        )

    def priced(self, record: SpendRecord) -> SpendRecord:
        """A worker's record as the ledger bills it: priced here (workers do not know the price), its error
        redacted once more (a lost worker's error is written by the runtime, not the trial)."""
        return dataclasses.replace(record, cost=self.ledger.cost_of(record.gpu_seconds, record.cpu_seconds),
                                   error=None if record.error is None else redact(record.error))

    def run(self, runtime: Runtime) -> dict[str, Any]:
        self.runtime_note = runtime.note
        self.slots = runtime.slots
        _report("planned", units=self.scheduler.budget_units(), max_gpu_hours=self.config.budget.max_gpu_hours,
                max_cost=self.config.budget.max_cost, max_cpu_hours=self.config.budget.max_cpu_hours, mode=self.mode,
                name=self.config.name)
        heartbeat = Heartbeat(self.run_dir / "heartbeat")
        runtime.bill_holds_to(self.ledger)
        try:
            with use_runtime(runtime):
                SweepDriver.run(self, PrefectExecutor(self, runtime))
        except KeyboardInterrupt:
            self.stop_reason, self.stop_detail = str(StopReason.CANCELLED), "interrupted"
            self.ledger.adopt_all()
            self.write_result()
            raise
        except PrefectAPIUnreachable:
            # The publish that found the API gone wrote result.json; the driver then billed what was in flight.
            self.ledger.adopt_all()
            self.write_final_result()
            raise
        finally:
            heartbeat.stop()
            # The runtime gave its idle workers back as it closed; any it could not (one stuck in a trial that
            # a cap cancelled) is billed up to now, and no later hold of a reused runtime lands in this ledger.
            self.ledger.release_all_holds()
            runtime.bill_holds_to(None)
            self.close()
        # What the resumed driver did not reach (a cap lowered on resume) was still billed: keep it.
        self.ledger.adopt_all()
        result = self.write_result(final=True)
        _report("done", result=result)
        return result

    # --- result.json ------------------------------------------------------------------------------
    def write_result(self, final: bool = False) -> dict[str, Any]:
        from rungflow.results import build_result, write_json_atomic

        result = redact_json(build_result(self, final=final))
        write_json_atomic(self.run_dir / "result.json", result)
        _mirror(self, final, result)
        if self.artifacts is not None:
            try:
                if final and self.api_watch is not None and self.api_watch.wait_until_up():
                    # The flow run's end and the final artifacts needed the API and it is back: result.json says so.
                    result = redact_json(build_result(self, final=final))
                    write_json_atomic(self.run_dir / "result.json", result)
                self.artifacts.publish(result, self.config.budget.max_gpu_hours)
            except PrefectAPIUnreachable as exc:
                # Stop spending where nobody can watch: result.json says why and holds every finished trial.
                if self.stop_reason is None:
                    self.stop_reason = str(StopReason.CANCELLED)
                    self.stop_detail = (f"the Prefect API stopped answering ({exc}); the sweep stopped and billed every "
                                        "trial it had started")
                self.write_final_result()
                raise
        return result

    def write_final_result(self) -> None:
        """result.json as the sweep ends, without publishing (the API it would publish to is gone)."""
        from rungflow.results import build_result, write_json_atomic

        write_json_atomic(self.run_dir / "result.json", redact_json(build_result(self, final=True)))


class PrefectExecutor:
    """The driver's jobs as Prefect task runs on the runtime: search → train → gate → promote, as in the UI."""

    def __init__(self, sweep: Sweep, runtime: Runtime) -> None:
        self.sweep, self.runtime, self.slots = sweep, runtime, runtime.slots

    # Large arguments go in quote(): Prefect otherwise walks every element of them (and a searcher's whole
    # history) to find upstream futures, which at 1,000 trials is seconds a task run. The task gets them as they are.
    def suggest(self, searcher: Searcher, count: int, bracket: int) -> list[dict[str, Any]]:
        return suggest_trials(quote(searcher), count, bracket)

    def ready(self) -> None:
        # Once the Prefect API has caught up, so a 10,000-trial sweep does not outrun its UI.
        if self.sweep.recorded is not None:
            self.sweep.recorded.wait_for_server()

    def start(self, job: TrialJob, notify: Callable[[Any], None]) -> Any:
        future = train_trial.submit(self.sweep.spec(job))
        future.add_done_callback(lambda _f: notify(future))
        return future

    def advance(self) -> None:
        """Results arrive from the train tasks' threads: nothing to move."""

    def collect(self, handle: Any, job: TrialJob) -> list[SpendRecord]:
        result = self._result_of(handle, job)
        if self.sweep.recorded is not None:
            self.sweep.recorded.task_run_finished()
        return [self.sweep.priced(r) for r in (*result.lost_attempts, result.record)]

    def _result_of(self, future: Any, job: TrialJob) -> TrialResult:
        future.wait()
        try:
            data = future.state.result(raise_on_failure=False)
        except Exception as exc:
            data = exc
        if isinstance(data, TrialResult):
            return data
        # The task itself crashed (not the trainable: run_trial never raises): nothing to bill we can see.
        now = self.sweep.clock()
        return TrialResult(SpendRecord(
            trial_id=job.trial_id, bracket=job.bracket, rung=job.rung, budget=job.budget, score=None,
            status=TrialStatus.FAILED, gpu_seconds=0.0, gpus=self.sweep.gpus_per_trial, cost=0.0, started_at=now,
            finished_at=now, wall_seconds=0.0, trainable_seconds=0.0, budget_trained=0.0, attempt=job.attempt,
            error=f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else f"train task returned {data!r}",
            cpus=self.sweep.config.runtime.cpus_per_trial,
        ))

    def cancel(self, jobs: Sequence[TrialJob], reason: str) -> None:
        self.runtime.cancel([self.sweep.spec(j) for j in jobs], reason)

    def gate(self, scores: Sequence[TrialScore], keep: int, mode: str, bracket: int, rung: int) -> RungDecision:
        return gate_trials(quote(scores), keep, mode, bracket, rung)

    def promote(self, searcher: Searcher, observations: Sequence[Observation], decision: RungDecision,
                bracket: int, rung: int) -> list[str]:
        return promote_survivors(quote(searcher), quote(observations), quote(decision), bracket, rung)

    def reached(self, point: str) -> None:
        fault_point(point)

    def publish(self) -> None:
        self.sweep.write_result()


class Heartbeat:
    """Touches ``path`` every HEARTBEAT_SECONDS from a daemon thread: the sweep's last sign of life."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="rungflow-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            self.path.write_text(f"{time.time():.3f}\n")
        except OSError as exc:  # a full disk must not stop the sweep; resume then bills from the ledger's time
            log.warning("could not write heartbeat %s: %s", self.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._beat()

    def stop(self) -> None:
        self._stop.set()


def lock_run_dir(run_dir: Path) -> Any:
    """An exclusive ``flock`` on RUN_DIR/.lock, released when the file closes or the process dies (even by SIGKILL)."""
    import fcntl

    fh = (run_dir / ".lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise ConfigError(f"run directory {run_dir} is in use by a running sweep (pid {holder}); wait for it to end, "
                          "or pass another run directory") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def last_sign_of_life(run_dir: Path) -> float:
    """When the process that last ran the sweep was last seen alive: its newest heartbeat, ledger or start stamp."""
    paths = [run_dir / "heartbeat", run_dir / "ledger.jsonl", *(run_dir / "attempts").glob("*.started")]
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return max(times) if times else time.time()


def trial_stamps(attempts_dir: Path, marker: StartMarker) -> tuple[float | None, float | None]:
    """When the attempt began and ended training (run_trial stamps both); None where it did not get there."""
    path = attempts_dir / attempt_stamp_name(marker.trial_id, marker.rung, marker.attempt)
    try:
        times = [float(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return None, None
    return (times[0] if times else None), (times[1] if len(times) > 1 else None)


def check_resumable(config_path: Path, config: SweepConfig) -> None:
    """Refuse to resume a run directory with a config that would not replay the sweep that ran there."""
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config_path} cannot be read ({type(exc).__name__}); restore it or start a new sweep "
                          "with a new run directory") from None
    try:  # compare like with like: defaults filled in on both sides
        saved = validate(saved).model_dump(mode="json")
    except (ConfigError, TypeError):
        pass
    conflicts = resume_conflicts(saved, config.model_dump(mode="json"))
    if conflicts:
        raise ConfigError(redact(
            f"{config_path.parent} holds a sweep with a different {', '.join(conflicts)}; only budget.* and runtime.* "
            "may change when resuming: use a new run directory (--out) to run a different sweep"
        ))


def write_json_atomic_config(path: Path, config: SweepConfig) -> None:
    from rungflow.results import write_json_atomic

    write_json_atomic(path, config.model_dump(mode="json"))


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.parameters.get("config", {}).get("name", "sweep"))


# Each trial's Prefect task is a thread of the flow process that waits on the runtime, which bounds how many
# trials run at once; the pool only needs to be at least as wide as the widest cluster's slots.
TRIAL_THREADS = 256


@flow(name="rungflow-sweep", flow_run_name=_flow_run_name, log_prints=True, persist_result=False,
      task_runner=ThreadPoolTaskRunner(max_workers=TRIAL_THREADS))
def sweep_flow(config: dict[str, Any], run_dir: str | None = None, warm_start: dict[str, Any] | None = None,
               refit: bool = True) -> dict[str, Any]:
    """A budget-capped Hyperband/ASHA sweep; ``config`` is the validated sweep config as a dict.

    ``warm_start``: ``{"observations": [{trial_id, config, budget, score}], "enqueue": [config, ...]}``
    from an earlier study of the same problem (see :meth:`budgets.searchers.Searcher.warm_start`).
    ``refit=False`` skips refitting the winner into ``best_model/`` (a caller that may not need it).
    """
    install_log_redaction()
    cfg = validate(config)
    try:  # before the run directory holds anything: an unusable history is one line, and nothing was spent
        prior = prior_for(cfg, Path(run_dir) if run_dir is not None else cfg.run_dir())
    except HistoryError as exc:
        raise ConfigError(redact(str(exc))) from None
    sweep = Sweep.create(cfg, run_dir)
    if prior is not None:
        save_prior(sweep.run_dir, prior)
        sweep.history = prior
        # The marginal-gain stop judged by what sweeps of this kind still gained (budgets/history_stop.py); not saved
        # with the prior, since budget.history_stop may differ on a resume.
        sweep.controller.history_stop, stop = stop_rule_in_use(
            (prior.get("summary") or {}).get("stop_rule"), enabled=cfg.budget.history_stop,
            min_gain_per_gpu_hour=cfg.budget.min_gain_per_gpu_hour, stop_rule=cfg.budget.stop_rule)
        prior["summary"] = {**(prior.get("summary") or {}), "stop": stop}
        if prior.get("transfer"):
            # The history's model proposes part of every bracket's new trials, its share following this sweep's results.
            sweep.searcher = TransferPriorSearcher(sweep.searcher, TransferModel(sweep.searcher.space, prior["transfer"]),
                                                   portfolio=prior["portfolio"])
        # The history's prior is judged on this sweep's own first results and dropped where it misleads.
        sweep.searcher = PriorGuardSearcher(sweep.searcher, prior["portfolio"],
                                            [o["trial_id"] for o in prior["warm_start"]["observations"]])
        # The caller's own warm start (the retrain's last week) first, then the history's portfolio.
        warm_start = {"observations": [*(warm_start or {}).get("observations", []), *prior["warm_start"]["observations"]],
                      "enqueue": [*(warm_start or {}).get("enqueue", []), *prior["warm_start"]["enqueue"]]}
    firsts = cfg.trainable_class()(cfg.trainable.options).first_configs(first_budget=cfg.budget_range()[0])
    if firsts:  # an Optuna objective's probe runs, already paid for as setup: their results are the first trials'
        warm_start = {**(warm_start or {}), "enqueue": [*firsts, *(warm_start or {}).get("enqueue", [])]}
    if warm_start:
        sweep.searcher.warm_start(
            [Observation(o["trial_id"], o["config"], float(o["budget"]), o["score"]) for o in warm_start.get("observations", [])],
            enqueue=warm_start.get("enqueue", []),
        )
    # A Prefect server restart is ridden out: the sweep trains on and the UI catches up (tasks/api_watch.py).
    sweep.api_watch = PrefectAPIWatch(PREFECT_API_URL.value(), cfg.ui.api_outage_seconds).start()
    sweep.artifacts = SweepArtifacts(cfg.name, watch=sweep.api_watch)
    sweep.recorded = RecordedTaskRuns.for_current_flow_run(cfg.ui.max_unrecorded_task_runs)
    if sweep.recorded is not None:
        sweep.recorded.api_up = lambda: sweep.api_watch.up
    try:
        runtime = runtime_of(cfg)
    except BaseException:
        sweep.api_watch.stop()
        sweep.close()
        raise
    try:
        result = sweep.run(runtime)
    finally:
        sweep.api_watch.stop()
    if not refit:
        return result
    # After the sweep, not in the trial loop: refit the winner of a tabular sweep into run_dir/best_model.
    from rungflow.tasks.best_model import save_best_model

    result = save_best_model(cfg, str(sweep.run_dir), quote(result))  # quoted: see PrefectExecutor
    if (result.get("best_model") or {}).get("path"):
        sweep.artifacts.publish_saved_model(result)
    return result


def runtime_of(config: SweepConfig) -> Runtime:
    rt = config.runtime
    return make_runtime(rt.kind, address=rt.address, gpus_per_trial=rt.gpus_per_trial,
                        cpus_per_trial=rt.cpus_per_trial, max_concurrent=rt.max_concurrent,
                        trial_timeout=rt.trial_timeout, max_retries=rt.max_retries,
                        memory_per_trial_gb=rt.memory_per_trial_gb, working_dir=_function_folder(config),
                        release_idle_after=rt.release_idle_after)


def _function_folder(config: SweepConfig) -> str | None:
    """A training function's folder, which travels to a remote Ray cluster as the job's working directory."""
    options = config.trainable.options
    if options.get("entrypoint") and options.get("base_dir"):
        return str(options["base_dir"])
    return None


def run_sweep(config: SweepConfig, run_dir: str | Path | None = None, warm_start: dict[str, Any] | None = None,
              refit: bool = True) -> dict[str, Any]:
    """Run a sweep as a Prefect flow on the configured runtime; returns the result dict.

    Inside a flow of the caller's, the sweep is its subflow and reports where the caller does. Otherwise it reports
    to ``PREFECT_API_URL``, or to an embedded server for the length of the sweep, logging to the run directory.
    """
    args = (config.model_dump(mode="json"), str(run_dir) if run_dir is not None else None, warm_start, refit)
    if FlowRunContext.get() is not None:
        return sweep_flow(*args)
    with prefect_api(Path(run_dir) / SERVER_LOG if run_dir is not None else config.run_dir() / SERVER_LOG):
        return sweep_flow(*args)
