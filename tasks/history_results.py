"""What every history source shares: the one-line error, and a source's results fitted to this sweep's space.

:mod:`rungflow.tasks.history` reads run directories and studies, :mod:`rungflow.tasks.history_retrain` a model
registry's retrain runs; both parse their source into (trial, budget, score) results and hand them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import CategoricalParam, IntParam, SearchSpace
from rungflow.tasks.optuna_study import BUDGETS_ATTR, TRIAL_ATTR

__all__ = ["HistoryError", "SpaceFitter", "check_params", "observations_in_space", "param_kind", "study_param_kinds",
           "study_results"]


class HistoryError(ValueError):
    """A history source that cannot be used; ``str()`` is one line naming it and the fix."""


def param_kind(param: Any) -> str:
    return "categorical" if isinstance(param, CategoricalParam) else "int" if isinstance(param, IntParam) else "float"


def check_params(space: SearchSpace, kinds: Mapping[str, str], where: str, fix_missing: str) -> None:
    for param in space.params:
        held = kinds.get(param.name)
        if held is None:
            raise HistoryError(f"{where}: has no parameter {param.name!r} of this sweep's space; {fix_missing}")
        if held != param_kind(param):
            raise HistoryError(f"{where}: parameter {param.name!r} is {held} there and {param_kind(param)} here; rename one "
                               "of them, or leave that source out of history")


class SpaceFitter:
    """Configurations of a source restricted to this sweep's parameters; out-of-range ones are counted."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.outside = 0

    def fit(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        names = set(self.space.names)
        mine = {k: v for k, v in config.items() if k in names}
        if self.space.contains(mine):
            return mine
        self.outside += 1
        return None


def observations_in_space(fitter: SpaceFitter, trials: Mapping[str, Mapping[str, Any]],
                  results: list[tuple[str, float, float | None]]) -> tuple[tuple[Observation, ...], list[int]]:
    """The results in this sweep's space, and the position in ``results`` of each one kept."""
    fitted: dict[str, dict[str, Any] | None] = {}
    out, kept = [], []
    for position, (trial_id, budget, score) in enumerate(results):
        if trial_id not in fitted:
            config = trials.get(trial_id)
            fitted[trial_id] = None if config is None else fitter.fit(config)
        config = fitted[trial_id]
        if config is not None:
            out.append(Observation(trial_id, config, budget, score))
            kept.append(position)
    return tuple(out), kept


def study_param_kinds(study: Any) -> dict[str, str]:
    import optuna.distributions as d

    kinds: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            kinds[name] = ("categorical" if isinstance(dist, d.CategoricalDistribution)
                           else "int" if isinstance(dist, d.IntDistribution) else "float")
    return kinds


def study_results(study: Any, max_budget: float, prefix: str = "") -> tuple[dict[str, dict[str, Any]],
                                                                             list[tuple[str, float, float | None]]]:
    """A study's trials (id -> parameters) and its results (id, budget, score; None: failed); ``prefix`` keeps
    the trial ids of two studies of one run apart."""
    import optuna

    trials: dict[str, dict[str, Any]] = {}
    results: list[tuple[str, float, float | None]] = []
    for trial in study.get_trials(deepcopy=False):
        trial_id = prefix + str(trial.user_attrs.get(TRIAL_ATTR) or f"n{trial.number}")
        trials[trial_id] = dict(trial.params)
        steps = sorted(trial.intermediate_values)
        budgets = trial.user_attrs.get(BUDGETS_ATTR) or steps
        if len(budgets) != len(steps):
            budgets = steps
        for step, budget in zip(steps, budgets):
            results.append((trial_id, float(budget), float(trial.intermediate_values[step])))
        if trial.state == optuna.trial.TrialState.COMPLETE and not steps and trial.value is not None:
            results.append((trial_id, max_budget, float(trial.value)))  # a plain Optuna trial: its value is the full budget's
        elif trial.state == optuna.trial.TrialState.FAIL:
            results.append((trial_id, float(trial.user_attrs.get("budget", 0.0)), None))
    return trials, results
