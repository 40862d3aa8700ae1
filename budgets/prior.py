"""A search prior from earlier sweeps: a zero-shot portfolio, and which of their results may feed a model.

Earlier sweeps rarely evaluated the same configurations, so the classic portfolio matrix (configuration ×
task) does not exist. Each earlier sweep is instead turned into a utility per trial in [0, 1] (its rank
within that sweep, a trial that reached a higher rung always above one the gate stopped earlier), and a
candidate's utility on another sweep is that of its nearest evaluated neighbour there. The greedy portfolio
(Wistuba et al. 2015; Feurer et al. 2022) then adds, one at a time, the candidate that most raises the sum
over sweeps of the best utility the portfolio holds on each.

The portfolio holds at most ``k`` configurations; the sweep runs them beside its searcher's own first draws and
keeps or drops them on its own results (:mod:`rungflow.budgets.prior_guard`). Earlier results feed a model-based
searcher only when they come from the same task (see :class:`PastSweep`), where their scores mean what this
sweep's will.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rungflow.budgets.searchers import Observation
from rungflow.budgets.space import CategoricalParam, SearchSpace

__all__ = ["PastSweep", "Prior", "utilities", "greedy_portfolio", "build_prior", "incumbent_trials", "config_key", "last_results"]

Mode = Literal["max", "min"]
Standing = Literal["rank", "score"]
# Candidates per earlier sweep: its best few. A sweep's 200th trial never wins a portfolio slot, and the
# greedy step is candidates × sweeps × trials distances.
CANDIDATES_PER_SWEEP = 8
# Utilities are ranks raised to this power: the portfolio should come near each sweep's best, and on plain
# ranks a configuration that is middling everywhere sums as high as one that is best on most sweeps.
SHARPNESS = 4.0
# Under standing="score", a trial at or below its band's median still stands above every trial of the band below.
SCORE_FLOOR = 0.01


@dataclass(frozen=True)
class PastSweep:
    """One earlier sweep's results, already in this sweep's space; ``same_task``: its scores mean what this
    sweep's will (same trainable and options), so a model may fit on them beside this sweep's own.

    ``spent_gpu_hours``: per observation, the GPU-hours that sweep had spent when it came (empty: unknown, as
    for an Optuna study); ``first_bracket_gpu_hours``: what its first bracket cost. Both feed the plan's estimate
    (:mod:`rungflow.budgets.prior_estimate`)."""

    name: str
    observations: tuple[Observation, ...]
    mode: Mode
    same_task: bool = False
    spent_gpu_hours: tuple[float, ...] = ()
    first_bracket_gpu_hours: float | None = None


@dataclass
class Prior:
    """What a history gives a new sweep: configurations to try beside its own first draws, results a model may fit on."""

    portfolio: list[dict[str, Any]] = field(default_factory=list)
    model_observations: list[Observation] = field(default_factory=list)
    sweeps: int = 0
    trials: int = 0

    def warm_start(self) -> dict[str, Any]:
        """In the form ``sweep_flow(warm_start=...)`` takes."""
        return {"observations": [{"trial_id": o.trial_id, "config": dict(o.config), "budget": o.budget, "score": o.score}
                                 for o in self.model_observations],
                "enqueue": [dict(c) for c in self.portfolio]}


def config_key(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable identity of a configuration (floats by repr, so 0.1 and 0.1000001 differ)."""
    return tuple(sorted((str(k), repr(v)) for k, v in config.items()))


def last_results(observations: Iterable[Observation]) -> dict[str, Observation]:
    """Per trial, its result at the highest budget it reached (failed results left out)."""
    last: dict[str, Observation] = {}
    for o in observations:
        if o.failed:
            continue
        held = last.get(o.trial_id)
        if held is None or o.budget >= held.budget:
            last[o.trial_id] = o
    return last


def utilities(observations: Iterable[Observation], mode: Mode,
              standing: Standing = "rank") -> dict[str, tuple[dict[str, Any], float]]:
    """Per trial: its configuration and its utility in [0, 1] within this sweep (1 = its best trial).

    A trial's standing is placed in the band of the highest budget it reached: Hyperband's gate already judged
    those it stopped, so none of them outranks a survivor. Within the band it is its rank (``standing="rank"``) or
    its score normalised between the band's median (0) and its best (1), clipped at 0 (``"score"``, as TabRepo
    and auto-sklearn 2.0 normalise a table's scores, so a table where configurations differ by little weighs
    as much as one where they differ by a lot, and a close second counts nearly as the best).
    """
    last = last_results(observations)
    if not last:
        return {}
    levels = sorted({o.budget for o in last.values()})
    out: dict[str, tuple[dict[str, Any], float]] = {}
    sign = 1.0 if mode == "max" else -1.0
    for level_index, budget in enumerate(levels):
        here = sorted((o for o in last.values() if o.budget == budget), key=lambda o: sign * float(o.score))  # type: ignore[arg-type]
        signed = [sign * float(o.score) for o in here]  # type: ignore[arg-type]
        median, best = float(np.median(signed)), signed[-1]
        for position, o in enumerate(here):
            if standing == "score":
                normalised = (signed[position] - median) / (best - median) if best > median else 1.0
                within = min(1.0, max(normalised, 0.0)) * (1.0 - SCORE_FLOOR) + SCORE_FLOOR
            else:
                within = (position + 1) / len(here)  # worst > 0: a trial that reached this rung beat every one below it
            out[o.trial_id] = (dict(o.config), ((level_index + within) / len(levels)) ** SHARPNESS)
    return out


def _encode(space: SearchSpace, configs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[list[Any]]]:
    """Numeric parameters in [0, 1] (log ones on a log scale), categorical ones kept as values."""
    numeric = [p for p in space.params if not isinstance(p, CategoricalParam)]
    categorical = [p for p in space.params if isinstance(p, CategoricalParam)]
    x = np.full((len(configs), len(numeric)), 0.5)
    for i, config in enumerate(configs):
        for j, p in enumerate(numeric):
            value = config.get(p.name)
            if value is None:
                continue
            lo, hi, v = float(p.low), float(p.high), float(value)
            if getattr(p, "log", False):
                lo, hi, v = math.log(lo), math.log(hi), math.log(max(v, 1e-300))
            x[i, j] = 0.0 if hi == lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    cats = [[config.get(p.name) for p in categorical] for config in configs]
    return x, cats


def _nearest_index(space: SearchSpace, candidates: Sequence[Mapping[str, Any]],
                   sweep: Mapping[str, tuple[dict[str, Any], float]]) -> np.ndarray:
    """For each candidate, the position in ``sweep`` of its nearest trial (a categorical mismatch counts 1)."""
    cx, cc = _encode(space, candidates)
    sx, sc = _encode(space, [config for config, _ in sweep.values()])
    d = ((cx[:, None, :] - sx[None, :, :]) ** 2).sum(axis=2)
    if cc and cc[0]:
        mismatch = np.array([[sum(a != b for a, b in zip(c, s)) for s in sc] for c in cc], dtype=float)
        d = d + mismatch
    return np.argmin(d, axis=1)


def _nearest_utility(space: SearchSpace, candidates: Sequence[Mapping[str, Any]],
                     sweep: Mapping[str, tuple[dict[str, Any], float]]) -> np.ndarray:
    """For each candidate, the utility of the nearest trial of ``sweep``."""
    util = np.array([u for _, u in sweep.values()])
    return util[_nearest_index(space, candidates, sweep)]


def _nearest_trial(space: SearchSpace, candidates: Sequence[Mapping[str, Any]],
                   sweep: Mapping[str, tuple[dict[str, Any], float]]) -> list[str]:
    """For each candidate, the id of the nearest trial of ``sweep``."""
    ids = list(sweep)
    return [ids[i] for i in _nearest_index(space, candidates, sweep)]


def greedy_portfolio(space: SearchSpace, sweeps: Sequence[PastSweep], k: int,
                     standing: Standing = "rank") -> list[dict[str, Any]]:
    """Up to ``k`` configurations, best across the earlier sweeps first (greedy on the summed best utility;
    ``standing``: how a trial stands within its sweep, see :func:`utilities`)."""
    tables = [utilities(s.observations, s.mode, standing) for s in sweeps]
    tables = [t for t in tables if t]
    if k <= 0 or not tables:
        return []
    candidates: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for table in tables:
        for config, _ in sorted(table.values(), key=lambda cu: -cu[1])[:CANDIDATES_PER_SWEEP]:
            if space.contains(config) and config_key(config) not in seen:
                seen.add(config_key(config))
                candidates.append(config)
    if not candidates:
        return []
    # value[c, s]: candidate c's utility on sweep s (its own where it ran there, else its nearest neighbour's).
    value = np.stack([_nearest_utility(space, candidates, table) for table in tables], axis=1)
    chosen: list[int] = []
    held = np.zeros(len(tables))
    for _ in range(min(k, len(candidates))):
        gain = np.maximum(value, held[None, :]).sum(axis=1)
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))  # ties: the earliest candidate, i.e. the best of the first sweep
        if chosen and gain[best] <= held.sum() + 1e-12:
            break  # nothing left adds anything: a shorter portfolio leaves the rest to the cold search
        chosen.append(best)
        held = np.maximum(held, value[best])
    return [candidates[i] for i in chosen]


def build_prior(space: SearchSpace, sweeps: Sequence[PastSweep], *, portfolio_size: int,
                model: bool = True, every_task: bool = False) -> Prior:
    """The prior of ``sweeps`` for a sweep over ``space``: a portfolio of at most ``portfolio_size``, and the
    same-task sweeps' results as model observations (``model=False``: none; ``every_task``: every sweep's, where
    the caller knows the history is this task on other data, as a weekly retrain's last week is)."""
    prior = Prior(portfolio=greedy_portfolio(space, sweeps, portfolio_size), sweeps=len(sweeps),
                  trials=sum(len({o.trial_id for o in s.observations}) for s in sweeps))
    if model:
        prior.model_observations = [Observation(f"{s.name}/{o.trial_id}", dict(o.config), o.budget, o.score)
                                    for s in sweeps if s.same_task or every_task for o in s.observations
                                    if space.contains(o.config)]
    return prior


def incumbent_trials(events: Iterable[Mapping[str, Any]], mode: Mode) -> list[str]:
    """The trial ids that were the incumbent, in order: the best score at the highest budget reached so far."""
    sign = 1.0 if mode == "max" else -1.0
    level, best, best_trial = -math.inf, -math.inf, None
    out: list[str] = []
    for e in events:
        score = e.get("score")
        if score is None or not math.isfinite(float(score)):
            continue
        budget = float(e["budget"])
        if budget < level:
            continue
        if budget > level:
            level, best = budget, -math.inf
        if sign * float(score) > best:
            best = sign * float(score)
            if e["trial_id"] != best_trial:
                best_trial = e["trial_id"]
                out.append(best_trial)
    return out

