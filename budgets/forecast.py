"""The forecast stop rule's estimator: what the rest of a bracket can be expected to add to the incumbent.

Estimator (a bootstrap simulation of the remaining rungs from the sweep's own rung results):

* **Transfer model.** For each step between two rung budgets a → b, a least-squares line
  s(b) = α + β·s(a) + ε fitted on the trials already trained at both, with its empirical residuals.
  Those trials were promoted out of rung a by the top-1/η gate on s(a), the same gate the
  candidates pass; because the selection is on the regressor s(a) only, the fitted line is still
  an unbiased estimate of E[s(b) | s(a)] for them. β < 1 is regression to the mean: a score that
  was high partly by luck (noise) keeps only part of its lead, which independent score changes
  would miss and so overstate the upside of noisy objectives. With fewer than 5 pairs (or no
  spread in s(a)) β = 1: a plain shift by the mean change; with fewer than 3 there is no evidence
  (one or two pairs show no spread, and a forecast without spread is certain of a single outcome:
  on LCBench 7593 one 17 → 52 pair made it forecast +0 and stop 11.6 points short). Residuals are
  scaled by √(n / (n − p)), p the parameters fitted, so a small sample does not understate the
  spread. β is clipped to [0, 1]: a slope above 1
  (leads that grow) is what a handful of pairs fakes most easily. The line is extrapolated to
  candidates outside the pairs' range: for saturating curves that overshoots (an optimistic
  forecast keeps spending a little longer, the safe side), whereas moving such candidates like the
  best paired trial instead was tried and stopped an LCBench 3945 sweep 1.35 points short.
* **Entry model.** A fresh trial entering at budget b0 scores like one of the trials that entered
  the sweep at b0 so far (the empirical distribution of first scores at b0, unselected).
* **Simulation.** Each of ``samples`` replays starts from the candidates' known scores (promoted
  trials) or from entry draws (a new bracket), moves each trial along the fitted line plus a
  resampled residual per step, applies the rung gate (keep the best ``num_trials`` of the next rung) and ends at the last rung's budget.
* **Gain.** In each replay, the improvement of the incumbent: the mean of the best ``top_k`` scores
  at the highest fidelity reached, before and after adding the replay's final scores (the same
  quantity the window rule tracks); the expected gain is its mean over replays, never negative.

The cost of that gain is the remainder's budget units (:attr:`Forecast.budget_units`), which the
flow converts to GPU-hours with its measured cost per unit. When there is no evidence for some step
(no trial has made it yet, no entry at b0, no incumbent at the final fidelity) the forecast is
None and the controller keeps spending: a sweep still climbing the rungs is progressing by
definition. A remainder ending below the highest fidelity reached cannot move the incumbent: gain 0.

Pure numpy; the same inputs and seed give the same forecast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rungflow.budgets.ledger import SpendRecord
from rungflow.budgets.scheduling import Scheduler, Stage

__all__ = [
    "RungScore",
    "Forecast",
    "Transfer",
    "forecast_gain",
    "stage_forecast",
    "score_changes",
    "fit_transfer",
    "entry_scores",
]

Mode = Literal["max", "min"]
_TOL = 1e-9


@dataclass(frozen=True)
class RungScore:
    """One trial's result at one budget; ``score`` None when it failed."""

    trial_id: str
    budget: float
    score: float | None


@dataclass(frozen=True)
class Forecast:
    """Expected improvement of the incumbent (metric units, ≥ 0) bought by ``budget_units`` more."""

    expected_gain: float
    budget_units: float
    incumbent: float
    top_budget: float
    probability_of_gain: float
    samples: int

    @property
    def detail(self) -> str:
        return (
            f"forecast: +{self.expected_gain:.4g} expected on the incumbent {self.incumbent:.4g} "
            f"(P(gain) {self.probability_of_gain:.2f}) for {self.budget_units:.4g} budget units"
        )


def _curves(history: Iterable[RungScore]) -> dict[str, dict[float, float]]:
    """trial → budget → the last valid score there (a retried attempt replaces a failed one)."""
    curves: dict[str, dict[float, float]] = {}
    for r in history:
        if r.score is None or not math.isfinite(r.score):
            continue
        curves.setdefault(r.trial_id, {})[round(float(r.budget), 9)] = float(r.score)
    return curves


def score_changes(history: Iterable[RungScore], budget_from: float, budget_to: float) -> list[float]:
    """Δ = score at ``budget_to`` − score at ``budget_from`` of every trial observed at both."""
    a, b = round(float(budget_from), 9), round(float(budget_to), 9)
    return [c[b] - c[a] for c in _curves(history).values() if a in c and b in c]


@dataclass(frozen=True)
class Transfer:
    """s(b) = alpha + beta · s(a) + one of ``residuals``."""

    alpha: float
    beta: float
    residuals: tuple[float, ...]


MIN_PAIRS = 3
MIN_PAIRS_FOR_SLOPE = 5


def fit_transfer(history: Iterable[RungScore], budget_from: float, budget_to: float) -> Transfer | None:
    """The a → b line of the transfer model (see the module docstring); None with fewer than 3 pairs."""
    a, b = round(float(budget_from), 9), round(float(budget_to), 9)
    pairs = np.array([(c[a], c[b]) for c in _curves(history).values() if a in c and b in c], dtype=float)
    if len(pairs) < MIN_PAIRS:
        return None
    x, y = pairs[:, 0], pairs[:, 1]
    beta, fitted = 1.0, 1
    if len(pairs) >= MIN_PAIRS_FOR_SLOPE and float(np.var(x)) > 1e-12:
        beta, fitted = float(np.clip(np.cov(x, y, bias=True)[0, 1] / np.var(x), 0.0, 1.0)), 2
    alpha = float(np.mean(y - beta * x))
    inflate = math.sqrt(len(pairs) / (len(pairs) - fitted))
    return Transfer(alpha, beta, tuple(float(r) * inflate for r in y - (alpha + beta * x)))


def entry_scores(history: Iterable[RungScore], budget: float) -> list[float]:
    """First scores of the trials that entered the sweep at ``budget`` (their lowest budget)."""
    b = round(float(budget), 9)
    return [c[b] for c in _curves(history).values() if c and min(c) == b]


def _top_k_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Row-wise mean of the ``k`` largest values (larger is better)."""
    part = -np.sort(-values, axis=-1)[..., :k]
    return part.mean(axis=-1)


def forecast_gain(
    history: Sequence[RungScore],
    *,
    rungs: Sequence[tuple[float, int]],
    candidates: Sequence[float] | None = None,
    start_budget: float | None = None,
    mode: Mode = "max",
    top_k: int = 1,
    samples: int = 2000,
    seed: int = 0,
) -> Forecast | None:
    """Forecast the gain of running ``rungs`` (the rest of a bracket) on ``candidates``; see the module docstring.

    ``rungs``: (budget, num_trials) per remaining rung, ascending; the first is the stage about to
    run. ``candidates``: the scores at ``start_budget`` of the trials promoted into it, or None for
    fresh trials (``rungs[0][1]`` of them, entering at ``rungs[0][0]``). None means no evidence.
    """
    if not rungs:
        raise ValueError("rungs: the remainder of the bracket needs at least one rung")
    if candidates is not None and start_budget is None:
        raise ValueError("start_budget: promoted candidates need the budget their scores were measured at")
    sign = 1.0 if mode == "max" else -1.0
    curves = _curves(history)
    if not curves:
        return None
    top_budget = max(max(c) for c in curves.values())
    final_budget = float(rungs[-1][0])
    top_scores = np.array(sorted((sign * c[round(top_budget, 9)] for c in curves.values() if round(top_budget, 9) in c),
                                 reverse=True))
    k = max(1, min(top_k, len(top_scores)))
    incumbent = float(top_scores[:k].mean())
    previous = float(start_budget) if candidates is not None else 0.0
    units = 0.0
    for budget, count in rungs:
        units += count * (float(budget) - previous)
        previous = float(budget)
    if final_budget < top_budget - _TOL:
        return Forecast(0.0, units, sign * incumbent, top_budget, 0.0, 0)
    if final_budget > top_budget + _TOL:
        return None  # a fidelity nobody has reached yet: no incumbent to improve on

    rng = np.random.default_rng(seed)
    if candidates is None:
        entries = entry_scores(history, rungs[0][0])
        if len(entries) < MIN_PAIRS:
            return None
        first_count = int(rungs[0][1])
        scores = sign * rng.choice(np.asarray(entries), size=(samples, first_count))
        steps = [(float(a[0]), float(b[0]), int(b[1])) for a, b in zip(rungs[:-1], rungs[1:])]
    else:
        if not candidates:
            return Forecast(0.0, units, sign * incumbent, top_budget, 0.0, 0)
        scores = np.tile(sign * np.asarray(candidates, dtype=float), (samples, 1))
        chain = [(float(start_budget), len(candidates)), *[(float(b), int(n)) for b, n in rungs]]  # type: ignore[arg-type]
        steps = [(a[0], b[0], b[1]) for a, b in zip(chain[:-1], chain[1:])]
        # The stage about to run trains every candidate: no gate before the first step.
        steps[0] = (steps[0][0], steps[0][1], len(candidates))
    for budget_from, budget_to, keep in steps:
        transfer = fit_transfer(history, budget_from, budget_to)
        if transfer is None:
            return None
        keep = max(1, min(keep, scores.shape[1]))
        if keep < scores.shape[1]:
            scores = -np.sort(-scores, axis=1)[:, :keep]  # the rung gate: the best `keep` go on
        # The line is fitted in metric units; ``scores`` are sign-flipped for "min" metrics.
        raw = sign * scores
        raw = transfer.alpha + transfer.beta * raw + rng.choice(np.asarray(transfer.residuals), size=raw.shape)
        scores = sign * raw
    # Only the incumbent's own k scores can stay in the top k beside the new ones.
    combined = np.concatenate([np.tile(top_scores[:k], (samples, 1)), scores], axis=1)
    gains = np.maximum(0.0, _top_k_mean(combined, k) - incumbent)
    return Forecast(
        expected_gain=float(gains.mean()),
        budget_units=units,
        incumbent=sign * incumbent,
        top_budget=top_budget,
        probability_of_gain=float((gains > 1e-12).mean()),
        samples=samples,
    )


def stage_forecast(
    records: Sequence[SpendRecord],
    scheduler: Scheduler,
    stage: Stage | tuple[int, int] | None,
    *,
    mode: Mode = "max",
    top_k: int = 1,
    seed: int = 0,
) -> Forecast | None:
    """The forecast before ``stage``, from the ledger's records so far.

    What the stage would buy is the scheduler's answer (:meth:`Scheduler.forecast_scope`): for a
    synchronous rung, the rest of its bracket; for ASHA, one bracket's worth of fresh trials.
    ``stage`` may also be given as (bracket index, rung index).
    """
    if isinstance(stage, tuple):
        stage = Stage(bracket=stage[0], rung=stage[1])
    scope = scheduler.forecast_scope(stage if stage is not None else Stage(), records, mode)
    if scope is None:
        return None
    history = [RungScore(r.trial_id, r.budget, r.score if r.ok else None) for r in records]
    return forecast_gain(history, rungs=list(scope.rungs), mode=mode, top_k=top_k, seed=seed,
                         **({} if scope.candidates is None else {"candidates": list(scope.candidates),
                                                                "start_budget": scope.start_budget}))
