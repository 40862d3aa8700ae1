"""Ray Tune and Optuna run on the LCBench surrogate, billed exactly as rungflow bills its trials.

Each peer trains a configuration epoch by epoch (1..52) on the YAHPO surrogate through
rungflow's own :class:`LCBenchTrainable`, so the search space, the accuracy and the cost are the
ones rungflow's sweeps see. An epoch costs the increase of the surrogate's cumulative ``time``
(never negative, as in ``LCBenchTrainable.train``); a trial that is pruned or stopped pays for
the epochs it ran. Every method stops once the summed cost reaches the same GPU-hour cap.

Every billed epoch becomes one event in the shape of a rungflow ``result.json`` event
(``cumulative_gpu_hours``, ``budget``, ``score``, ``status``), so the same
``bench.common.incumbent_curve`` scores rungflow and its peers.

Nothing here imports Ray or Optuna at module level; each runner imports what it uses.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import LCBENCH_MAX_EPOCH

LCBENCH_EPOCHS = tuple(range(1, LCBENCH_MAX_EPOCH + 1))

__all__ = ["PEER_METHODS", "PeerRun", "Surrogate", "Ledger", "run_peer", "evaluate_at_full_budget"]

GRACE_PERIOD, REDUCTION_FACTOR = 1, 3
CONCURRENCY = 2  # Ray Tune's max_concurrent_trials, the same 2 slots as rungflow's thread runtime
METRIC = "val_accuracy"


class Surrogate:
    """One LCBench instance's surrogate, stepped epoch by epoch with rungflow's billing rule."""

    def __init__(self, instance: str) -> None:
        from rungflow.tasks.trainables.yahpo_lcbench import LCBenchTrainable

        self.instance = str(instance)
        self._trainable = LCBenchTrainable({"instance": self.instance})

    def space(self) -> Any:
        return self._trainable.default_space()

    def step(self, config: Mapping[str, Any], epoch: int, time_before: float) -> tuple[float, float, float]:
        """(accuracy, cumulative seconds, seconds billed for this epoch) after training to ``epoch``.

        The surrogate's cumulative time may wiggle down between epochs; like ``LCBenchTrainable.train``
        it is clamped so no epoch is billed negative.
        """
        result = self._trainable._query(config, epoch)
        elapsed = max(float(result["time"]), time_before)
        return float(result["val_accuracy"]), elapsed, elapsed - time_before


def _space_of(source: Any) -> Any:
    """The search space of the surrogate (a method) or of another family's source (an attribute)."""
    return source.space() if callable(source.space) else source.space


def evaluate_at_full_budget(instance: str, config: Mapping[str, Any] | None) -> float | None:
    """The surrogate's accuracy of ``config`` trained to the full 52 epochs (None: no config)."""
    if config is None:
        return None
    acc, _, _ = Surrogate(instance).step(config, LCBENCH_MAX_EPOCH, 0.0)
    return acc


class Ledger:
    """Billed surrogate seconds summed over every trial, and one event per billed epoch.

    Thread-safe: Optuna may call the objective from several threads, and Ray Tune's Stopper is
    called from the driver's event loop while the runner reads the total.
    """

    def __init__(self, cap_gpu_hours: float) -> None:
        self.cap_seconds = cap_gpu_hours * 3600.0
        self.seconds = 0.0
        self.events: list[dict[str, Any]] = []
        self.configs: dict[str, dict[str, Any]] = {}  # trial id -> config, so a bill can be checked against the surrogate
        # Set by a peer's own stop rule (Tune's plateau stopper, Optuna's Terminator) when it ends the run.
        self.stopped_by: str | None = None
        self.stopped_at_gpu_hours: float | None = None
        self._lock = threading.Lock()

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def exhausted(self) -> bool:
        return self.seconds >= self.cap_seconds

    def mark_stopped(self, rule: str) -> None:
        with self._lock:
            if self.stopped_by is None:
                self.stopped_by, self.stopped_at_gpu_hours = rule, self.seconds / 3600.0

    @property
    def stop_reason(self) -> str:
        return self.stopped_by or ("max_gpu_hours" if self.exhausted else "finished")

    def bill(self, trial_id: str, epoch: int, score: float, seconds: float, config: Mapping[str, Any]) -> None:
        with self._lock:
            self.configs.setdefault(str(trial_id), dict(config))
            self.seconds += seconds
            self.events.append({
                "trial_id": str(trial_id), "budget": float(epoch), "score": float(score), "status": "completed",
                "gpu_hours": seconds / 3600.0, "cumulative_gpu_hours": self.seconds / 3600.0,
            })


@dataclass
class PeerRun:
    """One peer run: its billed events, total spend, the configuration it would deploy, and how it ended."""

    method: str
    events: list[dict[str, Any]]
    gpu_hours: float
    best_config: dict[str, Any] | None
    best_reported: float | None  # the incumbent's score as the method itself saw it (maybe at a low epoch)
    best_epoch: int | None
    stop_reason: str
    trials: int
    wall_seconds: float
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# --- Ray Tune -----------------------------------------------------------------------------------------
# The Stopper is handed to Tune, which may copy it; the ledger it bills stays in this driver process.
_LEDGERS: dict[str, Ledger] = {}


def _ledger(token: str) -> Ledger:
    # Looked up through the module, not a global of the Stopper: Tune cloudpickles its config, and a
    # locally defined class would drag the ledgers (and their locks) along by value.
    from bench import peers

    return peers._LEDGERS[token]


def _tune_stopper(token: str, plateau: Mapping[str, Any] | None = None) -> Any:
    from ray.tune import Stopper
    from ray.tune.stopper import ExperimentPlateauStopper

    class SurrogateSpendStopper(Stopper):
        """Bills each reported epoch's surrogate seconds; stops the whole experiment at the GPU-hour cap.

        Tune's own ``time_budget_s`` counts wall-clock, not what the trials would have cost on a GPU.
        With ``plateau`` (``std``, ``top``, ``patience``), Tune's own ``ExperimentPlateauStopper`` sees
        every reported result, as it would as the run's ``stop=``, and ends the experiment when it says so.
        """

        def __init__(self, token: str) -> None:
            self.token = token
            self.plateau = None if plateau is None else ExperimentPlateauStopper(METRIC, mode="max", **plateau)

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            ledger = _ledger(self.token)
            if "epoch_seconds" not in result:  # Tune's own bookkeeping results carry no metrics
                return False
            ledger.bill(trial_id, int(result["epoch"]), float(result[METRIC]), float(result["epoch_seconds"]),
                        result.get("config", {}))
            if self.plateau is not None and self.plateau(trial_id, result):
                ledger.mark_stopped("plateau")
                return True
            return False  # ASHA decides per trial; the cap is stop_all's

        def stop_all(self) -> bool:
            ledger = _ledger(self.token)
            return ledger.exhausted or ledger.stopped_by is not None

    return SurrogateSpendStopper(token)


def _tune_trainable(instance: str, source: Callable[[], Any] | None = None,
                    steps: Sequence[int] = LCBENCH_EPOCHS) -> Callable[[dict[str, Any]], None]:
    def train_lcbench(config: dict[str, Any]) -> None:
        from ray import tune

        # The ONNX session (or the table) is built once per worker process (reuse_actors).
        surrogate = source() if source is not None else Surrogate(instance)
        spent = 0.0
        for epoch in steps:
            acc, spent, cost = surrogate.step(config, epoch, spent)
            tune.report({METRIC: acc, "epoch": epoch, "epoch_seconds": cost, "surrogate_seconds": spent})

    return train_lcbench


def _tune_space(space: Any, search: str) -> tuple[dict[str, Any] | None, Any]:
    """(param_space for Tuner, search_alg) for ``search`` in {"random", "optuna"} over rungflow's space."""
    from ray import tune

    if search == "optuna":
        return None, space.to_optuna()
    from rungflow.budgets.space import FloatParam, IntParam

    params: dict[str, Any] = {}
    for p in space.params:
        if isinstance(p, FloatParam):
            params[p.name] = (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
        elif isinstance(p, IntParam):
            # Tune's integer upper bounds are exclusive; rungflow's are inclusive.
            params[p.name] = (tune.lograndint if p.log else tune.randint)(p.low, p.high + 1)
        else:
            params[p.name] = tune.choice(list(p.choices))
    return params, None


def run_ray_tune(instance: str, seed: int, cap_gpu_hours: float, *, search: str, max_trials: int = 100_000,
                 storage: Path | None = None, plateau: Mapping[str, Any] | None = None,
                 source: Callable[[], Any] | None = None, steps: Sequence[int] = LCBENCH_EPOCHS) -> PeerRun:
    """Ray Tune ``Tuner.fit()``: ``search`` ("optuna": OptunaSearch with TPE; "random") + ASHAScheduler,
    stopped at the cap or, with ``plateau``, by Tune's ``ExperimentPlateauStopper``.

    ``source`` (a picklable factory, called in each worker) trains another family than the
    surrogate, reporting at budgets ``steps`` only: one whose rungs refit report where ASHA's rungs are."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    _start_ray()
    surrogate = source() if source is not None else Surrogate(instance)
    max_t = int(steps[-1])
    param_space, optuna_space = _tune_space(_space_of(surrogate), search)
    if search == "optuna":
        search_alg: Any = OptunaSearch(space=optuna_space, metric=METRIC, mode="max", sampler=optuna.samplers.TPESampler(seed=seed))
    else:
        search_alg = BasicVariantGenerator(random_state=seed)
    token = uuid.uuid4().hex
    ledger = _LEDGERS[token] = Ledger(cap_gpu_hours)
    tmp = Path(tempfile.mkdtemp(prefix="rungflow-bench-tune-", dir=storage))
    tuner = tune.Tuner(
        _tune_trainable(instance, source, steps),
        param_space=param_space or {},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", search_alg=search_alg,
            # The reported budget, not training_iteration: a family reporting at its rungs only has
            # iteration 2 at budget 3. For LCBench the two are the same.
            scheduler=ASHAScheduler(time_attr="epoch", max_t=max_t,
                                    grace_period=GRACE_PERIOD, reduction_factor=REDUCTION_FACTOR),
            num_samples=max_trials, max_concurrent_trials=CONCURRENCY, reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=f"{search}-asha-{instance}-s{seed}", storage_path=str(tmp), verbose=0,
                                  stop=_tune_stopper(token, plateau)),
    )
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        _LEDGERS.pop(token, None)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - t0
    if grid.num_errors:
        raise RuntimeError(f"ray-tune {search}+asha on {instance}: {grid.num_errors} trials failed, e.g. {grid.errors[0]!r}")
    best_config, best_reported, best_epoch = None, None, None
    try:
        # Tune's own pick, as a user would make it: the best last result of any trial (ASHA stops
        # most trials at a low rung, so this may be a low-epoch score; it is re-judged at 52 epochs).
        best = grid.get_best_result(metric=METRIC, mode="max")
        best_config = {k: best.config[k] for k in optuna_space or param_space or {}}
        best_reported, best_epoch = float(best.metrics[METRIC]), int(best.metrics["epoch"])
    except RuntimeError:
        pass  # no trial reported anything before the cap
    return PeerRun(
        method=f"tune-{search}+asha", events=ledger.events, gpu_hours=ledger.gpu_hours, best_config=best_config,
        best_reported=best_reported, best_epoch=best_epoch, stop_reason=ledger.stop_reason,
        trials=len({e["trial_id"] for e in ledger.events}), wall_seconds=wall,
        configs=ledger.configs, extra={"stopped_at_gpu_hours": ledger.stopped_at_gpu_hours},
    )


def _start_ray() -> None:
    """A private local Ray (never another cluster on this shared machine), started once per process."""
    import os

    import ray

    # ResultGrid warns once per trial the stop left unstarted ("Could not fetch metrics ..."): hundreds of lines.
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    ray.init(address="local", num_cpus=max(CONCURRENCY, os.cpu_count() or 1), include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)


# --- Optuna -------------------------------------------------------------------------------------------
def run_optuna(instance: str, seed: int, cap_gpu_hours: float, *, pruner: str, max_trials: int = 100_000,
               terminator: Mapping[str, Any] | None = None, source: Any = None,
               steps: Sequence[int] = LCBENCH_EPOCHS) -> PeerRun:
    """Optuna alone: ``study.optimize`` with TPE and ``pruner`` ("hyperband" or "sha"), one trial at a time,
    stopped at the cap or, with ``terminator`` (``error``, ``min_n_trials``), by Optuna's own ``Terminator``
    (GP regret bound against a static error), asked after every trial as ``TerminatorCallback`` asks."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    surrogate = source if source is not None else Surrogate(instance)
    max_budget = int(steps[-1])
    space = _space_of(surrogate).to_optuna()
    if pruner == "hyperband":
        p: Any = optuna.pruners.HyperbandPruner(min_resource=GRACE_PERIOD, max_resource=max_budget,
                                                reduction_factor=REDUCTION_FACTOR)
    else:
        p = optuna.pruners.SuccessiveHalvingPruner(min_resource=GRACE_PERIOD, reduction_factor=REDUCTION_FACTOR)
    # Named: HyperbandPruner puts a trial in a bracket by a hash of the study name and trial number, and
    # an unnamed study gets a random name, so the same seed would give a different run each time.
    study = optuna.create_study(study_name=f"lcbench-{instance}-s{seed}-{pruner}", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=p)
    ledger = Ledger(cap_gpu_hours)

    def objective(trial: Any) -> float:
        config = {name: _suggest(trial, name, dist) for name, dist in space.items()}
        spent = 0.0
        acc = float("nan")
        for epoch in steps:
            acc, spent, cost = surrogate.step(config, epoch, spent)
            ledger.bill(str(trial.number), epoch, acc, cost, config)
            trial.report(acc, epoch)
            if ledger.exhausted:
                # Optuna's stop() takes effect only after the running trial; without this the last
                # trial could train on to 52 epochs past the cap. It pays for the epochs it ran.
                trial.study.stop()
                raise optuna.TrialPruned(f"GPU-hour cap reached at epoch {epoch}")
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    def stop_at_cap(study: Any, trial: Any) -> None:
        if ledger.exhausted:
            study.stop()

    callbacks: list[Callable[[Any, Any], None]] = [stop_at_cap]
    if terminator is not None:
        callbacks.append(_terminator_callback(ledger, terminator))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=max_trials, callbacks=callbacks, catch=())
    wall = time.perf_counter() - t0
    best_config, best_reported, best_epoch = None, None, None
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial  # Optuna's own pick: the best completed (52-epoch) trial
        best_config, best_reported, best_epoch = dict(best.params), float(best.value), max_budget
    else:
        # No trial survived to 52 epochs within the cap: the best last intermediate value is all there is.
        seen = [t for t in study.trials if t.intermediate_values]
        if seen:
            t = max(seen, key=lambda t: t.intermediate_values[max(t.intermediate_values)])
            best_config, best_epoch = dict(t.params), max(t.intermediate_values)
            best_reported = float(t.intermediate_values[best_epoch])
    return PeerRun(
        method=f"optuna-tpe+{pruner}", events=ledger.events, gpu_hours=ledger.gpu_hours, best_config=best_config,
        best_reported=best_reported, best_epoch=best_epoch, stop_reason=ledger.stop_reason,
        trials=len(study.trials), wall_seconds=wall, configs=ledger.configs,
        extra={"stopped_at_gpu_hours": ledger.stopped_at_gpu_hours},
    )


def _terminator_callback(ledger: Ledger, settings: Mapping[str, Any]) -> Callable[[Any, Any], None]:
    """Optuna's ``TerminatorCallback`` (``should_terminate``, then ``study.stop()``), asked only after a COMPLETE trial.

    Its verdict depends on the COMPLETE trials alone (the regret bound is a GP fit on them, seeded; the
    error is static), so after a pruned trial it would repeat the last one: skipping those calls gives
    the same stop and spares one GP fit per pruned trial (most of Hyperband's trials).
    """
    import warnings

    import optuna
    from optuna.terminator import RegretBoundEvaluator, StaticErrorEvaluator, Terminator

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")  # deprecated in 4.9, still Optuna's own rule
    terminator = Terminator(
        improvement_evaluator=RegretBoundEvaluator(seed=0), error_evaluator=StaticErrorEvaluator(float(settings["error"])),
        min_n_trials=int(settings.get("min_n_trials", 20)),
    )

    def ask(study: Any, trial: Any) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE or ledger.stopped_by is not None:
            return
        if terminator.should_terminate(study):
            ledger.mark_stopped("terminator")
            study.stop()

    return ask


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)


# method name -> runner(instance, seed, cap_gpu_hours)
PEER_METHODS: dict[str, Callable[[str, int, float], PeerRun]] = {
    "tune-optuna+asha": lambda i, s, cap: run_ray_tune(i, s, cap, search="optuna"),
    "tune-random+asha": lambda i, s, cap: run_ray_tune(i, s, cap, search="random"),
    "optuna-tpe+hyperband": lambda i, s, cap: run_optuna(i, s, cap, pruner="hyperband"),
    "optuna-tpe+sha": lambda i, s, cap: run_optuna(i, s, cap, pruner="sha"),
}


def run_peer(method: str, instance: str, seed: int, cap_gpu_hours: float) -> PeerRun:
    return PEER_METHODS[method](str(instance), int(seed), float(cap_gpu_hours))
