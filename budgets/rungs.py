"""Rung arithmetic for successive halving and Hyperband (Li et al., 2018), as plain data.

Symbols: R = max_budget / min_budget, η = eta, s_max = ⌊log_η R⌋. Bracket s starts
n = ⌈(s_max + 1) / (s + 1) · η^s⌉ trials at budget r = max_budget · η^(-s), and rung i keeps
⌊n · η^(-i)⌋ trials at budget max_budget · η^(i - s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "RungPlan", "BracketPlan", "max_bracket_index", "rung_budgets", "milestone_budgets", "bracket_plan", "hyperband_plan",
]


@dataclass(frozen=True)
class RungPlan:
    index: int
    budget: float
    num_trials: int


@dataclass(frozen=True)
class BracketPlan:
    """One bracket: rungs in increasing budget; ``index`` counts brackets across iterations."""

    index: int
    s: int
    rungs: tuple[RungPlan, ...]

    @property
    def num_trials(self) -> int:
        return self.rungs[0].num_trials

    def budget_units(self) -> float:
        """Budget units the bracket buys if every promoted trial resumes from its checkpoint."""
        total, previous = 0.0, 0.0
        for rung in self.rungs:
            total += rung.num_trials * (rung.budget - previous)
            previous = rung.budget
        return total


def max_bracket_index(min_budget: float, max_budget: float, eta: float) -> int:
    """s_max = ⌊log_η(max/min)⌋, with a tolerance so 81/1 at η=3 gives 4, not 3.999…"""
    return int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9))


def _round_budget(budget: float, min_budget: float, integer: bool) -> float:
    if integer:
        return float(max(int(round(min_budget)), int(round(budget))))
    return max(min_budget, budget)


def rung_budgets(min_budget: float, max_budget: float, eta: float, *, integer: bool = True) -> list[float]:
    """Budgets of the most aggressive bracket's rungs, ascending, the last one ``max_budget``."""
    s_max = max_bracket_index(min_budget, max_budget, eta)
    budgets = [_round_budget(max_budget * eta ** (i - s_max), min_budget, integer) for i in range(s_max)]
    budgets.append(float(max_budget))
    # Rounding can merge neighbouring rungs (e.g. 1.2 and 1.4 epochs); keep one of each.
    return sorted(set(budgets))


def milestone_budgets(min_budget: float, max_budget: float, eta: float, *, integer: bool = True) -> list[float]:
    """Rungs laid from the bottom up, as Ray Tune's and Syne Tune's ASHA lay them: r_min · η^k up to ``max_budget``,
    then ``max_budget`` itself. An integer budget rounds a milestone up: a trial that reports whole iterations is
    judged at the first report at or past it, as Ray Tune judges it (``training_iteration >= milestone``)."""
    budgets = {float(max_budget)}
    for k in range(max_bracket_index(min_budget, max_budget, eta) + 1):
        milestone = min_budget * eta**k
        milestone = float(math.ceil(milestone - 1e-9)) if integer else float(milestone)
        if milestone < max_budget * (1 - 1e-9):  # one a rounding error below the top is the top
            budgets.add(milestone)
    return sorted(budgets)


def bracket_plan(
    s: int, s_max: int, *, min_budget: float, max_budget: float, eta: float, integer: bool = True, index: int = 0,
    num_trials: int | None = None,
) -> BracketPlan:
    """Bracket s of Hyperband; ``num_trials`` overrides n for a single successive-halving bracket."""
    n = num_trials if num_trials is not None else int(math.ceil((s_max + 1) / (s + 1) * eta**s - 1e-9))
    rungs: list[RungPlan] = []
    for i in range(s + 1):
        count = max(1, int(math.floor(n * eta ** (-i) + 1e-9)))
        # The top rung is the full budget exactly, whatever the rounding of the rungs below it.
        budget = float(max_budget) if i == s else _round_budget(max_budget * eta ** (i - s), min_budget, integer)
        if rungs and budget <= rungs[-1].budget:
            # An integer budget that rounds onto the previous rung adds nothing: skip it.
            continue
        rungs.append(RungPlan(len(rungs), budget, count))
    return BracketPlan(index=index, s=s, rungs=tuple(rungs))


def hyperband_plan(
    min_budget: float, max_budget: float, eta: float, *, integer: bool = True, iterations: int = 1
) -> list[BracketPlan]:
    """All brackets s = s_max … 0, repeated ``iterations`` times."""
    s_max = max_bracket_index(min_budget, max_budget, eta)
    plan: list[BracketPlan] = []
    for _ in range(iterations):
        for s in range(s_max, -1, -1):
            plan.append(
                bracket_plan(
                    s, s_max, min_budget=min_budget, max_budget=max_budget, eta=eta, integer=integer, index=len(plan)
                )
            )
    return plan
