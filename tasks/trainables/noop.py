"""An instant trainable with a known optimum, for orchestration-overhead benchmarks and fast tests."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from rungflow.budgets.space import FloatParam, SearchSpace
from rungflow.tasks.trainables.base import Trainable, TrainableError, TrainableOptions, TrainOutcome, TrainRequest, register

__all__ = ["NoopOptions", "NoopTrainable", "OPTIMUM", "noop_score"]

# Where the score peaks; tests and benchmarks check a sweep lands near it.
OPTIMUM: dict[str, float] = {"x": 0.3, "y": 0.7}


class NoopOptions(TrainableOptions):
    """Knobs that make the no-op look like a slow, failing or diverging trainable."""

    sleep_seconds: float = Field(0.0, ge=0.0, description="seconds slept per train call, to mimic work")
    fail_when_x_above: float | None = Field(None, description="raise RuntimeError when config x exceeds this")
    nan_when_x_above: float | None = Field(None, description="return a NaN score when config x exceeds this")
    hang_when_x_above: float | None = Field(None, description="never return when config x exceeds this (a hung trial)")
    allocate_mb_when_x_above: float | None = Field(None, description="keep allocating memory, 16 MB at a time, "
                                                                      "when config x exceeds this (a leaking trial)")
    gpu_seconds_per_unit: float | None = Field(
        None, ge=0.0, description="report this cost per budget unit trained (deterministic billing) instead of wall clock"
    )


def noop_score(config: Mapping[str, Any], budget: float) -> float:
    """1 at the optimum with infinite budget; smooth in x, y and increasing in budget."""
    x, y = _xy(config)
    return 1.0 - ((x - OPTIMUM["x"]) ** 2 + (y - OPTIMUM["y"]) ** 2) - 0.5 / (1.0 + budget)


def _xy(config: Mapping[str, Any]) -> tuple[float, float]:
    # A parameter the space leaves out sits at its optimum, so a one-parameter space still has a known best.
    try:
        return float(config.get("x", OPTIMUM["x"])), float(config.get("y", OPTIMUM["y"]))
    except (TypeError, ValueError) as exc:
        raise TrainableError(f"noop: x and y must be numbers, got x={config.get('x')!r}, y={config.get('y')!r}") from exc


@register
class NoopTrainable(Trainable):
    """Scores ``noop_score(config, budget)`` instantly (or after ``sleep_seconds``); wall clock is billed."""

    kind: ClassVar[str] = "noop"
    metric: ClassVar[str] = "score"
    Options: ClassVar[type[TrainableOptions]] = NoopOptions
    options: NoopOptions
    resumable: ClassVar[bool] = True
    mutable_params: ClassVar[frozenset[str] | None] = None  # the score reads the config afresh each call

    def default_space(self) -> SearchSpace:
        return SearchSpace((FloatParam("x", 0.0, 1.0), FloatParam("y", 0.0, 1.0)))

    def train(self, request: TrainRequest) -> TrainOutcome:
        """Jump to ``round(budget)`` (never below the checkpoint's budget) and score it."""
        x, _ = _xy(request.config)
        if self.options.sleep_seconds > 0:
            time.sleep(self.options.sleep_seconds)
        if self.options.hang_when_x_above is not None and x > self.options.hang_when_x_above:
            while True:  # in short sleeps, as a stuck data loader would poll
                time.sleep(0.05)
        if self.options.allocate_mb_when_x_above is not None and x > self.options.allocate_mb_when_x_above:
            hoard = []
            while True:
                hoard.append(bytearray(16 * 2**20))
                time.sleep(0.01)
        if self.options.fail_when_x_above is not None and x > self.options.fail_when_x_above:
            raise RuntimeError(f"x above {self.options.fail_when_x_above} (x={x}): noop configured to fail")
        previous = float(json.loads(request.checkpoint)["budget"]) if request.checkpoint is not None else 0.0
        reached = max(float(round(request.budget)), previous)
        diverge = self.options.nan_when_x_above is not None and x > self.options.nan_when_x_above
        score = float("nan") if diverge else noop_score(request.config, reached)
        return TrainOutcome(
            score=score,
            budget_reached=reached,
            budget_trained=reached - previous,
            checkpoint=json.dumps({"budget": reached}).encode(),
            metrics={"score": score},
            gpu_seconds=None if self.options.gpu_seconds_per_unit is None else self.options.gpu_seconds_per_unit * (reached - previous),
        )

    def estimate_gpu_seconds(self, config: Mapping[str, Any], budget_from: float, budget_to: float) -> float | None:
        per_unit = self.options.gpu_seconds_per_unit
        return None if per_unit is None else max(0.0, budget_to - budget_from) * per_unit
