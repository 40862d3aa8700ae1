"""Where and how trials run (runtime) and how the sweep waits on the Prefect API (ui)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rungflow.budgets.holding import parse_release_after
from rungflow.config.errors import _Strict


class RuntimeConfig(_Strict):
    kind: Literal["thread", "ray"] = "ray"
    address: str | None = Field(default=None, description="Ray cluster address; None starts local Ray")
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    trial_timeout: float | None = Field(default=None, description="seconds a trial may run at one rung before it is stopped")
    max_retries: int = Field(default=2, description="retries of a trial whose Ray worker died, from its last checkpoint")
    memory_per_trial_gb: float | None = Field(default=None, description="memory a trial's Ray worker may use")
    release_idle_after: float | str = Field(
        default="auto", description="seconds an idle Ray worker keeps its GPU share before it is given back; 'auto' "
                                    "waits as long as a worker took to start, 'never' keeps every worker to the end")

    @field_validator("release_idle_after", mode="before")
    @classmethod
    def _release_after(cls, v: object) -> float | str:
        try:
            return parse_release_after(v)
        except ValueError as exc:
            raise ValueError(f"{exc}, e.g. 30") from None

    @field_validator("trial_timeout")
    @classmethod
    def _timeout(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError("must be a positive number of seconds, e.g. 3600; remove it for no limit")
        return v

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 or more (0: a trial whose worker dies is recorded as failed at once)")
        return v

    @field_validator("memory_per_trial_gb")
    @classmethod
    def _memory(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError("must be a positive number of GiB, e.g. 4; remove it for no limit")
        return v

    @model_validator(mode="after")
    def _memory_needs_ray(self) -> RuntimeConfig:
        if self.memory_per_trial_gb is not None and self.kind != "ray":
            raise ValueError("runtime.memory_per_trial_gb needs runtime.kind: ray (threads share the flow's memory); "
                             "remove it or use the ray runtime")
        return self

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError("must be zero or more (fractions such as 0.25 pack trials onto one GPU)")
        if v > 1 and not float(v).is_integer():
            raise ValueError("above 1 GPU a trial must hold whole GPUs (Ray's rule); use e.g. 2")
        return v

    @field_validator("cpus_per_trial")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("must be a positive number of CPUs per trial, e.g. 1")
        return v

    @field_validator("max_concurrent")
    @classmethod
    def _concurrency(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1; remove it to let the runtime's resources decide")
        return v


class UiConfig(_Strict):
    max_unrecorded_task_runs: int | None = Field(
        default=1000, description="hold back new trials while more finished task runs than this are missing from the "
                                  "Prefect API, so the UI shows every trial; null: never wait")
    api_outage_seconds: float = Field(
        default=300.0, gt=0, description="how long the Prefect API may stay down (a server restart) while the sweep "
                                         "trains on; past it the sweep stops after its running stage")

    @field_validator("max_unrecorded_task_runs")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1, got {value}; use null to never wait for the Prefect API")
        return value

