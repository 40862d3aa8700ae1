"""The ensemble section: after a tabular sweep, a greedy ensemble of its trials is saved when it beats the best one."""

from __future__ import annotations

from pydantic import Field, field_validator

from rungflow.config.errors import _Strict


class EnsembleConfig(_Strict):
    """``size``: greedy rounds (Caruana et al., 2004), so weights are multiples of 1/size; ``max_candidates``: the
    trials it picks from, best first (each at the highest budget it reached), as auto-sklearn's ``ensemble_nbest``."""

    size: int = Field(default=25, description="greedy rounds; AutoGluon's default, above which TabRepo saw no gain")
    max_candidates: int = Field(default=50, description="the leaderboard's top trials the selection picks from")

    @field_validator("size", "max_candidates")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1; remove the ensemble section to save the best single trial")
        return v
