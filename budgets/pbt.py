"""Population-based training (Jaderberg et al., 2017): exploit the strong, explore around them.

A population of ``population`` trials (proposed by the sweep's searcher) trains in generations of
``perturbation_interval`` budget units, each member resuming from its own checkpoint. After each
generation the members are ranked (the gate). Once ``burn_in`` units are trained, every member in the
bottom ``quantile_fraction`` (and every failed one) stops and is replaced by a new trial that starts
from the checkpoint of a member drawn at random from the top quantile (exploit), with that member's
configuration perturbed (explore): each mutable parameter is resampled from the space with
``resample_probability``; otherwise a number is multiplied by 0.8 or 1.2 (clipped to the space) and a
categorical moves to a neighbouring choice. As Syne Tune's ``PopulationBasedTraining`` does, an
exploited member is a new trial, so every (trial, rung) stays an immutable record.

Every draw comes from one generator seeded with the sweep's seed, in rank order at the barrier, so
the same seed gives the same population history whatever order the members finish in, and a resumed
sweep that replays its ledger reproduces it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rungflow.budgets.rungs import BracketPlan, RungPlan
from rungflow.budgets.scheduling import ForecastScope, Job, Mode, SchedulerKind, Stage, rank_key
from rungflow.budgets.space import CategoricalParam, FloatParam, IntParam, SearchSpace

if TYPE_CHECKING:
    from rungflow.budgets.ledger import SpendRecord

__all__ = ["PBTScheduler", "Exploit", "Generation", "explore", "interval_budgets", "PERTURBATION_FACTORS"]

# Ray Tune's and Syne Tune's default perturbation of a number.
PERTURBATION_FACTORS = (0.8, 1.2)


@dataclass(frozen=True)
class Exploit:
    """One replacement at a gate: ``stopped`` gives way to a clone of ``parent`` with ``config``."""

    stopped: str
    parent: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class Generation:
    """One gate: the members ranked best first with their scores, and the replacements it made."""

    rung: int
    budget: float
    ranked: tuple[tuple[str, float | None], ...]
    exploits: tuple[Exploit, ...]


def interval_budgets(perturbation_interval: float, max_budget: float) -> list[float]:
    """The budget each generation trains to: interval, 2 × interval, …, the last one ``max_budget``."""
    count = max(1, int(math.ceil(max_budget / perturbation_interval - 1e-9)))
    return [min(float(max_budget), perturbation_interval * (k + 1)) for k in range(count)]


def explore(config: Mapping[str, Any], space: SearchSpace, mutations: Sequence[str], resample_probability: float,
            rng: np.random.Generator) -> dict[str, Any]:
    """``config`` with each parameter named in ``mutations`` perturbed (see the module docstring).

    Each parameter draws the same number of values from ``rng`` whichever way it goes, apart from a
    resample, so the stream stays aligned across parameters.
    """
    out = dict(config)
    for name in mutations:
        if name not in out:
            continue  # inactive in this branch of a conditional space
        param = space[name]
        if rng.random() < resample_probability:
            out[name] = param.sample(rng)
            continue
        up = bool(rng.integers(2))
        if isinstance(param, CategoricalParam):
            index = param.choices.index(out[name]) if out[name] in param.choices else 0
            out[name] = param.choices[min(len(param.choices) - 1, max(0, index + (1 if up else -1)))]
        elif isinstance(param, IntParam):
            value = int(out[name])
            moved = int(round(value * PERTURBATION_FACTORS[up]))
            if moved == value:  # 0.8 × 3 rounds back to 3: a small int still takes a step
                moved = value + (1 if up else -1)
            out[name] = int(min(param.high, max(param.low, moved)))
        elif isinstance(param, FloatParam):
            out[name] = float(min(param.high, max(param.low, float(out[name]) * PERTURBATION_FACTORS[up])))
    return out


class PBTScheduler:
    """Population-based training as an asynchronous scheduler with a barrier per generation.

    :meth:`next_job` hands out the current generation's jobs (the initial population's new trials,
    then continuations and clones) and None while the generation trains; the last result of a
    generation runs the gate, which queues the next one. ``num_trials`` is the population plus the
    replacements the gates make.
    """

    kind = SchedulerKind.PBT
    synchronous = False
    brackets_per_iteration: int | None = None

    def __init__(
        self, *, population: int, perturbation_interval: float, max_budget: float, space: SearchSpace | None = None,
        mutations: Sequence[str] = (), quantile_fraction: float = 0.25, resample_probability: float = 0.25,
        burn_in: float = 0.0, seed: int = 0, mode: Mode = "max", min_budget: float | None = None, eta: float = 1.0,
    ) -> None:
        if population < 2:
            raise ValueError(f"The value of population is {population}, but must be at least 2")
        if not 0 < perturbation_interval <= max_budget:
            raise ValueError(f"The value of perturbation_interval is {perturbation_interval}, but must be within "
                             f"(0, max_budget={max_budget}]")
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"The value of quantile_fraction is {quantile_fraction}, but must be within (0, 0.5]")
        if not 0 <= resample_probability <= 1:
            raise ValueError(f"The value of resample_probability is {resample_probability}, but must be within [0, 1]")
        if burn_in < 0:
            raise ValueError(f"The value of burn_in is {burn_in}, but must be zero or more")
        unknown = [m for m in mutations if space is None or m not in space.names]
        if unknown:
            raise ValueError(f"The mutations {unknown} are not parameters of the search space")
        self.population, self.perturbation_interval = population, perturbation_interval
        self.quantile_fraction, self.resample_probability, self.burn_in = quantile_fraction, resample_probability, burn_in
        self.space, self.mutations, self.mode = space, tuple(mutations), mode
        self.max_budget = float(max_budget)
        self.min_budget = float(min_budget if min_budget is not None else perturbation_interval)
        self.eta = eta  # not used: PBT has no halving rate; kept because every scheduler reports one
        self.budgets = interval_budgets(perturbation_interval, max_budget)
        self._rng = np.random.default_rng([seed, 0x9B7])  # its own stream: never in step with the searcher's
        self.num_trials = population
        self.started = 0
        self.history: list[Generation] = []
        self._configs: dict[str, dict[str, Any]] = {}
        self._queue: deque[Job] = deque(Job(None, 0, self.budgets[0]) for _ in range(population))
        self._rung = 0
        self._handed = 0
        self._results: dict[str, float | None] = {}

    @property
    def brackets(self) -> tuple[BracketPlan, ...]:
        """One rung per generation, each trained by the whole population."""
        rungs = tuple(RungPlan(k, b, self.population) for k, b in enumerate(self.budgets))
        return (BracketPlan(index=0, s=len(rungs) - 1, rungs=rungs),)

    def quantile_size(self, members: int) -> int:
        """Members in the top (and the bottom) quantile: ⌈n · quantile_fraction⌉, at most ⌊n/2⌋."""
        return min(int(math.ceil(members * self.quantile_fraction - 1e-9)), members // 2)

    def next_job(self) -> Job | None:
        """Called when a worker is free; None while the current generation trains (or when all is done)."""
        if not self._queue:
            return None
        job = self._queue.popleft()
        self._handed += 1
        if job.trial_id is None:
            self.started += 1
        return job

    def on_trial(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """Called once per new trial: its configuration is what a clone of it would perturb."""
        self._configs[trial_id] = dict(config)

    def on_result(self, trial_id: str, rung: int, score: float | None) -> None:
        """Called once per finished (trial, generation); the generation's last result runs the gate."""
        if rung != self._rung:
            return
        self._results[trial_id] = score if score is not None and math.isfinite(score) else None
        if len(self._results) >= self._handed and not self._queue:
            self._gate()

    def _gate(self) -> None:
        """Rank the generation; queue the next one: survivors continue, the bottom quantile is replaced."""
        rung = self._rung
        ranked = sorted(self._results.items(), key=lambda ts: (rank_key(ts[1], self.mode), ts[0]))
        exploits: list[Exploit] = []
        last = rung + 1 >= len(self.budgets)
        if not last:
            finite = [t for t, s in ranked if s is not None]
            failed = [t for t, s in ranked if s is None]
            quantile = self.quantile_size(len(ranked))
            top = finite[:quantile]
            bottom: list[str] = []
            if top and self.budgets[rung] >= self.burn_in:
                # The weakest finite members and every failed one give way (failures have nothing to resume).
                others = finite[len(top):]  # a top member is never replaced, however small the population
                weakest = others[max(0, len(others) - max(0, quantile - len(failed))):]
                bottom = weakest + failed
            budget = self.budgets[rung + 1]
            for trial_id in finite:
                if trial_id not in bottom:
                    self._queue.append(Job(trial_id, rung + 1, budget))
            for stopped in bottom:
                parent = top[int(self._rng.integers(len(top)))]
                config = self._explore(self._configs.get(parent, {}))
                exploits.append(Exploit(stopped, parent, config))
                self._queue.append(Job(None, rung + 1, budget, config=config, clone_from=parent))
            self.num_trials += len(bottom)
        self.history.append(Generation(rung, self.budgets[rung], tuple(ranked), tuple(exploits)))
        self._rung, self._handed, self._results = rung + 1, 0, {}

    def _explore(self, config: Mapping[str, Any]) -> dict[str, Any]:
        if self.space is None or not self.mutations:
            return dict(config)
        return explore(config, self.space, self.mutations, self.resample_probability, self._rng)

    def mark_started(self, count: int) -> None:
        """Count trials started before a resume (the population is fixed, so only the tally moves)."""
        self.started = max(self.started, count)

    def stop_starting(self) -> None:
        """The searcher is exhausted: the new trial just handed out never started; the population is who started."""
        self._handed -= 1
        self.started -= 1
        self._queue = deque(j for j in self._queue if not (j.trial_id is None and j.config is None))
        self.population = self.num_trials = max(self.started, 1)
        if len(self._results) >= self._handed and self._handed > 0:
            self._gate()

    def planned_clones(self) -> list[int]:
        """Per generation, the new trials it starts with as a plan counts them: the initial population, then one
        clone per bottom-quantile member of every gate from ``burn_in`` on. A failed member is replaced too, so a
        sweep whose trials fail makes more (a plan cannot know how many)."""
        replaced = self.quantile_size(self.population)
        return [self.population] + [replaced if b >= self.burn_in else 0 for b in self.budgets[:-1]]

    def budget_units(self) -> float:
        """The population, each member trained to the full budget (a clone resumes where its parent was)."""
        return self.population * self.max_budget

    def forecast_scope(self, stage: Stage, records: Sequence[SpendRecord], mode: Mode) -> ForecastScope | None:
        """The rest of the schedule: the latest generation's members, from their scores, through every interval left."""
        done = self.history[-1] if self.history else None
        if done is None or done.rung + 1 >= len(self.budgets):
            return None
        scores = tuple(float(s) for _, s in done.ranked if s is not None)
        if not scores:
            return None
        rest = tuple((b, len(scores)) for b in self.budgets[done.rung + 1:])
        return ForecastScope(rest, candidates=scores, start_budget=done.budget)
