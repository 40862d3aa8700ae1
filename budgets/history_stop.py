"""The stop rule that learns from earlier sweeps what a sweep of this kind still gains for more spend.

Earlier sweeps (``history:``) differ in task, scale and length, so their incumbent trajectories are compared in
units that carry over:

* progress is counted in *top-fidelity results* n, not GPU-hours: a Hyperband sweep produces them at a steady
  rate whatever one epoch costs, and a study's trials come in order even where it recorded no spend;
* gain is counted in *record spacings* s: the mean gap between the sweep's best ``SPACINGS`` + 1 top-fidelity
  scores so far. Near the best a task can do, its top results bunch and s is small; a task whose top results
  still sit points apart has more to gain. (The spread of all results does not carry over: a few diverged
  configurations make it large on a task that is done.)

From each earlier sweep the rule learns one number, κ: how far its incumbent rose, in spacings, per unit of
log(n), from its ``MIN_RESULTS``-th top-fidelity result to its last (:func:`gain_per_log_result`). For a sample
from a distribution with an exponential upper tail the best grows by s · log((n + k) / n) over k more results,
so κ is near 1 for a search that samples as it did at first, and larger for one that keeps finding better
regions. The model is the median κ over the earlier sweeps times ``MARGIN``: a sweep with n top-fidelity results
and spacing s is expected to gain κ · s · log((n + k) / n) over its next k results.

The controller judges it before every stage (:meth:`HistoryStopRule.estimate`): the next slice is what the last
one was (an iteration of brackets, or the last third of the spend without iterations), k results for its
GPU-hours, and the sweep stops once the expected gain per GPU-hour of that slice stays below
``min_gain_per_gpu_hour`` for ``patience`` verdicts. With fewer than ``MIN_SWEEPS`` earlier sweeps holding more
than ``MIN_RESULTS`` top-fidelity results each, :func:`learn` returns None and the controller keeps its own
rule (``stop_rule``).

Plain Python and numpy: the rule reads the ledger alone, so a resumed sweep reaches the same verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["MARGIN", "MIN_RESULTS", "MIN_SWEEPS", "SPACINGS", "HistoryStopRule", "StopEstimate", "gain_per_log_result",
           "learn", "record_spacing", "stop_rule_in_use", "top_fidelity_scores"]

Mode = Literal["max", "min"]
MIN_RESULTS = 3  # fewer top results say nothing about the task's scale
SPACINGS = 3  # the spacing of the best four (of three while there are only three)
MIN_SWEEPS = 2  # one earlier sweep is an anecdote, not a kind
# The median κ of earlier sweeps understates the mean (a few sweeps find a much better region late), and a sweep
# stopped before such a rise loses it all. 1.5 was chosen on the dev sweeps of bench/pages/stop-price.md
# (1.0 and 2.0 captured less there); nothing held out informed it.
MARGIN = 1.5


def top_fidelity_scores(results: Iterable[tuple[float, float | None]], mode: Mode) -> list[float]:
    """The scores at the highest budget among ``(budget, score)`` results, in order, signed so larger is better."""
    rows = [(float(b), float(s)) for b, s in results if s is not None and math.isfinite(float(s))]
    if not rows:
        return []
    top = max(b for b, _ in rows)
    sign = 1.0 if mode == "max" else -1.0
    return [sign * s for b, s in rows if b >= top - 1e-9]


def record_spacing(scores: Sequence[float]) -> float:
    """The mean gap between the best ``SPACINGS`` + 1 of ``scores`` (larger is better); 0 for fewer than two."""
    ys = np.sort(np.asarray(scores, dtype=float))[::-1]
    m = min(SPACINGS, len(ys) - 1)
    return float(ys[0] - ys[m]) / m if m >= 1 else 0.0


def gain_per_log_result(scores: Sequence[float]) -> float | None:
    """κ of one sweep: its incumbent's rise in record spacings per unit of log(n), from ``MIN_RESULTS`` on.

    Each step n → n + 1 adds (b(n + 1) − b(n)) / s(n) spacings over log((n + 1) / n); the ratio of the two sums
    is what the sweep gained per unit of log(n). None for a sweep too short, or whose top results never differ.
    """
    ys = np.asarray(scores, dtype=float)
    best = np.maximum.accumulate(ys) if len(ys) else ys
    gained = logged = 0.0
    for n in range(MIN_RESULTS, len(ys)):
        spacing = record_spacing(ys[:n])
        if spacing <= 0:
            continue
        gained += (best[n] - best[n - 1]) / spacing
        logged += math.log((n + 1) / n)
    return gained / logged if logged > 0 else None


@dataclass(frozen=True)
class StopEstimate:
    """One verdict's figures: the next slice's expected gain (metric units), its GPU-hours, and their ratio."""

    results: int
    spacing: float
    slice_results: int
    slice_gpu_hours: float
    expected_gain: float
    gain_per_gpu_hour: float

    def detail(self, kappa: float) -> str:
        return (f"the next {self.slice_results} top-fidelity results ({self.slice_gpu_hours:.4g} GPU-h) are expected "
                f"to add {self.expected_gain:.4g} = {kappa:.3g} x spacing {self.spacing:.4g} x "
                f"log({self.results + self.slice_results}/{self.results})")


@dataclass(frozen=True)
class HistoryStopRule:
    """κ learned from ``sweeps`` earlier sweeps (:func:`learn`); ``per_sweep``: each one's own κ."""

    kappa: float
    sweeps: int
    per_sweep: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kappa": self.kappa, "sweeps": self.sweeps, "per_sweep": list(self.per_sweep)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryStopRule:
        return cls(float(data["kappa"]), int(data["sweeps"]), tuple(float(x) for x in data.get("per_sweep", ())))

    def estimate(self, scores: Sequence[float], slice_results: int, slice_gpu_hours: float) -> StopEstimate | None:
        """Called before a stage with the sweep's top-fidelity scores so far (signed: larger is better) and the
        last slice of spend (its top-fidelity results, its GPU-hours), taken as what the next slice will be.

        None until the sweep has ``MIN_RESULTS`` results and a slice with one in it: no evidence of its scale or
        its rate yet, so no verdict either way."""
        n = len(scores)
        if n < MIN_RESULTS or slice_results < 1 or slice_gpu_hours <= 0:
            return None
        spacing = record_spacing(scores)
        gain = self.kappa * spacing * math.log((n + slice_results) / n)
        return StopEstimate(n, spacing, slice_results, slice_gpu_hours, gain, gain / slice_gpu_hours)


def learn(sweeps: Iterable[Sequence[float]], *, margin: float = MARGIN) -> HistoryStopRule | None:
    """The rule from earlier sweeps' top-fidelity scores in order (:func:`top_fidelity_scores`), or None where
    fewer than ``MIN_SWEEPS`` are long enough to measure: the controller then keeps its own rule."""
    kappas = [k for k in (gain_per_log_result(s) for s in sweeps) if k is not None]
    if len(kappas) < MIN_SWEEPS:
        return None
    return HistoryStopRule(margin * float(np.median(kappas)), len(kappas), tuple(round(k, 6) for k in kappas))


def stop_rule_in_use(learned: Mapping[str, Any] | None, *, enabled: bool, min_gain_per_gpu_hour: float | None,
                     stop_rule: str) -> tuple[HistoryStopRule | None, dict[str, Any]]:
    """The rule the controller judges by, if any, and what the summary says about it: ``{"used", "why"}``.

    ``learned``: :meth:`HistoryStopRule.to_json` of the history's rule (None: too little history);
    ``enabled``: ``budget.history_stop``; without a threshold there is no marginal-gain stop to judge."""
    own = f"stop_rule: {stop_rule}"
    if min_gain_per_gpu_hour is None:
        return None, {"used": False, "why": "no min_gain_per_gpu_hour, so no marginal-gain stop"}
    if not enabled:
        return None, {"used": False, "why": f"budget.history_stop is false; the marginal-gain stop is {own}"}
    if learned is None:
        return None, {"used": False, "why": f"fewer than {MIN_SWEEPS} earlier sweeps with more than {MIN_RESULTS} "
                                            f"full-budget results; the marginal-gain stop is {own}"}
    rule = HistoryStopRule.from_json(learned)
    return rule, {"used": True, "kappa": rule.kappa, "sweeps": rule.sweeps,
                  "why": f"the marginal-gain stop judged by what {rule.sweeps} earlier sweeps still gained "
                         f"(κ {rule.kappa:.3g}), in place of {own}"}
