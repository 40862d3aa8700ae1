"""An Optuna objective, unchanged: ``objective(trial)`` with ``suggest_*``, ``report``, ``should_prune``, ``TrialPruned``.

The space is the one the objective defines. Before anything is spent, rungflow runs the objective against a
recording trial (:func:`probe_objective`) that answers each ``suggest_*`` and stops the objective at its first
``report`` or ``should_prune`` (an objective that never reports runs to its return). It runs it once more for
each other value of every categorical it suggested, so the parameters of each branch are found, and those seen
under only some values of a categorical become conditional on it (``budgets/foreign_space.py``). Then
rungflow's own searchers propose configurations, and each trial hands the objective an :class:`ObjectiveTrial`
whose ``suggest_*`` returns the proposed values. A parameter the probe never saw (its name depends on a number,
say) is drawn from the distribution the objective gives, seeded by the trial, and logged. The probe's runs are
not thrown away: their configurations are proposed first, and a trial asked for one gets the probe's result (its
return value, or its first report as a first rung of one step) without running the objective again.

A rung's budget counts ``trial.report`` calls. At the rung's budget (below the sweep's full budget, where the
objective runs to its return) ``should_prune()`` answers True, so the
objective stops itself as it would under an Optuna pruner (``raise optuna.TrialPruned()``, or the LightGBM and
XGBoost pruning callbacks); one that never asks is stopped at its next report. The rung's score is the value
reported at the budget, or the objective's return value when it returns. An objective has no checkpoint: a
promoted trial runs again from step 0 to the larger budget, and the steps it repeats are billed again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from rungflow.budgets.foreign_space import objective_space, snap
from rungflow.budgets.space import SearchSpace, SpaceError
from rungflow.tasks.trainables.base import TrainableError, TrainOutcome, TrainRequest, register
from rungflow.tasks.trainables.function import CallableTrainable, FunctionOptions

__all__ = ["OptunaObjectiveOptions", "OptunaObjectiveTrainable", "ObjectiveTrial", "probe_objective", "SUPPORTED_TRIAL_CALLS"]

log = logging.getLogger(__name__)

SUPPORTED_TRIAL_CALLS = ("suggest_float", "suggest_int", "suggest_categorical", "suggest_uniform", "suggest_loguniform",
                         "suggest_discrete_uniform", "report", "should_prune", "set_user_attr", "user_attrs", "params",
                         "distributions", "number", "study.direction")
MAX_PROBES = 64
_NO_STATE = b"RUNGFLOW-OPTUNA-OBJECTIVE: no state; a promoted trial runs again from step 0"


class OptunaObjectiveOptions(FunctionOptions):
    """Where the objective is, and the direction its callbacks compare against (the sweep's mode)."""

    mode: Literal["max", "min"] = "max"
    max_probes: int = MAX_PROBES
    #: The sweep's full budget: a trial asked for it runs to its return, whose value is the metric.
    full_budget: float | None = None


class _Stop(BaseException):
    """Ends the objective from inside a trial call; a BaseException so ``except Exception`` in user code lets it pass."""


class _Study:
    """What the pruning callbacks read of ``trial.study``: its direction."""

    def __init__(self, mode: str) -> None:
        from optuna.study import StudyDirection

        self.direction = StudyDirection.MAXIMIZE if mode == "max" else StudyDirection.MINIMIZE
        self.directions = [self.direction]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise TrainableError(f"the objective used trial.study.{name}, which rungflow does not provide (the study is the "
                             f"sweep's, across processes); use only {', '.join(SUPPORTED_TRIAL_CALLS)}")


def _float_spec(low: float, high: float, step: float | None, log_: bool) -> dict[str, Any]:
    if log_ and step is not None:
        raise ValueError("suggest_float: step and log cannot be used together (as in Optuna)")
    return {"type": "float", "low": float(low), "high": float(high), "log": bool(log_), "step": step}


class _BaseTrial(ABC):
    """The part of ``optuna.trial.Trial`` both trials share; ``_answer`` says what each suggest returns."""

    def __init__(self, mode: str, number: int = 0) -> None:
        self.study = _Study(mode)
        self.number = number
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}
        self.error: str | None = None

    def fail(self, message: str) -> None:
        self.error = message
        raise _Stop(message)

    def _suggest(self, name: str, spec: dict[str, Any]) -> Any:
        known = self.distributions.get(name)
        if known is not None and known != spec:
            from rungflow.budgets.foreign_space import _describe

            self.fail(f"the objective suggests {name!r} as {_describe(known)} and as {_describe(spec)}; give each "
                      "distribution its own name")
        if known is not None:
            return self.params[name]
        value = self._answer(name, spec)
        self.distributions[name] = spec
        self.params[name] = value
        return value

    @abstractmethod
    def _answer(self, name: str, spec: dict[str, Any]) -> Any:
        """The value this trial gives the objective for a parameter it suggests for the first time."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        return self._suggest(name, _float_spec(low, high, step, log))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._suggest(name, {"type": "int", "low": int(low), "high": int(high), "log": bool(log), "step": int(step)})

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest(name, {"type": "categorical", "choices": list(choices)})

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        return self.suggest_float(name, low, high, step=q)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self.fail(f"the objective used trial.{name}, which rungflow does not provide; use only "
                  f"{', '.join(SUPPORTED_TRIAL_CALLS)}")


class _ProbeTrial(_BaseTrial):
    """Records what the objective suggests, in order, and stops it where training starts."""

    def __init__(self, mode: str, forced: Mapping[str, Any]) -> None:
        super().__init__(mode)
        self.forced = dict(forced)
        self.path: list[tuple[str, dict[str, Any], Any]] = []
        self.reports = False
        self.first_report: float | None = None

    def _answer(self, name: str, spec: dict[str, Any]) -> Any:
        if spec["type"] == "categorical":
            value = self.forced.get(name, spec["choices"][0])
        elif spec["type"] == "int":
            value = spec["high"]  # the most loop iterations, so names made in a loop are all seen
        elif spec["log"]:
            value = math.sqrt(spec["low"] * spec["high"])
        else:
            value = snap((spec["low"] + spec["high"]) / 2, spec.get("step"), spec["low"])
        self.path.append((name, spec, value))
        return value

    def report(self, value: float, step: int | None = None) -> None:
        self.reports = True
        try:
            self.first_report = float(value)
        except (TypeError, ValueError):
            pass  # the trial's own report names a non-number; the probe only learns the space
        raise _Stop("probe done")

    def should_prune(self) -> bool:
        self.fail("trial.should_prune() was called before any trial.report(value, step); report the intermediate "
                  "value first, then ask whether to prune")
        return False


def probe_objective(fn: Callable[[Any], Any], mode: str = "max", max_probes: int = MAX_PROBES) -> tuple[dict[str, Any], bool]:
    """(the objective's space in rungflow's YAML form, whether it reports intermediate values).

    Raises TrainableError naming the problem and the fix (should_prune before report, a non-number returned,
    one name with two distributions, nothing suggested).
    """
    space, reports, _ = _probe(fn, mode, max_probes)
    return space, reports


def _probe(fn: Callable[[Any], Any], mode: str, max_probes: int) -> tuple[dict[str, Any], bool, list[dict[str, Any]]]:
    """:func:`probe_objective`, and each run it made: ``{"config", "returned", "first_report"}``, the configuration
    the probe gave the objective and what came back (the return value, or the first value reported)."""
    import optuna

    paths: list[list[tuple[str, dict[str, Any], Any]]] = []
    runs: list[dict[str, Any]] = []
    queue: list[dict[str, Any]] = [{}]
    seen: set[str] = {repr({})}
    reports = False
    while queue and len(paths) < max_probes:
        forced = queue.pop(0)
        trial = _ProbeTrial(mode, forced)
        try:
            returned = fn(trial)
        except _Stop:
            returned = None
        except optuna.TrialPruned:
            returned = None
        except Exception as exc:
            if not trial.path:
                raise TrainableError(f"the objective raised {type(exc).__name__}: {exc} before suggesting anything; "
                                     "fix the objective") from None
            returned = None
        else:
            returned = _check_number(returned)
        if trial.error:
            raise TrainableError(trial.error)
        reports = reports or trial.reports
        paths.append(trial.path)
        runs.append({"config": {name: value for name, _, value in trial.path}, "returned": returned,
                     "first_report": trial.first_report})
        for i, (name, spec, value) in enumerate(trial.path):
            if spec["type"] != "categorical":
                continue
            prefix = {n: v for n, s, v in trial.path[:i] if s["type"] == "categorical"}
            seen.add(repr({**prefix, name: value}))  # this run took that branch: another would only repeat it
            for choice in spec["choices"]:
                branch = {**prefix, name: choice}
                if choice != value and repr(branch) not in seen:
                    seen.add(repr(branch))
                    queue.append(branch)
    if queue:
        log.warning("the objective has more than %d branches of categorical choices; parameters of the rest are drawn "
                    "per trial when first suggested", max_probes)
    try:
        return objective_space(paths), reports, runs
    except SpaceError as exc:
        raise TrainableError(str(exc)) from None


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same parameters and values (numbers compared as numbers: a config comes back from JSON)."""
    if set(a) != set(b):
        return False
    for name, value in a.items():
        other = b[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(other, (int, float)):
            if not math.isclose(float(value), float(other), rel_tol=1e-12, abs_tol=0.0):
                return False
        elif value != other:
            return False
    return True


def _check_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TrainableError(f"the objective returned {type(value).__name__} {value!r}; return one number (the metric), "
                             "e.g. return accuracy")
    return float(value)


class ObjectiveTrial(_BaseTrial):
    """The trial a running objective is handed: proposed values in, reports counted against the rung's budget."""

    def __init__(self, config: Mapping[str, Any], budget: float, mode: str, seed: int, trial_id: str) -> None:
        super().__init__(mode, number=int(hashlib.blake2b(trial_id.encode(), digest_size=4).hexdigest(), 16))
        self.config = dict(config)
        self.budget = budget
        self.seed = seed
        self.trial_id = trial_id
        self.steps: list[int] = []
        self.values: dict[int, float] = {}
        self.at_budget: float | None = None
        self.drawn: list[str] = []

    def _answer(self, name: str, spec: dict[str, Any]) -> Any:
        if name in self.config:
            value = self.config[name]
            return snap(value, spec.get("step"), spec.get("low")) if spec["type"] != "categorical" else value
        # Not in the proposal: a branch the probe did not reach. Drawn reproducibly for this trial.
        rng = random.Random(f"{self.seed}/{self.trial_id}/{name}")
        self.drawn.append(name)
        if spec["type"] == "categorical":
            return rng.choice(spec["choices"])
        low, high = spec["low"], spec["high"]
        value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec["log"] else rng.uniform(low, high)
        value = snap(value, spec.get("step"), low) if spec.get("step") else value
        return int(round(min(max(value, low), high))) if spec["type"] == "int" else float(value)

    def report(self, value: float, step: int | None = None) -> None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"trial.report got {type(value).__name__} {value!r}; report a number")
        step = len(self.steps) if step is None else int(step)
        if step in self.values:
            return  # Optuna ignores a step reported twice
        if self.at_budget is not None:
            raise _Stop("rung reached")  # the objective went on without asking should_prune()
        self.steps.append(step)
        self.values[step] = number
        if len(self.steps) >= self.budget - 1e-9:
            self.at_budget = number

    def should_prune(self) -> bool:
        if not self.steps:
            self.fail("trial.should_prune() was called before any trial.report(value, step); report the intermediate "
                      "value first, then ask whether to prune")
        return self.at_budget is not None


@register
class OptunaObjectiveTrainable(CallableTrainable):
    """An Optuna objective; its score is the objective's return value, or the value reported at the rung's budget."""

    kind: ClassVar[str] = "optuna_objective"
    metric: ClassVar[str] = "value"
    budget_unit: ClassVar[str] = "reported steps"
    default_budget: ClassVar[tuple[float, float]] = (1, 1)
    Options: ClassVar[type[FunctionOptions]] = OptunaObjectiveOptions
    options: OptunaObjectiveOptions
    _probed: ClassVar[dict[str, tuple[dict[str, Any], bool]]] = {}
    # The probe's runs not yet given to a trial, per objective: a trial asked for one of their configurations, at a
    # budget the run covered, gets its result back instead of running the objective again.
    _probe_runs: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    # All of the probe's runs, kept: the configurations proposed first are the same in every sweep of this objective
    # in this process, so a resume proposes what the first session did even after the results were handed out.
    _probe_outcomes: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    # What each probe cost, until a sweep's ledger bills it (once: a later sweep in this process reuses the space).
    _unbilled: ClassVar[dict[str, dict[str, Any]]] = {}
    callable_noun: ClassVar[str] = "objective"
    rerun_with: ClassVar[str] = "rungflow.sweep(objective, ..., out=RUN_DIR)"
    takes_budget_and_checkpoint: ClassVar[bool] = False  # objective(trial)

    def _probe_key(self) -> str:
        # Not the whole options: full_budget is set after the config is validated, and must not probe again.
        return self.options.model_dump_json(include={"entrypoint", "base_dir", "callable", "mode", "max_probes"})

    def probe(self) -> tuple[dict[str, Any], bool]:
        """(the objective's space, whether it reports), learned once per process and objective."""
        key = self._probe_key()
        if key not in self._probed:
            import optuna  # noqa: F401  (imported first: its import is not the objective's spend)

            started_at, t0 = time.time(), time.perf_counter()
            space, reports, runs = _probe(self._function(), self.options.mode, self.options.max_probes)
            self._probed[key] = (space, reports)
            self._probe_runs[key] = list(runs)
            self._probe_outcomes[key] = list(runs)
            self._unbilled[key] = {"key": f"space-probe-{os.getpid()}-{started_at:.6f}", "kind": "space_probe",
                                   "runs": len(runs), "wall_seconds": time.perf_counter() - t0, "started_at": started_at}
        return self._probed[key]

    @classmethod
    def forget_probes(cls) -> None:
        """Forget every space learned in this process, so the next sweep probes (and is billed) as a new process is."""
        cls._probed.clear()
        cls._unbilled.clear()
        cls._probe_runs.clear()
        cls._probe_outcomes.clear()

    def first_configs(self, first_budget: float) -> list[dict[str, Any]]:
        """The configurations whose probe run is a first rung of ``first_budget`` (it returned, or it reported once
        and the rung is one step), so that proposed first, the runs the ledger bills as setup are the first trials'
        results rather than thrown away. Where no run covers the first rung, the searcher's own draws come first."""
        self.probe()
        full = self.options.full_budget is not None and first_budget >= self.options.full_budget - 1e-9
        one_step = first_budget <= 1 + 1e-9 and not full
        return [dict(run["config"]) for run in self._probe_outcomes.get(self._probe_key(), [])
                if run["returned"] is not None or (one_step and run["first_report"] is not None)]

    def _probe_result(self, request: TrainRequest, full: bool) -> TrainOutcome | None:
        """A probe run's result for ``request``, handed out once: a run that returned covers any budget (the
        objective runs whole), one stopped at its first report covers a first rung of one reported step."""
        if request.checkpoint is not None:
            return None
        runs = self._probe_runs.get(self._probe_key(), [])
        for i, run in enumerate(runs):
            if not _same_config(run["config"], request.config):
                continue
            if run["returned"] is not None:
                score, steps = run["returned"], 0.0
            elif run["first_report"] is not None and not full and request.budget <= 1 + 1e-9:
                score, steps = run["first_report"], 1.0
            else:
                return None
            del runs[i]
            budget = float(request.budget)
            return TrainOutcome(score=score, budget_reached=budget if steps == 0 else steps,
                                budget_trained=budget if steps == 0 else steps, checkpoint=_NO_STATE,
                                metrics={"reported_steps": steps, "from_space_probe": 1.0})
        return None

    def spent_before_sweep(self) -> list[dict[str, Any]]:
        """The probe runs that learned the space, if no sweep has billed them yet."""
        self.probe()
        spent = self._unbilled.pop(self._probe_key(), None)
        return [spent] if spent is not None else []

    def default_space(self) -> SearchSpace | None:
        try:
            return SearchSpace.from_dict(self.probe()[0])
        except TrainableError as exc:
            raise ValueError(str(exc)) from None  # the config layer turns it into its one line

    def train(self, request: TrainRequest) -> TrainOutcome:
        import optuna

        fn = self._function()
        full = self.options.full_budget is not None and request.budget >= self.options.full_budget - 1e-9
        reused = self._probe_result(request, full)
        if reused is not None:
            return reused
        trial = ObjectiveTrial(request.config, math.inf if full else request.budget, self.options.mode, request.seed,
                               request.trial_id)
        returned: Any = None
        finished = False
        try:
            returned = fn(trial)
            finished = True
        except (_Stop, optuna.TrialPruned):
            pass
        if trial.error:
            raise TrainableError(trial.error)
        if trial.drawn:
            log.warning("trial %s: the objective suggested %s, not in the space learned before the sweep; drawn for this "
                        "trial", request.trial_id, ", ".join(trial.drawn))
        if finished:
            score = _check_number(returned)
        elif trial.at_budget is not None:
            score = trial.at_budget
        elif trial.steps:
            score = trial.values[trial.steps[-1]]  # pruned by its own logic: its last value, as Optuna keeps it
        else:
            raise TrainableError("the objective raised TrialPruned before any trial.report; report a value first")
        reached = float(len(trial.steps)) if trial.steps and not finished else float(request.budget)
        metrics = {"reported_steps": float(len(trial.steps))}
        return TrainOutcome(score=score, budget_reached=max(reached, float(request.budget)) if finished else reached,
                            budget_trained=float(len(trial.steps)) if trial.steps else float(request.budget),
                            checkpoint=_NO_STATE, metrics=metrics)
