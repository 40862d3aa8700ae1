"""The budget controller: whether to keep spending at all.

Called before every stage (and, for hard caps, as trials finish mid-stage) with the ledger; it
answers with a :class:`BudgetDecision` that the flow carries out and records. Three kinds of stop:

* hard caps: ``max_gpu_hours``, ``max_cost``, a wall-clock ``deadline``; a stage whose predicted
  cost would cross a cap is not started;
* the marginal-gain stop: the improvement of the incumbent (best score at the highest fidelity
  reached, averaged over the top ``top_k`` so one lucky noisy evaluation cannot carry it) over a
  trailing window of spend, per GPU-hour, is below ``min_gain_per_gpu_hour`` for ``patience``
  consecutive verdicts after a warm-up of ``min_gpu_hours``. Under Hyperband and successive
  halving the window is, by default, the spend of the last ``window_iterations`` iterations' worth of
  complete brackets (every bracket size once), sliding: judged once per completed bracket, so
  patience counts brackets (``verdict_every="iteration"``: once per completed iteration); with
  ``window_gpu_hours`` set (or under ASHA) it is that much spend, judged before every stage. Only checks with new
  evidence count: a window with no spend at the highest fidelity (a bracket still on its lower
  rungs) and a check with no new result there since the last counted one neither count nor reset
  the patience. With ``noisy=True`` a rise
  of the *level* of the top-fidelity results also counts as progress (:func:`level_gain`), so one
  lucky early score that the true curve has not caught up with yet cannot stop a sweep that is
  still improving;
* the forecast stop (``stop_rule="forecast"``): the gain the next stage can be expected to buy,
  per GPU-hour it is predicted to cost, is below the threshold;
* the history stop (``history_stop``, when the flow hands the controller a rule learned from earlier sweeps,
  :mod:`budgets.history_stop`): the gain the next slice of spend is expected to buy, from how much sweeps of this
  kind still gained at this point, per GPU-hour, is below the threshold. It takes the place of ``stop_rule``;
* the target stop (``target_score``): a result at the full budget is good enough already, so
  nothing more is worth buying (e.g. a weekly retrain whose warm rung matches last week's quality).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from rungflow.budgets.history_stop import HistoryStopRule
from rungflow.budgets.holding import Bill
from rungflow.budgets.ledger import IncumbentPoint, Ledger, SpendRecord, incumbent_curve

__all__ = [
    "Action",
    "StopReason",
    "BudgetSettings",
    "BudgetDecision",
    "BudgetController",
    "window_gain",
    "level_gain",
    "expected_top_k_mean",
    "top_fidelity_in_window",
]

Mode = Literal["max", "min"]


class Action(StrEnum):
    CONTINUE = "continue"
    STOP = "stop"


class StopReason(StrEnum):
    SCHEDULE_COMPLETE = "schedule_complete"
    MIN_GAIN = "min_gain_per_gpu_hour"
    # The same threshold, judged on the gain earlier sweeps say is still to come (budgets/history_stop.py).
    HISTORY_GAIN = "history_gain_per_gpu_hour"
    MAX_GPU_HOURS = "max_gpu_hours"
    MAX_COST = "max_cost"
    MAX_CPU_HOURS = "max_cpu_hours"
    DEADLINE = "deadline"
    TARGET = "target_score"
    CANCELLED = "cancelled"
    # Not the controller's verdict but the driver's: the runtime lost trial after trial (a dead cluster).
    RUNTIME_FAILED = "runtime_failed"


@dataclass(frozen=True)
class BudgetSettings:
    max_gpu_hours: float | None = None
    max_cost: float | None = None
    deadline_seconds: float | None = None
    price_per_gpu_hour: float = 0.0
    max_cpu_hours: float | None = None
    price_per_cpu_hour: float = 0.0
    min_gain_per_gpu_hour: float | None = None
    window_gpu_hours: float | None = None
    min_gpu_hours: float = 0.0
    patience: int = 2
    top_k: int = 1
    stop_rule: Literal["window", "forecast"] = "window"
    # With a rule learned from earlier sweeps (history:), judge the threshold by it instead of stop_rule.
    history_stop: bool = False
    noisy: bool = False
    on_cap: Literal["finish", "cancel"] = "cancel"
    target_score: float | None = None
    # The window in whole Hyperband iterations (used when window_gpu_hours is not set and the
    # scheduler has iterations); patience then counts completed iterations.
    window_iterations: int | None = 1
    # When the window is judged: sliding, once per completed bracket, or once per completed iteration.
    verdict_every: Literal["bracket", "iteration"] = "bracket"
    # Which GPU-hours the caps and the money read: what trials trained, or what their workers held (busy or idle).
    bill: Literal["trained", "held"] = "trained"
    # Filled in from the scheduler, not by users: Hyperband s_max + 1, successive halving 1, else None.
    brackets_per_iteration: int | None = None


@dataclass(frozen=True)
class BudgetDecision:
    """One check of the controller, with the figures it decided on."""

    action: Action
    reason: str | None
    stage: str
    spent_gpu_hours: float
    spent_cost: float
    elapsed_seconds: float
    best: float | None
    gain_per_gpu_hour: float | None
    threshold: float | None
    next_stage_gpu_hours: float | None
    below_threshold_checks: int
    detail: str
    checked_at: float

    @property
    def stop(self) -> bool:
        return self.action == Action.STOP

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["action"] = str(self.action)
        return data


def _value_at(curve: list[IncumbentPoint], gpu_hours: float) -> IncumbentPoint | None:
    """The last curve point at or before ``gpu_hours`` of spend."""
    found = None
    for point in curve:
        if point.gpu_hours <= gpu_hours + 1e-12:
            found = point
        else:
            break
    return found


def window_gain(curve: list[IncumbentPoint], window_gpu_hours: float, mode: Mode) -> float | None:
    """Improvement of the incumbent over the last ``window_gpu_hours``, per GPU-hour.

    None when the window holds no comparable evidence: no incumbent yet, or the highest fidelity
    changed inside the window (a sweep still climbing the rungs is progressing by definition).
    """
    if not curve or curve[-1].top_k_mean is None or window_gpu_hours <= 0:
        return None
    now = curve[-1]
    before = _value_at(curve, now.gpu_hours - window_gpu_hours)
    if before is None or before.top_k_mean is None or abs(before.budget - now.budget) > 1e-9:
        return None
    sign = 1.0 if mode == "max" else -1.0
    span = now.gpu_hours - before.gpu_hours
    if span <= 0:
        return None
    return sign * (now.top_k_mean - before.top_k_mean) / max(span, window_gpu_hours)


def top_fidelity_in_window(records: list[SpendRecord], window_gpu_hours: float) -> bool:
    """Whether any of the last ``window_gpu_hours`` of spend went to the highest fidelity reached.

    Hyperband and ASHA reach the full budget only at the end of a bracket or promotion chain; a
    window spent entirely on lower rungs cannot have moved the incumbent yet, whatever the sweep's
    prospects, so it is no evidence either way (without this, a window shorter than a bracket
    stopped an LCBench 7593 sweep 11.6 points short, halfway through its second bracket).
    Failed and cancelled attempts at the highest fidelity count: they were spent there.
    """
    ok = [r.budget for r in records if r.ok]
    if not ok:
        return False
    top = max(ok)
    spent = sum(r.gpu_hours for r in records)
    position = 0.0
    for r in records:
        position += r.gpu_hours
        if position > spent - window_gpu_hours + 1e-12 and abs(r.budget - top) <= 1e-9:
            return True
    return False


def _last_top_fidelity_record(records: list[SpendRecord]) -> int | None:
    """Index of the last record spent at the highest fidelity reached (None: no valid result yet)."""
    ok = [r.budget for r in records if r.ok]
    if not ok:
        return None
    top = max(ok)
    return max(i for i, r in enumerate(records) if abs(r.budget - top) <= 1e-9)


def expected_top_k_mean(scores: list[float], m: int, k: int) -> float:
    """E[mean of the best ``k`` of a uniformly random ``m``-subset of ``scores``] (larger is better).

    Exact, from hypergeometric probabilities: the i-th best value (i better ones above it) is among
    the subset's best k when it is drawn and fewer than k of the i better ones are. Comparing two
    sets of results at the same ``m`` gives both the same number of draws, hence the same expected
    luck from noise. Computed with log-factorials, so windows of thousands of results stay cheap.
    """
    ordered = np.sort(np.asarray(scores, dtype=float))[::-1]
    n = len(ordered)
    if not 1 <= m <= n:
        raise ValueError(f"m={m} must be within [1, {n}]")
    k = max(1, min(k, m))
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])

    def log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        valid = (b >= 0) & (b <= a)
        out = np.full(np.broadcast(a, b).shape, -np.inf)
        a_b, b_b = np.broadcast_arrays(a, b)
        out[valid] = log_fact[a_b[valid]] - log_fact[b_b[valid]] - log_fact[a_b[valid] - b_b[valid]]
        return out

    i = np.arange(n)[:, None]  # better values above the i-th
    j = np.arange(k)[None, :]  # of them drawn, fewer than k
    log_p = log_comb(i, j) + log_comb(n - i - 1, m - 1 - j) - log_comb(np.array(n), np.array(m))
    weights = np.exp(log_p).sum(axis=1)
    return float(weights @ ordered) / k


def level_gain(records: list[SpendRecord], window_gpu_hours: float, mode: Mode, *, top_k: int = 1) -> float | None:
    """Rise of the level of the top-fidelity results from the previous window to the last, per GPU-hour.

    Why: the record (best score so far) of a noisy objective carries the luck of every draw so
    far; after one lucky evaluation, a curve that keeps improving can take many windows to beat
    it, and the record gain reads zero meanwhile (the winner's curse). Here the results at the
    highest fidelity in the last ``window_gpu_hours`` of spend are compared with those of the
    window before it, each summarised by the expected mean of the better half (at least ``top_k``)
    of an equal-size random subsample (:func:`expected_top_k_mean`), so both sides carry the same
    expected luck and seed-to-seed noise cancels in expectation. None when either window holds
    fewer than two such results.
    """
    if window_gpu_hours <= 0:
        return None
    sign = 1.0 if mode == "max" else -1.0
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    top = max(r.budget for r in ok)
    spent, points = 0.0, []
    for r in records:
        spent += r.gpu_hours
        if r.ok and abs(r.budget - top) <= 1e-9:
            points.append((spent, sign * float(r.score)))  # type: ignore[arg-type]
    recent = [s for t, s in points if t > spent - window_gpu_hours + 1e-12]
    previous = [s for t, s in points if spent - 2 * window_gpu_hours + 1e-12 < t <= spent - window_gpu_hours + 1e-12]
    m = min(len(recent), len(previous))
    if m < 2:
        return None
    k = max(top_k, math.ceil(m / 2))
    return (expected_top_k_mean(recent, m, k) - expected_top_k_mean(previous, m, k)) / window_gpu_hours


class BudgetController:
    """Decides before every stage whether the sweep may spend more; see the module docstring."""

    def __init__(
        self,
        settings: BudgetSettings,
        *,
        mode: Mode = "max",
        clock: Callable[[], float] = time.time,
        started_at: float | None = None,
        full_budget: float | None = None,
        history_stop: HistoryStopRule | None = None,
    ) -> None:
        self.settings = settings
        self.history_stop = history_stop if settings.history_stop else None
        self.mode = mode
        self.full_budget = full_budget
        self.clock = clock
        self.started_at = started_at if started_at is not None else clock()
        self.below_threshold_checks = 0
        self.checks = 0
        self._counted_evidence: Any = None  # what the last counted check was measured on

    def _decision(self, action: Action, reason: str | None, stage: str, ledger: Ledger, **figures: Any) -> BudgetDecision:
        now = self.clock()
        return BudgetDecision(
            action=action,
            reason=reason,
            stage=stage,
            spent_gpu_hours=ledger.gpu_hours,
            spent_cost=ledger.cost,
            elapsed_seconds=now - self.started_at,
            best=figures.get("best"),
            gain_per_gpu_hour=figures.get("gain"),
            threshold=self.settings.min_gain_per_gpu_hour,
            next_stage_gpu_hours=figures.get("next_stage_gpu_hours"),
            below_threshold_checks=self.below_threshold_checks,
            detail=figures.get("detail", ""),
            checked_at=now,
        )

    def hard_cap_reached(self, ledger: Ledger, next_stage_gpu_hours: float = 0.0) -> tuple[StopReason, str] | None:
        """The first hard cap that is reached now, or would be by spending ``next_stage_gpu_hours`` more."""
        s = self.settings
        held = s.bill == Bill.HELD
        spent, cost = (ledger.gpu_hours_held, ledger.cost_held) if held else (ledger.gpu_hours, ledger.cost)
        cpu_hours = ledger.cpu_hours_held if held else ledger.cpu_hours
        what = " held" if held else ""
        if s.max_gpu_hours is not None and spent + next_stage_gpu_hours >= s.max_gpu_hours - 1e-12:
            extra = f" + {next_stage_gpu_hours:.4g} predicted for the next stage" if next_stage_gpu_hours else ""
            return StopReason.MAX_GPU_HOURS, (f"spent {spent:.4g} GPU-h{what}{extra} reaches the cap of "
                                              f"{s.max_gpu_hours:.4g} GPU-h")
        next_cost = ledger.cost_of(next_stage_gpu_hours * 3600.0)
        if s.max_cost is not None and cost + next_cost >= s.max_cost - 1e-12:
            extra = f" + {next_cost:.4g} predicted for the next stage" if next_cost else ""
            return StopReason.MAX_COST, f"spent {cost:.4g}{what}{extra} reaches the cost cap of {s.max_cost:.4g}"
        # CPU-hours are billed as trials finish; no stage forecast predicts them, so the cap is on what was spent.
        if s.max_cpu_hours is not None and cpu_hours >= s.max_cpu_hours - 1e-12:
            return StopReason.MAX_CPU_HOURS, f"spent {cpu_hours:.4g} CPU-h{what} reaches the cap of {s.max_cpu_hours:.4g} CPU-h"
        if s.deadline_seconds is not None and self.clock() - self.started_at >= s.deadline_seconds:
            return StopReason.DEADLINE, f"{self.clock() - self.started_at:.0f} s elapsed, deadline {s.deadline_seconds:.0f} s"
        return None

    def target_reached(self, ledger: Ledger) -> tuple[StopReason, str] | None:
        """Whether a result at the full budget (the highest reached, if unknown) reaches ``target_score``.

        Only full-budget results count: a low-fidelity score is a forecast, not a model one can ship.
        """
        target = self.settings.target_score
        if target is None:
            return None
        ok = [r for r in ledger.records if r.ok]
        if not ok:
            return None
        full = self.full_budget if self.full_budget is not None else max(r.budget for r in ok)
        sign = 1.0 if self.mode == "max" else -1.0
        for r in ok:
            if r.budget >= full - 1e-9 and sign * float(r.score) >= sign * target - 1e-12:  # type: ignore[arg-type]
                return StopReason.TARGET, f"trial {r.trial_id} scored {float(r.score):.4g} at the full budget, target {target:.4g}"  # type: ignore[arg-type]
        return None

    def check_in_flight(self, ledger: Ledger, stage: str = "in-flight") -> BudgetDecision:
        """Called as trials finish mid-stage: hard caps and the target apply (the gain rule waits for the stage)."""
        cap = self.hard_cap_reached(ledger) or self.target_reached(ledger)
        if cap is not None:
            return self._decision(Action.STOP, str(cap[0]), stage, ledger, detail=cap[1])
        return self._decision(Action.CONTINUE, None, stage, ledger)

    def check_before_stage(
        self,
        ledger: Ledger,
        *,
        stage: str,
        next_stage_gpu_hours: float | None = None,
        expected_gain: float | None = None,
        forecast_gpu_hours: float | None = None,
        forecast_detail: str = "",
        bracket: int | None = None,
    ) -> BudgetDecision:
        """Called before every stage.

        ``expected_gain`` (metric units) feeds the forecast rule: the gain that spending
        ``forecast_gpu_hours`` (default: the next stage's predicted GPU-hours) is expected to buy,
        e.g. the rest of a bracket (:func:`budgets.forecast.forecast_gain`). ``bracket``: the index
        of the bracket the stage belongs to (synchronous schedulers), which tells the iteration
        window when an iteration is complete.
        """
        self.checks += 1
        s = self.settings
        curve = ledger.incumbent(self.mode, top_k=s.top_k)
        best = curve[-1].score if curve else None
        figures: dict[str, Any] = {"best": best, "next_stage_gpu_hours": next_stage_gpu_hours}
        note = ""
        cap = self.target_reached(ledger) or self.hard_cap_reached(ledger, next_stage_gpu_hours or 0.0)
        if cap is not None:
            return self._decision(Action.STOP, str(cap[0]), stage, ledger, detail=cap[1], **figures)
        if s.min_gain_per_gpu_hour is None:
            return self._decision(Action.CONTINUE, None, stage, ledger, detail="no marginal-gain rule", **figures)
        spent = ledger.gpu_hours
        if spent < s.min_gpu_hours:
            return self._decision(
                Action.CONTINUE, None, stage, ledger,
                detail=f"warm-up: {spent:.4g} of {s.min_gpu_hours:.4g} GPU-h", **figures,
            )
        if self.history_stop is not None:
            return self._check_history(ledger, stage, bracket, figures)
        if s.stop_rule == "forecast":
            spend = forecast_gpu_hours if forecast_gpu_hours is not None else next_stage_gpu_hours
            if expected_gain is None or not spend:
                gain = None
            else:
                gain = max(0.0, expected_gain) / spend
                note = f" ({forecast_detail}, {spend:.4g} GPU-h)" if forecast_detail else ""
        elif self._iteration_mode():
            return self._check_iterations(ledger, stage, bracket, figures)
        else:
            window = s.window_gpu_hours if s.window_gpu_hours is not None else max(s.min_gpu_hours, spent / 3)
            if not top_fidelity_in_window(ledger.records, window):
                # Neither counts nor resets: the lower rungs' results reach the top fidelity later.
                detail = "no spend at the highest fidelity in the window: no evidence either way"
                return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
            gain, both = self._record_or_level(ledger.records, window, window_gain(curve, window, self.mode))
            if both:
                note = f" ({both})"
        figures["gain"] = gain
        if gain is None:
            self.below_threshold_checks = 0
            detail = ("the highest fidelity changed inside the window: the sweep is still climbing the rungs"
                      if s.stop_rule == "window" else "no forecast yet: a rung step or entry budget without enough results")
            return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
        evidence = ("record", _last_top_fidelity_record(ledger.records)) if s.stop_rule == "window" else None
        return self._judge(ledger, stage, gain, note, evidence, figures)

    def _record_or_level(self, records: list[SpendRecord], window: float,
                         gain: float | None) -> tuple[float | None, str]:
        """With ``noisy``, progress is a better record or a better level: either alone can be hidden by
        noise. Returns the gain to judge and, when the level was measured, both figures for the note."""
        if not self.settings.noisy:
            return gain, ""
        level = level_gain(records, window, self.mode, top_k=self.settings.top_k)
        if level is None:
            return gain, ""
        both = f"record {'-' if gain is None else format(gain, '.4g')}, level {level:.4g}"
        return (level if gain is None else max(gain, level)), both

    def _judge(self, ledger: Ledger, stage: str, gain: float, note: str, evidence: Any,
               figures: dict[str, Any], reason: StopReason = StopReason.MIN_GAIN) -> BudgetDecision:
        """Count ``gain`` against the threshold; ``evidence`` identifies what it was measured on, so
        overlapping checks on the same evidence count once (None: every check counts)."""
        s = self.settings
        assert s.min_gain_per_gpu_hour is not None
        if evidence is not None and evidence[0] == "bracket":
            unit = "completed brackets" if s.verdict_every == "bracket" else "completed iterations"
        else:
            unit = "consecutive checks"
        if gain < s.min_gain_per_gpu_hour:
            if evidence is not None and evidence == self._counted_evidence:
                # Checks before every stage overlap: patience counts distinct evidence, not checks.
                what = "bracket completed" if evidence[0] == "bracket" else "result at the highest fidelity"
                detail = (f"gain {gain:.4g}/GPU-h{note} below threshold, no new {what} since "
                          f"the last check ({self.below_threshold_checks}/{s.patience})")
                return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
            self._counted_evidence = evidence
            self.below_threshold_checks += 1
            if self.below_threshold_checks >= s.patience:
                detail = (
                    f"gain {gain:.4g}/GPU-h{note} below {s.min_gain_per_gpu_hour:.4g}/GPU-h "
                    f"for {self.below_threshold_checks} {unit}"
                )
                return self._decision(Action.STOP, str(reason), stage, ledger, detail=detail, **figures)
            detail = f"gain {gain:.4g}/GPU-h{note} below threshold ({self.below_threshold_checks}/{s.patience})"
            return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
        self.below_threshold_checks = 0
        return self._decision(
            Action.CONTINUE, None, stage, ledger, detail=f"gain {gain:.4g}/GPU-h{note} at or above threshold", **figures
        )

    def _iteration_mode(self) -> bool:
        s = self.settings
        return (s.stop_rule == "window" and s.window_gpu_hours is None and s.window_iterations is not None
                and s.brackets_per_iteration is not None)

    def _check_iterations(self, ledger: Ledger, stage: str, bracket: int | None,
                          figures: dict[str, Any]) -> BudgetDecision:
        """The window rule over the last ``window_iterations`` whole Hyperband iterations of brackets.

        Why: each Hyperband bracket is an independent sample of the space, and one iteration runs
        every bracket once; a window shorter than that judges one or two brackets, and a sweep whose
        incumbent rises once an iteration reads flat for most of its checks. The figures are those of
        complete brackets only (``verdict_every``: the window ends at the last completed iteration,
        or slides along by whole brackets), so every check until the next one completes sees the
        same evidence, and it counts once toward ``patience``.
        """
        s = self.settings
        per = s.brackets_per_iteration
        assert per is not None and s.window_iterations is not None
        records = ledger.records
        if bracket is None:  # without the stage's bracket, the latest bracket seen is still running
            bracket = max((r.bracket for r in records), default=0)
        step = per if s.verdict_every == "iteration" else 1
        completed = (bracket // step) * step  # brackets 0 … completed − 1 are complete, in whole steps
        span = s.window_iterations * per
        # The window and an iteration before it: the first iteration's incumbent is one bracket's
        # survivor, picked before the searcher had a model of the top fidelity, and a window judged
        # against it read flat while LCBench 126025 and 7593 sweeps were about to rise 7–11 points.
        need = span + per
        if completed < need:
            detail = f"{completed} of the {need} completed brackets the window needs"
            return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
        last = completed - 1
        done = [r for r in records if r.bracket <= last]
        window = sum(r.gpu_hours for r in done if r.bracket > last - span)
        gain = window_gain(incumbent_curve(done, self.mode, top_k=s.top_k), window, self.mode)
        where = f"brackets {last - span + 1}–{last}, {window:.4g} GPU-h"
        gain, both = self._record_or_level(done, window, gain)
        note = f" ({where}; {both})" if both else f" ({where})"
        figures["gain"] = gain
        if gain is None:
            self.below_threshold_checks = 0
            detail = "the highest fidelity changed inside the window: the sweep is still climbing the rungs"
            return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
        return self._judge(ledger, stage, gain, note, ("bracket", last), figures)

    def _check_history(self, ledger: Ledger, stage: str, bracket: int | None,
                       figures: dict[str, Any]) -> BudgetDecision:
        """The history stop: the next slice's expected gain per GPU-hour, by the rule learned from earlier sweeps.

        The next slice is taken to be what the last one was: under Hyperband and successive halving the last
        iteration of completed brackets (so every bracket size is in it once, and each completed bracket is one
        piece of evidence), otherwise the last ``window_gpu_hours`` (a third of the spend by default), with a new
        top-fidelity result as the new evidence.
        """
        s = self.settings
        rule = self.history_stop
        assert rule is not None and s.min_gain_per_gpu_hour is not None
        records = ledger.records
        per = s.brackets_per_iteration
        if per is not None and s.window_gpu_hours is None:
            if bracket is None:  # without the stage's bracket, the latest bracket seen is still running
                bracket = max((r.bracket for r in records), default=0)
            done = [r for r in records if r.bracket < bracket]
            window = [r for r in done if r.bracket >= bracket - per]
            evidence: Any = ("bracket", bracket - 1)
        else:
            span = s.window_gpu_hours if s.window_gpu_hours is not None else ledger.gpu_hours / 3
            done, window, spent = records, [], 0.0
            for r in reversed(records):
                if spent >= span - 1e-12:
                    break
                window.append(r)
                spent += r.gpu_hours
            evidence = ("record", _last_top_fidelity_record(records))
        ok = [r for r in done if r.ok and r.score is not None]
        full = self.full_budget if self.full_budget is not None else max((r.budget for r in ok), default=0.0)

        def top_fidelity(r: SpendRecord) -> bool:
            return r.ok and r.score is not None and r.budget >= full - 1e-9

        sign = 1.0 if self.mode == "max" else -1.0
        scores = [sign * float(r.score) for r in ok if top_fidelity(r)]  # type: ignore[arg-type]
        estimate = rule.estimate(scores, sum(map(top_fidelity, window)), sum(r.gpu_hours for r in window))
        if estimate is None:
            # Neither counts nor resets: too few full-budget results yet to know the sweep's scale or rate.
            detail = (f"history rule: {len(scores)} full-budget results, not yet enough to judge "
                      f"(κ {rule.kappa:.3g} from {rule.sweeps} earlier sweeps)")
            return self._decision(Action.CONTINUE, None, stage, ledger, detail=detail, **figures)
        figures["gain"] = estimate.gain_per_gpu_hour
        note = f" (history, {rule.sweeps} earlier sweeps: {estimate.detail(rule.kappa)})"
        return self._judge(ledger, stage, estimate.gain_per_gpu_hour, note, evidence, figures,
                           reason=StopReason.HISTORY_GAIN)
