"""The sweep config: YAML validated up front, every error naming the field, the value and the fix."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rungflow.budgets.controller import BudgetSettings
from rungflow.budgets.schedulers import SchedulerKind
from rungflow.budgets.search_registry import SEARCHERS
from rungflow.budgets.space import SearchSpace, SpaceError

__all__ = ["SweepConfig", "ConfigError", "load_config", "apply_overrides", "parse_duration", "RESUMABLE", "resume_conflicts"]


class ConfigError(ValueError):
    """A config that cannot run; ``str()`` is one line naming the field, the value and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like '90s', '45m', '2h', '1d'."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(value))
    if not match:
        raise ValueError(f"cannot read {value!r} as a duration; use seconds or e.g. '90m', '4h'")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class TrainableConfig(_Strict):
    kind: str = Field(description="the model family, e.g. torch_mlp or yahpo_lcbench; 'function' for your own code")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _function_shorthand(cls, data: Any) -> Any:
        # `trainable: {function: "train.py:train"}` is the function family with that entrypoint.
        if isinstance(data, dict) and "function" in data:
            data = dict(data)
            entrypoint = data.pop("function")
            if data.get("kind", "function") != "function":
                raise ValueError(f"trainable: give either kind ({data['kind']!r}) or function, not both")
            data["kind"] = "function"
            data["options"] = {**dict(data.get("options") or {}), "entrypoint": entrypoint}
        return data

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        from rungflow.tasks.trainables import known_kinds, moved_module_hint

        if kind not in known_kinds() and (hint := moved_module_hint(kind)) is not None:
            raise ValueError(hint)
        if kind not in known_kinds():
            raise ValueError(f"unknown trainable {kind!r}; use one of {', '.join(known_kinds())}")
        return kind


class MetricConfig(_Strict):
    name: str | None = None
    mode: Literal["max", "min"] | None = None


class SearchConfig(_Strict):
    algorithm: str = "bohb"
    seed: int = 0
    num_trials: int | None = Field(default=None, description="trials to start where the scheduler does not fix it")
    grid_points: int = 4
    random_fraction: float | None = None
    min_points_in_model: int | None = None
    cost_aware: bool = Field(default=False, description="tpe/bohb: rank candidates by expected improvement per predicted GPU-hour")

    @field_validator("algorithm")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in SEARCHERS:
            raise ValueError(f"unknown searcher {name!r}; use one of {', '.join(SEARCHERS)}")
        return name

    @field_validator("num_trials")
    @classmethod
    def _positive(cls, n: int | None) -> int | None:
        if n is not None and n < 1:
            raise ValueError("must be at least 1; set search.num_trials to how many trials to start")
        return n

    @field_validator("random_fraction")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError("must be within [0, 1] (the share of BOHB proposals drawn at random), e.g. 0.33")
        return v

    @field_validator("min_points_in_model")
    @classmethod
    def _min_points(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1; leave it out for the default (number of parameters + 2)")
        return v

    @field_validator("grid_points")
    @classmethod
    def _grid(cls, n: int) -> int:
        if n < 1:
            raise ValueError("must be at least 1 value per numeric parameter, e.g. search.grid_points=4")
        return n

    @model_validator(mode="after")
    def _cost_aware_needs_tpe(self) -> SearchConfig:
        if self.cost_aware and self.algorithm not in ("tpe", "bohb"):
            raise ValueError(
                f"search.cost_aware: only tpe and bohb rank candidates by cost, not {self.algorithm!r}; "
                "use search.algorithm=tpe or remove cost_aware"
            )
        return self


# Options only one scheduler reads: setting one for another scheduler is a mistake worth naming.
_SCHEDULER_OPTIONS = {
    "median": ("grace_budget", "min_samples"),
    "pbt": ("population", "perturbation_interval", "quantile_fraction", "resample_probability", "mutations", "burn_in"),
}


class SchedulerConfig(_Strict):
    kind: str = "hyperband"
    min_budget: float | None = Field(default=None, description="r_min; defaults to the trainable's")
    max_budget: float | None = Field(default=None, description="R; defaults to the trainable's")
    eta: float = 3
    iterations: int = 1
    grace_budget: float | None = Field(default=None, description="median: no stopping below this budget (default 0)")
    min_samples: int | None = Field(default=None, description="median: other trials' results needed at a rung (default 3)")
    population: int | None = Field(default=None, description="pbt: members trained at once (default search.num_trials or 8)")
    perturbation_interval: float | None = Field(default=None, description="pbt: budget units per generation "
                                                                          "(default min_budget)")
    quantile_fraction: float | None = Field(default=None, description="pbt: share replaced at each gate (default 0.25)")
    resample_probability: float | None = Field(default=None, description="pbt: chance a mutation resamples (default 0.25)")
    mutations: list[str] | None = Field(default=None, description="pbt: parameters explore may change (default every "
                                                                  "float and int the trainable declares mutable)")
    burn_in: float | None = Field(default=None, description="pbt: budget trained before the first exploit (default 0)")

    @field_validator("population")
    @classmethod
    def _population(cls, v: int | None) -> int | None:
        if v is not None and v < 2:
            raise ValueError("must be at least 2: exploit copies a strong member over a weak one; 8 or more is usual")
        return v

    @field_validator("quantile_fraction")
    @classmethod
    def _quantile(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 0.5:
            raise ValueError("must be above 0 and at most 0.5 (the top and bottom quantiles may not overlap); 0.25 is usual")
        return v

    @field_validator("resample_probability")
    @classmethod
    def _probability(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v <= 1:
            raise ValueError("must be within [0, 1] (the chance a mutated parameter is drawn afresh), e.g. 0.25")
        return v

    @field_validator("perturbation_interval")
    @classmethod
    def _interval(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError("must be a positive number of budget units per generation, e.g. 2 (epochs)")
        return v

    @field_validator("burn_in", "grace_budget")
    @classmethod
    def _non_negative_budget(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError("must be zero or more budget units")
        return v

    @field_validator("min_samples")
    @classmethod
    def _samples(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1 (other trials' results at a rung before the median can stop one); 3 is usual")
        return v

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> SchedulerConfig:
        for kind, names in _SCHEDULER_OPTIONS.items():
            for name in names:
                if kind != self.kind and getattr(self, name) is not None:
                    raise ValueError(f"scheduler.{name}: only scheduler.kind: {kind} reads it, not {self.kind}; "
                                     f"remove it or use kind: {kind}")
        return self

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        allowed = [k.value for k in SchedulerKind]
        if kind not in allowed:
            raise ValueError(f"unknown scheduler {kind!r}; use one of {', '.join(allowed)}")
        return kind

    @field_validator("min_budget", "max_budget")
    @classmethod
    def _budget_positive(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError("must be a positive number of budget units (e.g. epochs)")
        return v

    @field_validator("eta")
    @classmethod
    def _eta(cls, eta: float) -> float:
        if not eta >= 2:
            raise ValueError("must be at least 2 (η: the fraction 1/η of trials survives each rung); 3 is usual")
        return eta

    @field_validator("iterations")
    @classmethod
    def _iterations(cls, n: int) -> int:
        if n < 1:
            raise ValueError("must be at least 1 (how many times the bracket schedule repeats)")
        return n

    @model_validator(mode="after")
    def _ordered(self) -> SchedulerConfig:
        if self.min_budget is not None and self.max_budget is not None and self.min_budget > self.max_budget:
            raise ValueError(
                f"scheduler.min_budget ({self.min_budget:g}) is above scheduler.max_budget ({self.max_budget:g}); "
                "lower min_budget or raise max_budget"
            )
        return self


class BudgetConfig(_Strict):
    max_gpu_hours: float | None = None
    max_cost: float | None = None
    deadline: float | str | None = Field(default=None, description="wall-clock limit: seconds or '90m', '4h'")
    price_per_gpu_hour: float = 0.0
    max_cpu_hours: float | None = Field(default=None, description="cap on wall-clock x CPUs held, summed over trials")
    price_per_cpu_hour: float = 0.0
    min_gain_per_gpu_hour: float | None = None
    window_gpu_hours: float | None = None
    min_gpu_hours: float = 0.0
    patience: int = 2
    top_k: int = 1
    stop_rule: Literal["window", "forecast"] = "window"
    noisy: bool = Field(default=False, description="scores vary from seed to seed: a rise of the top results' level also counts as gain")
    on_cap: Literal["finish", "cancel"] = "cancel"
    target_score: float | None = Field(default=None, description="stop once a full-budget result reaches this score")

    @field_validator("target_score")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite score; remove the key to search until another rule stops")
        return v
    window_iterations: int | None = Field(
        default=1, description="window in whole Hyperband iterations when window_gpu_hours is not set (Hyperband, successive halving)")
    verdict_every: Literal["bracket", "iteration"] = Field(
        default="bracket", description="judge the iteration window sliding, once per completed bracket, or once per completed iteration")

    @field_validator("max_gpu_hours", "max_cost", "window_gpu_hours", "max_cpu_hours")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError("must be a positive number; remove the key for no limit")
        return v

    @field_validator("price_per_gpu_hour", "min_gpu_hours", "price_per_cpu_hour")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError("must be zero or more")
        return v

    @field_validator("min_gain_per_gpu_hour")
    @classmethod
    def _gain(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError("must be zero or more metric units per GPU-hour; remove the key to disable the rule")
        return v

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: float | str | None) -> float | str | None:
        seconds = parse_duration(v)
        if seconds is not None and seconds <= 0:
            raise ValueError("must be a positive duration, e.g. 3600 or '4h'")
        return v

    @field_validator("patience", "top_k", "window_iterations")
    @classmethod
    def _at_least_one(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1")
        return v

    @model_validator(mode="after")
    def _window_fits(self) -> BudgetConfig:
        if self.window_gpu_hours is not None and self.max_gpu_hours is not None and self.window_gpu_hours > self.max_gpu_hours:
            raise ValueError(
                f"budget.window_gpu_hours ({self.window_gpu_hours:g}) is larger than budget.max_gpu_hours "
                f"({self.max_gpu_hours:g}); the rule could never fire: make the window smaller than the cap"
            )
        return self

    def settings(self) -> BudgetSettings:
        """The controller's settings, field for field (tests/test_config_settings.py holds the two in step)."""
        values = {BUDGET_RENAMED.get(name, name): getattr(self, name) for name in type(self).model_fields}
        values["deadline_seconds"] = parse_duration(self.deadline)
        return BudgetSettings(**values)


# BudgetConfig's keys are what a user writes; where the controller's name differs (its deadline is in seconds,
# the config's may be '4h'), it is mapped here. BudgetSettings fields no config key sets are filled from the
# scheduler when the sweep is built.
BUDGET_RENAMED = {"deadline": "deadline_seconds"}
BUDGET_FROM_SCHEDULER = frozenset({"brackets_per_iteration"})


class RuntimeConfig(_Strict):
    kind: Literal["thread", "ray"] = "ray"
    address: str | None = Field(default=None, description="Ray cluster address; None starts local Ray")
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    trial_timeout: float | None = Field(default=None, description="seconds a trial may run at one rung before it is stopped")
    max_retries: int = Field(default=2, description="retries of a trial whose Ray worker died, from its last checkpoint")
    memory_per_trial_gb: float | None = Field(default=None, description="memory a trial's Ray worker may use")

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


_CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key", "secret_key",
                    "access_key_id", "secret_access_key", "password", "token")


class S3Config(_Strict):
    """How to reach an S3-compatible store. Credentials are not accepted here: see :mod:`tasks.s3`."""

    endpoint_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8333; None: AWS_ENDPOINT_URL or AWS")
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    outage_seconds: float = 300.0

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in _CREDENTIAL_KEYS:
                    raise ValueError(
                        f"{key}: credentials never go in config files; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                        "in the environment or use an AWS profile (AWS_PROFILE)"
                    )
        return data

    @field_validator("connect_timeout", "read_timeout", "outage_seconds")
    @classmethod
    def _positive_seconds(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("must be a positive number of seconds")
        return v

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1 (1 = no botocore retries)")
        return v

    def url(self, location: str) -> str:
        """``location`` (s3://bucket/prefix) with these settings in its query, for workers that get only a string."""
        from rungflow.tasks.s3 import parse_s3_url

        # Only values that differ from the defaults: options already in the URL's query must not be reset to them
        # (a config dumped and validated again has every field set, so exclude_unset is not enough).
        changed = {k: v for k, v in self.model_dump().items() if v != type(self).model_fields[k].default}
        return parse_s3_url(location, **changed).url()


class StorageConfig(_Strict):
    run_dir: str | None = None
    optuna_url: str | None = Field(default=None, description="Optuna storage; default sqlite in the run directory")
    checkpoints: str | None = Field(default=None, description="checkpoint store: a directory or s3://bucket/prefix; "
                                                              "default RUN_DIR/checkpoints")
    s3: S3Config = Field(default_factory=S3Config)

    @field_validator("checkpoints")
    @classmethod
    def _location(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("s3://"):
            from rungflow.tasks.s3 import S3Error, parse_s3_url

            try:
                parse_s3_url(v)
            except S3Error as exc:
                raise ValueError(str(exc)) from None
        return v

    def checkpoint_location(self, run_dir: Path) -> str:
        """Where a sweep in ``run_dir`` keeps checkpoints; an S3 store gets one prefix per run directory."""
        if self.checkpoints is None:
            return str((run_dir / "checkpoints").resolve())
        if self.checkpoints.startswith("s3://"):
            base = self.s3.url(self.checkpoints)
            path, _, query = base.partition("?")
            return f"{path.rstrip('/')}/{slug(run_dir.resolve().name)}" + (f"?{query}" if query else "")
        return str(Path(self.checkpoints).resolve())


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


class MLflowConfig(_Strict):
    tracking_uri: str = Field(description="an MLflow tracking server (http://host:5000) or store URI; credentials "
                              "belong in MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, not here")
    experiment: str | None = Field(default=None, description="MLflow experiment; default: the sweep's name")

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not re.match(r"^(https?|file|sqlite|postgresql|mysql|databricks)(\+[a-z0-9]+)?:", value.strip()):
            raise ValueError("expected an MLflow tracking URI such as http://127.0.0.1:5000, sqlite:///mlflow.db or "
                             "file:///path/mlruns")
        return value.strip()


class TrackingConfig(_Strict):
    mlflow: MLflowConfig | None = None


class SweepConfig(_Strict):
    name: str
    trainable: TrainableConfig
    metric: MetricConfig = Field(default_factory=MetricConfig)
    space: dict[str, Any] | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be empty; name the sweep, e.g. name: digits-mlp")
        return name

    @model_validator(mode="after")
    def _resolve(self) -> SweepConfig:
        from rungflow.tasks.trainables import TrainableError

        try:
            trainable_cls = self.trainable_class()
        except TrainableError as exc:  # a broken plugin: name it, no traceback
            raise ValueError(f"trainable.kind: {exc}") from None
        try:
            trainable_cls.Options(**self.trainable.options)
        except ValidationError as exc:
            raise ValueError(_one_line(exc, prefix="trainable.options")) from None
        if self.space is None and trainable_cls(self.trainable.options).default_space() is None:
            raise ValueError(f"space: trainable {self.trainable.kind!r} has no default space; give one under 'space'")
        if self.space is not None:
            try:
                space = SearchSpace.from_dict(self.space)
            except SpaceError as exc:
                raise ValueError(str(exc)) from None
            trainable_cls(self.trainable.options).check_space(space)
        lo, hi = self.budget_range()
        if trainable_cls.integer_budget:
            for key, value in (("min_budget", lo), ("max_budget", hi)):
                if not float(value).is_integer():
                    raise ValueError(
                        f"scheduler.{key} = {value:g}: {self.trainable.kind} trains whole {trainable_cls.budget_unit}; "
                        f"use a whole number, e.g. {max(1, round(value))}"
                    )
        if lo > hi:
            raise ValueError(
                f"scheduler.min_budget ({lo:g}) is above scheduler.max_budget ({hi:g}); lower min_budget or raise max_budget"
            )
        if self.scheduler.kind in ("sha", "hyperband", "asha", "median") and lo * self.scheduler.eta > hi + 1e-9 and lo != hi:
            raise ValueError(
                f"scheduler: max_budget/min_budget = {hi / lo:.3g} is below eta={self.scheduler.eta:g}, so there is only one "
                "rung; lower min_budget or use scheduler.kind: fifo"
            )
        if self.scheduler.kind == "median" and (self.scheduler.grace_budget or 0.0) > hi:
            raise ValueError(f"scheduler.grace_budget ({self.scheduler.grace_budget:g}) is above the full budget ({hi:g}), "
                             "so nothing could ever stop; lower it")
        if self.scheduler.kind == "pbt":
            self._check_pbt(trainable_cls, hi)
        return self

    def _check_pbt(self, trainable_cls: Any, hi: float) -> None:
        """Population-based training needs a trainable that resumes, an interval that fits, mutable mutations."""
        kind = self.trainable.kind
        if not trainable_cls.resumable:
            raise ValueError(f"scheduler.kind: pbt resumes every member from its checkpoint, and trainable {kind!r} "
                             "cannot resume from one; use another scheduler (e.g. asha) or a trainable that resumes")
        interval = self.scheduler.perturbation_interval
        if interval is not None and interval > hi:
            raise ValueError(f"scheduler.perturbation_interval ({interval:g}) is above scheduler.max_budget ({hi:g}): "
                             "not one generation would fit; lower it or raise max_budget")
        if interval is not None and trainable_cls.integer_budget and not float(interval).is_integer():
            raise ValueError(f"scheduler.perturbation_interval = {interval:g}: {kind} trains whole "
                             f"{trainable_cls.budget_unit}; use a whole number, e.g. {max(1, round(interval))}")
        if self.scheduler.burn_in is not None and self.scheduler.burn_in >= hi:
            raise ValueError(f"scheduler.burn_in ({self.scheduler.burn_in:g}) is not below the full budget ({hi:g}), "
                             "so nothing would ever be exploited; lower it")
        self.pbt_mutations()

    def pbt_mutations(self) -> list[str]:
        """The parameters population-based training may change: the configured ones, checked, or the default."""
        from rungflow.budgets.space import CategoricalParam

        space = self.search_space()
        trainable_cls = self.trainable_class()
        mutable = trainable_cls.mutable_params
        kind = self.trainable.kind
        allowed = [n for n in space.names if mutable is None or n in mutable]
        parents = {parent for p in space.params for parent, _ in p.when}
        if self.scheduler.mutations is None:
            names = [p.name for p in space.params if not isinstance(p, CategoricalParam) and p.name in allowed]
            if not names:
                raise ValueError(f"scheduler.mutations: trainable {kind!r} declares no float or int parameter of the "
                                 f"space that may change on resume (it allows {sorted(mutable or ())}); name the ones "
                                 "to mutate, or use another scheduler")
            return names
        for name in self.scheduler.mutations:
            if name not in space.names:
                raise ValueError(f"scheduler.mutations: {name!r} is not a parameter of the space "
                                 f"({', '.join(space.names)}); fix the name or add it to the space")
            if name not in allowed:
                raise ValueError(f"scheduler.mutations: {name!r} is structural for trainable {kind!r} (it cannot change "
                                 f"when a trial resumes); mutate only {', '.join(allowed) or 'nothing'}")
            if name in parents:
                raise ValueError(f"scheduler.mutations: {name!r} decides which other parameters are active; a clone's "
                                 "checkpoint cannot follow that change, so leave it out")
        if not self.scheduler.mutations:
            raise ValueError("scheduler.mutations: empty; name at least one parameter or remove the key for the default")
        return list(self.scheduler.mutations)

    def scheduler_options(self) -> dict[str, Any]:
        """The options only this config's scheduler reads, for :func:`budgets.schedulers.make_scheduler`."""
        s = self.scheduler
        if s.kind == "median":
            return {"grace_budget": s.grace_budget, "min_samples": s.min_samples}
        if s.kind == "pbt":
            return {"population": s.population, "perturbation_interval": s.perturbation_interval,
                    "quantile_fraction": s.quantile_fraction, "resample_probability": s.resample_probability,
                    "burn_in": s.burn_in, "mutations": self.pbt_mutations(), "space": self.search_space(),
                    "seed": self.search.seed}
        return {}

    # Resolved views ---------------------------------------------------------------------------
    def trainable_class(self):
        from rungflow.tasks.trainables import get_trainable_class

        return get_trainable_class(self.trainable.kind)

    def metric_name(self) -> str:
        return self.metric.name or self.trainable_class().metric

    def mode(self) -> Literal["max", "min"]:
        return self.metric.mode or self.trainable_class().mode

    def budget_range(self) -> tuple[float, float]:
        default_lo, default_hi = self.trainable_class().default_budget
        hi = self.scheduler.max_budget if self.scheduler.max_budget is not None else default_hi
        lo = self.scheduler.min_budget if self.scheduler.min_budget is not None else min(default_lo, hi)
        return float(lo), float(hi)

    def search_space(self) -> SearchSpace:
        if self.space is not None:
            return SearchSpace.from_dict(self.space)
        space = self.trainable_class()(self.trainable.options).default_space()
        assert space is not None  # checked in _resolve
        return space

    def run_dir(self) -> Path:
        return Path(self.storage.run_dir or Path("runs") / slug(self.name))

    def optuna_url(self) -> str:
        return self.storage.optuna_url or f"sqlite:///{(self.run_dir() / 'optuna.db').resolve()}"


# Sections a resumed sweep may change: caps and where trials run. Everything else decides which
# trials exist and in what order, so a resume that changed it would not replay the sweep that ran.
RESUMABLE: tuple[str, ...] = ("budget", "runtime", "storage", "ui", "tracking")


def resume_conflicts(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose value differs between the run directory's config and ``new``, outside RESUMABLE."""
    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, Mapping):
            out: dict[str, Any] = {}
            for k, v in data.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: data}

    a, b = flat(dict(saved)), flat(dict(new))
    keys = sorted(k for k in set(a) | set(b) if k.split(".")[0] not in RESUMABLE and a.get(k) != b.get(k))
    return [f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in keys]


SLUG_MAX = 48


def slug(text: str) -> str:
    """Lowercase letters, digits and dashes: safe as a directory name and as a Prefect artifact key.

    Accents are folded (``Café`` → ``cafe``). When folding loses the name (``实验``) or it is cut to
    ``SLUG_MAX`` characters, a hash of the original is appended so distinct names keep distinct keys.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    folded = decomposed.encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    if not base:
        return f"sweep-{digest}" if text.strip() else "sweep"
    lost = any(ch.isalnum() and not ch.isascii() for ch in decomposed)
    if lost or len(base) > SLUG_MAX:
        return f"{base[: SLUG_MAX - 9].rstrip('-')}-{digest}"
    return base


def _one_line(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        where = ".".join(p for p in (prefix, loc) if p)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = f"is required; add `{loc.split('.')[-1]}:` to the config"
        value = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(value, Mapping) else f" = {value!r}"
        parts.append(f"{where}{shown}: {msg}" if where else msg)
    return "; ".join(parts)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}: empty key in the path; use e.g. --set scheduler.eta=3")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if key not in node or node[key] is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is a value, not a section")
        node = node[key]
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; the value is read as YAML (so 3, 0.5, true, [a, b] work)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set scheduler.eta=4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    return data


def validate(data: Mapping[str, Any]) -> SweepConfig:
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path to a sweep YAML, e.g. examples/digits.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} is a directory, not a file; pass the path to a sweep YAML inside it")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; save the sweep YAML as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc.strerror}); check its permissions") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping with at least 'name' and 'trainable'")
    data = apply_overrides(data, list(overrides or []))
    trainable = data.get("trainable")
    if isinstance(trainable, dict) and "function" in trainable:
        # A function's file is relative to the config, as a prefect.yaml entrypoint is to its project.
        options = trainable.setdefault("options", {}) or {}
        trainable["options"] = options
        if isinstance(options, dict):
            options.setdefault("base_dir", str(path.resolve().parent))
    return validate(data)
