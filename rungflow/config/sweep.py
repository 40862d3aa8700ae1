"""The whole sweep config: its sections checked against each other and against the trainable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from rungflow.budgets.space import SearchSpace, SpaceError
from rungflow.config.budget import BudgetConfig
from rungflow.config.ensemble import EnsembleConfig
from rungflow.config.errors import _one_line, _Strict
from rungflow.config.history import HistoryConfig
from rungflow.config.runtime import RuntimeConfig, UiConfig
from rungflow.config.search import MetricConfig, SchedulerConfig, SearchConfig, TrainableConfig
from rungflow.config.storage import StorageConfig, TrackingConfig, slug


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
    history: HistoryConfig | None = None
    ensemble: EnsembleConfig | None = None

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
        self.search.resolve_cost_aware(self.search_space())  # auto: on or off, and why, before anything is spent
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
        if self.ensemble is not None:
            if not hasattr(trainable_cls, "fit"):  # the tabular families' refit, asked by duck type as fit_model does
                raise ValueError(f"ensemble: trainable {self.trainable.kind!r} saves no model to ensemble; remove the "
                                 "ensemble section or use a tabular family (e.g. mixed)")
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
        if s.kind in ("hyperband", "sha"):
            return {"max_open_brackets": s.max_open_brackets}
        if s.kind == "asha":
            return {"asha_type": s.asha_type}
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

