"""Greedy ensemble selection (Caruana et al., 2004), with replacement, as auto-sklearn and AutoGluon build theirs.

Called once after a sweep, on the validation predictions its trials kept: class probabilities (n, k) or
regression predictions (n,). Each of ``size`` rounds adds the candidate (possibly one already in) whose
addition gives the best score of the averaged prediction; the weights are how often each was added. As in
AutoGluon, the ensemble kept is the best prefix of that trajectory, so it is never worse on these rows than its
first pick, the best single candidate; ties prefer a candidate already in (a smaller ensemble), then a seeded draw.

The score is judged on the same validation rows the selection looked at, so it is optimistic: an estimate of
how the ensemble does on new rows needs rows it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EnsembleSelection", "select_ensemble", "TOLERANCE"]

# Scores this close are equal: averages of the same predictions differ in their last bits.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class EnsembleSelection:
    """``weights[i]``: candidate i's share of the averaged prediction (summing to 1; 0 = not in the ensemble).

    ``score`` is the ensemble's score on the selection rows; ``best_single_score`` the best candidate's alone;
    ``trajectory`` the score after each round kept (its length is the number of picks).
    """

    weights: tuple[float, ...]
    score: float
    best_single_score: float
    best_single: int
    trajectory: tuple[float, ...]

    @property
    def members(self) -> tuple[int, ...]:
        """Candidates with a positive weight, in candidate order."""
        return tuple(i for i, w in enumerate(self.weights) if w > 0)

    @property
    def gain(self) -> float:
        """How much the ensemble beats the best single candidate on the selection rows (0 when it is that one)."""
        gain = self.score - self.best_single_score
        return 0.0 if abs(gain) <= TOLERANCE * max(1.0, abs(self.best_single_score)) else gain


def select_ensemble(predictions: Sequence[np.ndarray], score: Callable[[np.ndarray], float], *, size: int = 25,
                    seed: int = 0) -> EnsembleSelection:
    """Select weights over ``predictions`` (same shape each) maximising ``score(averaged prediction)``.

    ``size`` is the number of greedy rounds (AutoGluon's default 25: TabRepo saw no gain above it). ``score`` is
    higher-is-better; pass a negated loss. A candidate whose score is not finite is never picked.
    """
    if size < 1:
        raise ValueError(f"The value of size is {size}, but must be at least 1 (greedy rounds)")
    if not predictions:
        raise ValueError("predictions is empty; pass at least one candidate's validation predictions")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    if not np.isfinite(stacked).all(axis=tuple(range(1, stacked.ndim))).any():
        raise ValueError("every candidate's predictions hold NaN or inf; nothing to select from")
    rng = np.random.default_rng(seed)
    singles = np.array([_safe(score, p) for p in stacked])
    total = np.zeros_like(stacked[0])  # the sum of the picks so far; their average is total / rounds
    picks: list[int] = []
    trajectory: list[float] = []
    for round_ in range(size):
        scores = np.array([_safe(score, (total + p) / (round_ + 1)) for p in stacked])
        best = np.nanmax(scores)
        tied = np.flatnonzero(np.isclose(scores, best, rtol=TOLERANCE, atol=TOLERANCE))
        in_already = [j for j in tied if j in picks]
        choice = int(rng.choice(in_already or tied))
        picks.append(choice)
        total = total + stacked[choice]
        trajectory.append(float(scores[choice]))
    # The first prefix as good as the best: rounding in the averages must not buy a larger ensemble.
    peak = max(trajectory)
    kept = next(i for i, value in enumerate(trajectory) if value >= peak - TOLERANCE * max(1.0, abs(peak))) + 1
    counts = np.bincount(picks[:kept], minlength=len(stacked)).astype(np.float64)
    best_single = int(np.nanargmax(singles))
    return EnsembleSelection(weights=tuple(float(c) for c in counts / kept), score=trajectory[kept - 1],
                             best_single_score=float(singles[best_single]), best_single=best_single,
                             trajectory=tuple(trajectory[:kept]))


def _safe(score: Callable[[np.ndarray], float], prediction: np.ndarray) -> float:
    if not np.isfinite(prediction).all():
        return float("nan")
    value = float(score(prediction))
    return value if np.isfinite(value) else float("nan")
