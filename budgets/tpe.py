"""TPE searchers built on Optuna's ``TPESampler`` (ask/tell on an in-memory study).

The study is a view derived from the searcher's observations, so the observations stay the single
source of truth (a resumed sweep replays them) and Optuna's pruner/sampler coupling never leaks in:
scope is passed explicitly. The view is kept alive and given only the results it has not seen; it is
rebuilt when the observations change otherwise (a prior dropped or added, a trial's record changed),
so a sweep's search does not redo its whole history at every suggestion.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from rungflow.budgets.cost import CostModel
from rungflow.budgets.searchers import Observation, Searcher
from rungflow.budgets.space import FloatParam, IntParam, SearchSpace, is_active

__all__ = ["TPESearcher", "BOHBSearcher"]


def _optuna():
    import optuna

    if optuna.logging.get_verbosity() != optuna.logging.WARNING:
        # Setting it clears every logger's cache, and this runs at each suggestion.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _suggest(trial: Any, param: Any) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(param.name, param.low, param.high, log=param.log)
    if isinstance(param, IntParam):
        return trial.suggest_int(param.name, param.low, param.high, log=param.log)
    return trial.suggest_categorical(param.name, list(param.choices))


def _budget_step(budget: float) -> int:
    # Optuna's intermediate steps are ints; thousandths keep fractional budgets ordered.
    return int(round(budget * 1000))


def _sampler_classes():
    """Optuna's TPESampler with its fitted model kept while the study is unchanged, and its cost-aware variant.

    TPE splits the study's trials into good and bad and fits a Parzen estimator to each at every ask: time in
    proportion to the trials so far, repeated for each proposal of a batch although the trials did not change
    (the proposals are told FAIL at once, which TPE does not read). The searcher names the state of the study it
    asks (``fit_key``: the study and how many results it was given); while the key is the same, the estimators
    fitted for it are used again. Everything that draws from the RNG runs as before, so the proposals are the
    ones Optuna's own sampler makes. Defined lazily so budgets imports no optuna.
    """
    optuna = _optuna()
    from optuna.samplers._tpe.sampler import _split_trials, default_gamma

    class KeptFitTPESampler(optuna.samplers.TPESampler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fit_key: Any = None
            self._fits_key: Any = None
            self._fits: dict[tuple, tuple[Any, Any]] = {}

        def _kept_fit(self, search_space):  # type: ignore[no-untyped-def]
            if self.fit_key is None or self.fit_key != self._fits_key:
                self._fits, self._fits_key = {}, self.fit_key
                return None
            return self._fits.get(tuple(search_space.items()))

        def _sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
            # A kept fit means this study state already passed the start-up count: skip counting its trials again.
            if search_space and self._kept_fit(search_space) is not None:
                return self._sample(study, trial, search_space)
            return super()._sample_relative(study, trial, search_space)

        def _sample(self, study, trial, search_space):  # type: ignore[no-untyped-def]
            # Optuna 5.0's TPESampler._sample (single objective, no constant liar), the fit kept per fit_key.
            fitted = self._kept_fit(search_space)
            if fitted is None:
                states = [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
                trials = study._get_trials(deepcopy=False, states=states, use_cache=True)
                if self._gamma is None:
                    self._gamma = default_gamma
                below, above = _split_trials(study, trials, self._gamma(len(trials)))
                fitted = (self._build_parzen_estimator(study, search_space, below, handle_below=True),
                          self._build_parzen_estimator(study, search_space, above, handle_below=False))
                if self.fit_key is not None:
                    self._fits[tuple(search_space.items())] = fitted
            mpe_below, mpe_above = fitted
            samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
            acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
            ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
            for param_name, dist in search_space.items():
                ret[param_name] = dist.to_external_repr(ret[param_name])
            return ret

    class CostAwareTPESampler(KeptFitTPESampler):
        """Acquisition: expected improvement per predicted GPU-second.

        TPE draws ``n_ei_candidates`` candidates from l(x) (the density of the good trials) and keeps
        the one with the largest log l(x) − log g(x). Bergstra et al. (2011) show that TPE's expected
        improvement is EI(x) ∝ (γ + (1 − γ) g(x)/l(x))⁻¹ for the good fraction γ; here the candidate
        kept is the one with the largest log EI(x) − log ĉ(x), ĉ the cost model's GPU-seconds per
        budget unit. Only the ranking of the candidates changes: how TPE draws them, splits trials and
        fits its Parzen estimators stays Optuna's.
        """

        def __init__(self, *args: Any, log_cost: Callable[[list[dict[str, Any]]], np.ndarray], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.log_cost = log_cost
            self.good_fraction = 0.1
            self.distributions: dict[str, Any] = {}

        def _compute_acquisition_func(self, samples, mpe_below, mpe_above):  # type: ignore[no-untyped-def]
            log_ratio = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
            gamma = min(max(self.good_fraction, 1e-6), 1.0 - 1e-6)
            # log EI = -log(γ + (1 - γ)·exp(-(log l - log g))), computed stably.
            log_ei = -np.logaddexp(np.log(gamma), np.log1p(-gamma) - log_ratio)
            size = len(log_ratio)
            configs = [
                {name: self.distributions[name].to_external_repr(values[i]) for name, values in samples.items()
                 if name in self.distributions}
                for i in range(size)
            ]
            return log_ei - self.log_cost(configs)

    return KeptFitTPESampler, CostAwareTPESampler


class _OptunaBacked(Searcher):
    """Shared plumbing: a persistent sampler (its RNG carries across rebuilds) and a kept study.

    ``cost_aware``: rank TPE's candidates by expected improvement per predicted GPU-second
    (:func:`_sampler_classes`), the cost learned from the observations' ``cost``
    (:class:`budgets.cost.CostModel`).
    """

    def __init__(
        self, space: SearchSpace, *, n_startup_trials: int | None = None, cost_aware: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(space, **kwargs)
        self._distributions = space.to_optuna()
        self.n_startup_trials = n_startup_trials if n_startup_trials is not None else max(10, len(space) + 1)
        self.cost_aware = cost_aware
        self.cost_model = CostModel(space)
        self._cost_points = -1
        self._sampler = self._make_sampler()
        self._additions = 0
        self._study = None
        self._dirty = True

    def _make_sampler(self):
        options = dict(seed=self.seed, n_startup_trials=self.n_startup_trials, multivariate=True)
        if self.space.conditional:
            # group=True: TPE models each family's parameters on the trials where they were active.
            options["group"] = True
        plain, cost_aware = _sampler_classes()
        if not self.cost_aware:
            return plain(**options)
        sampler = cost_aware(log_cost=self._log_cost, **options)
        sampler.distributions = self._distributions
        return sampler

    def _distributions_of(self, config: dict[str, Any]) -> dict[str, Any]:
        # A conditional space's trial holds only its active parameters; Optuna wants exactly those.
        return {name: self._distributions[name] for name in config}

    def _log_cost(self, configs: list[dict[str, Any]]) -> np.ndarray:
        costs = [(o.config, o.cost) for o in self.observations if o.cost is not None]
        if len(costs) != self._cost_points:
            self.cost_model.fit(costs)
            self._cost_points = len(costs)
        return self.cost_model.predict_log(configs)

    def _prepare_ask(self, study) -> None:
        if self.cost_aware:
            # γ as Optuna's default_gamma sets it: the best min(⌈0.1·n⌉, 25) of n trials are "good".
            states = _optuna().trial.TrialState
            n = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))
            self._sampler.good_fraction = min(math.ceil(0.1 * n), 25) / n if n else 0.1

    def _new_study(self):
        optuna = _optuna()
        direction = "maximize" if self.mode == "max" else "minimize"
        return optuna.create_study(direction=direction, sampler=self._sampler)

    def _given(self, study, trials: list[Any]) -> None:
        """Adds results to a study; with TPE's :meth:`TPESearcher._replace`, the only ways this searcher's studies
        change besides its own FAIL-told asks, so ``_additions`` tells the sampler when its fit is stale."""
        if trials:
            study.add_trials(trials)
            self._additions += 1

    def _ask(self, study, count: int) -> list[dict[str, Any]]:
        out = []
        self._sampler.fit_key = (study, self._additions)
        self._prepare_ask(study)
        for _ in range(count):
            if self.space.conditional:
                # Define-by-run: parents first (the space's order), then only the parameters they activate.
                trial = study.ask()
                config: dict[str, Any] = {}
                for param in self.space.params:
                    if is_active(param, config):
                        config[param.name] = _suggest(trial, param)
            else:
                trial = study.ask(self._distributions)
            out.append(dict(trial.params))
            # Tell FAIL at once: the pending proposal must not linger as RUNNING in the model.
            study.tell(trial, state=_optuna().trial.TrialState.FAIL)
        return out


class TPESearcher(_OptunaBacked):
    """Optuna's TPE over whole trials, with multi-fidelity results shown to it as Optuna would.

    A trial that reached the full budget is COMPLETE with its final score; one stopped earlier is
    PRUNED with its intermediate scores per budget, which TPE ranks below complete trials by the
    budget reached and then the score: the semantics of TPE + HyperbandPruner in Optuna.
    """

    name = "tpe"

    def __init__(self, space: SearchSpace, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        # Results the study has not seen yet; each trial id's results so far, in the order the ids first appeared;
        # and the study's number of each trial it holds (a trial outside the space is not held).
        self._unseen: list[Observation] = []
        self._histories: dict[str, list[Observation]] = {}
        self._numbers: dict[str, int] = {}

    def observe(self, observation: Observation) -> None:
        super().observe(observation)
        self._unseen.append(observation)

    def _frozen(self, history: list[Observation]):
        optuna = _optuna()
        config = history[-1].config
        top = history[-1]
        if top.failed:
            state, value, intermediate = optuna.trial.TrialState.FAIL, None, {}
        else:
            intermediate = {_budget_step(o.budget): float(o.score) for o in history if not o.failed}
            if top.budget >= self.max_budget - 1e-9:
                state, value = optuna.trial.TrialState.COMPLETE, float(top.score)
            else:
                state, value = optuna.trial.TrialState.PRUNED, None
        return optuna.trial.create_trial(
            state=state,
            value=value,
            params=dict(config),
            distributions=self._distributions_of(config),
            intermediate_values=intermediate,
        )

    def _held(self, trial_id: str) -> bool:
        return self.space.contains(self._histories[trial_id][-1].config)

    def _append(self, study, trial_ids: list[str]) -> None:
        held = [t for t in trial_ids if self._held(t)]
        first = len(study.get_trials(deepcopy=False))
        self._given(study, [self._frozen(self._histories[t]) for t in held])
        self._numbers.update({t: first + i for i, t in enumerate(held)})

    def _replace(self, study, trial_ids: list[str]) -> None:
        """A held trial's record changed (a promotion): the new record takes the old one's place and number.

        Optuna's finished trials cannot be changed through its API, and appending the new record instead would
        move the trial to the end of the order TPE breaks ties in. So the in-memory storage's own replacing step
        (what its ``set_trial_*`` methods do to a running trial) is used; the pinned Optuna version and
        tests/test_tpe_incremental.py hold it to the proposals a rebuilt study makes.
        """
        if not trial_ids:
            return
        storage = study._storage
        for trial_id in trial_ids:
            record = self._frozen(self._histories[trial_id])
            record.number = self._numbers[trial_id]
            record._trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, record.number)
            storage._set_trial(record._trial_id, record)
            storage._update_cache(record._trial_id, study._study_id)
        self._additions += 1

    def _rebuild(self):
        self._study = self._new_study()
        self._histories, self._numbers = {}, {}
        for obs in [*self.priors, *self.observations]:
            self._histories.setdefault(obs.trial_id, []).append(obs)
        self._append(self._study, list(self._histories))
        self._unseen = []
        self._dirty = False

    def _catch_up(self):
        """Brings the kept study up to the observations: new trials appended in the order they first appear, changed
        ones replaced in place, so it holds what a study rebuilt from every observation would, in the same order."""
        if self._dirty or self._study is None:
            self._rebuild()
            return
        new, changed = [], {}
        for obs in self._unseen:
            if obs.trial_id not in self._histories:
                new.append(obs.trial_id)
                self._histories[obs.trial_id] = []
            elif obs.trial_id not in new:
                changed.setdefault(obs.trial_id, self._held(obs.trial_id))
            self._histories[obs.trial_id].append(obs)
        self._unseen = []
        if any(self._held(t) != was_held for t, was_held in changed.items()):
            self._rebuild()  # a trial's configuration moved into or out of the space: not a change in place
            return
        self._replace(self._study, [t for t in changed if t in self._numbers])
        self._append(self._study, new)

    def warm_start(self, observations=(), enqueue=()) -> None:
        super().warm_start(observations, enqueue)
        self._dirty = True

    def forget_prior(self, observation_ids, enqueued) -> None:
        super().forget_prior(observation_ids, enqueued)
        self._dirty = True

    def suggest(self, count: int) -> list[dict[str, Any]]:
        out = self._pop_enqueued(count)
        if len(out) == count:
            return out
        self._catch_up()
        return out + self._ask(self._study, count - len(out))


class BOHBSearcher(_OptunaBacked):
    """BOHB-style TPE: one model per budget, proposals from the largest budget with enough results.

    Following Falkner et al. (2018), the model is fitted on the observations at the largest budget
    b with at least ``min_points_in_model`` results (default d + 2 for d parameters), so full-budget
    evidence overrides misleading early rungs as soon as there is enough of it; a fraction
    ``random_fraction`` (ρ in the paper) of proposals stays uniformly random to keep exploring.
    """

    name = "bohb"

    def __init__(
        self,
        space: SearchSpace,
        *,
        min_points_in_model: int | None = None,
        random_fraction: float = 1.0 / 3.0,
        **kwargs: Any,
    ) -> None:
        self.min_points_in_model = min_points_in_model if min_points_in_model is not None else len(space) + 2
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"search.random_fraction: {random_fraction} must be within [0, 1]")
        self.random_fraction = random_fraction
        kwargs.setdefault("n_startup_trials", self.min_points_in_model)
        super().__init__(space, **kwargs)
        self._rng = np.random.default_rng(self.seed + 7919)
        self._by_budget: dict[float, list[Observation]] = {}
        # Per budget, the results a model can be fitted on, counted as they arrive: model_budget is asked at every
        # suggestion, and counting them afresh made each suggestion cost time in proportion to the sweep so far.
        self._usable: dict[float, int] = {}
        self._studies: dict[float, Any] = {}
        self._added: dict[float, int] = {}

    def _file(self, observation: Observation) -> None:
        budget = round(observation.budget, 9)
        self._by_budget.setdefault(budget, []).append(observation)
        usable = not observation.failed and self.space.contains(observation.config)
        self._usable[budget] = self._usable.get(budget, 0) + usable

    def observe(self, observation: Observation) -> None:
        super().observe(observation)
        self._file(observation)

    def warm_start(self, observations=(), enqueue=()) -> None:
        super().warm_start(observations, enqueue)
        # Priors join the per-budget model data before any of this study's results, as if observed first.
        for prior in self.priors:
            self._file(prior)

    def forget_prior(self, observation_ids, enqueued) -> None:
        super().forget_prior(observation_ids, enqueued)
        # The per-budget studies only ever grow: rebuild them from what is left, priors first as in warm_start.
        self._by_budget, self._usable, self._studies, self._added = {}, {}, {}, {}
        for o in [*self.priors, *self.observations]:
            self._file(o)

    def model_budget(self) -> float | None:
        """The budget whose results the next model-based proposal is fitted on (None: not enough yet)."""
        usable = [b for b, count in self._usable.items() if count >= self.min_points_in_model]
        return max(usable) if usable else None

    def _study_for(self, budget: float):
        optuna = _optuna()
        if budget not in self._studies:
            self._studies[budget] = self._new_study()
            self._added[budget] = 0
        study = self._studies[budget]
        # Results at one budget are append-only, so the per-budget study only ever grows.
        pending = self._by_budget[budget][self._added[budget] :]
        self._given(
            study,
            [
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL if o.failed else optuna.trial.TrialState.COMPLETE,
                    value=None if o.failed else float(o.score),
                    params=dict(o.config),
                    distributions=self._distributions_of(o.config),
                )
                for o in pending
                if self.space.contains(o.config)
            ]
        )
        self._added[budget] = len(self._by_budget[budget])
        return study

    def suggest(self, count: int) -> list[dict[str, Any]]:
        budget = self.model_budget()
        out: list[dict[str, Any]] = self._pop_enqueued(count)
        for _ in range(count - len(out)):
            if budget is None or self._rng.random() < self.random_fraction:
                out.append(self.space.sample(self._rng))
            else:
                out.extend(self._ask(self._study_for(budget), 1))
        return out

