"""The sections that decide which trials exist and in what order: trainable, metric, search, scheduler."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_serializer, field_validator, model_validator

from rungflow.budgets.schedulers import AshaType, SchedulerKind
from rungflow.budgets.search_registry import SEARCHERS
from rungflow.budgets.space import CategoricalParam, SearchSpace
from rungflow.config.errors import _Strict


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
    cost_aware: bool | Literal["auto"] = Field(
        default=False, description="tpe/bohb: rank candidates by expected improvement per predicted GPU-hour; auto: "
                                   "on where the space chooses among model families (resolve_cost_aware)")
    _cost_aware_reason: str | None = PrivateAttr(default=None)

    @field_validator("cost_aware", mode="before")
    @classmethod
    def _cost_aware_setting(cls, v: Any) -> Any:
        if isinstance(v, bool) or v == "auto":
            return v
        raise ValueError("must be true, false or auto (auto: on where the space chooses among model families); "
                         "e.g. search.cost_aware: auto")

    @field_serializer("cost_aware")
    def _cost_aware_as_written(self, value: bool) -> bool | str:
        # config.json keeps auto, so a resume or a copy of the config resolves it again, reason and all.
        return "auto" if self._cost_aware_reason is not None else value

    @property
    def cost_aware_reason(self) -> str:
        """Why cost-aware search is on or off: the rule's reason where ``auto`` chose, else the config's word."""
        return self._cost_aware_reason or f"search.cost_aware: {str(self.cost_aware).lower()} in the config"

    def resolve_cost_aware(self, space: SearchSpace) -> None:
        """Turn ``auto`` into on or off for this space, before anything is spent; called once the space is known."""
        if self.cost_aware == "auto":
            on, reason = cost_aware_rule(self.algorithm, space)
            self.cost_aware = on
            self._cost_aware_reason = reason

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
        if self.cost_aware is True and self.algorithm not in ("tpe", "bohb"):
            raise ValueError(
                f"search.cost_aware: only tpe and bohb rank candidates by cost, not {self.algorithm!r}; "
                "use search.algorithm=tpe or remove cost_aware"
            )
        return self


def cost_aware_rule(algorithm: str, space: SearchSpace) -> tuple[bool, str]:
    """``search.cost_aware: auto``: on where the space chooses among model families, with the reason shown.

    A choice of family is a choice of cost known before anything runs: on tables a linear model's budget unit costs
    a hundredth of a boosted one's, and the families' defaults differ more than any parameter within one. Within one
    family the spread depends on the data and the ranges, so there the rule stays off. What it did on real tables,
    and why ``automl`` leaves it off: docs/automl.md, "Cost-aware search".
    """
    if algorithm not in ("tpe", "bohb"):
        return False, f"search.cost_aware: auto -> off: {algorithm} search has no acquisition to rank by cost"
    family = space["family"] if "family" in space.names else None
    if isinstance(family, CategoricalParam) and len(family.choices) >= 2:
        return True, (f"search.cost_aware: auto -> on: the space chooses among {len(family.choices)} model families, "
                      "whose costs per budget unit differ")
    return False, "search.cost_aware: auto -> off: the space holds one model family"


# Options only one scheduler reads: setting one for another scheduler is a mistake worth naming.
_SCHEDULER_OPTIONS = {
    ("median",): ("grace_budget", "min_samples"),
    ("pbt",): ("population", "perturbation_interval", "quantile_fraction", "resample_probability", "mutations", "burn_in"),
    ("hyperband", "sha"): ("max_open_brackets",),
    ("asha",): ("asha_type",),
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
    max_open_brackets: int | None = Field(
        default=None, description="hyperband, sha: brackets that may train at once (default: as many as free slots "
                                  "take; 1 runs them one after another)")

    asha_type: str | None = Field(
        default=None, description="asha: promotion (default: a trial climbs once it ranks in its rung's top 1/eta) or "
                                  "stopping (Ray Tune's ASHAScheduler: a trial runs on unless it falls below the "
                                  "rung's cutoff)")

    @field_validator("asha_type")
    @classmethod
    def _asha_type(cls, v: str | None) -> str | None:
        if v is not None and v not in tuple(AshaType):
            raise ValueError("must be promotion (the default) or stopping (Ray Tune's ASHAScheduler); "
                             "e.g. scheduler.asha_type: stopping")
        return v

    @field_validator("max_open_brackets")
    @classmethod
    def _open_brackets(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1 (1 runs the brackets one after another); remove it to fill free slots")
        return v

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
        for kinds, names in _SCHEDULER_OPTIONS.items():
            for name in names:
                if self.kind not in kinds and getattr(self, name) is not None:
                    readers = " or ".join(kinds)
                    raise ValueError(f"scheduler.{name}: only scheduler.kind: {readers} reads it, not {self.kind}; "
                                     f"remove it or use kind: {kinds[0]}")
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

