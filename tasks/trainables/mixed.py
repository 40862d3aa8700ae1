"""Several model families in one sweep: the config's ``family`` picks the family, ``FAMILY.param`` its knobs.

The search space is conditional: ``family`` is a categorical, and each family's parameters are
active only when it is chosen (``when: {family: hgb}``), so TPE/BOHB learn which family pays and,
within it, which settings. Budgets are in common units: family budget = units x ``scale[family]``
(by default 27 units = 270 boosting iterations or rounds = 108 trees = 100% of rows = 27 epochs = 54 s of
AutoGluon), so Hyperband compares families at equal fractions of their full budget.

YAML, either the nested form (the space is built from it)::

    trainable:
      kind: mixed
      options:
        data: {source: sklearn:breast_cancer}
        families:
          hgb: {}                     # the family's default space
          linear: {C: {type: float, low: 0.01, high: 100, log: true}}
          torch_mlp: {}

or the flat form under ``space:`` with explicit conditions::

    space:
      family: {type: categorical, choices: [hgb, linear]}
      hgb.learning_rate: {type: float, low: 0.01, high: 0.5, log: true, when: {family: hgb}}
      linear.C: {type: float, low: 0.001, high: 1000, log: true, when: {family: linear}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator, model_validator

from rungflow.budgets.space import CategoricalParam, SearchSpace, SpaceError
from rungflow.tasks.models import FittedModel
from rungflow.tasks.trainables.base import TrainableError, TrainableOptions, register
from rungflow.tasks.trainables.tabular import FamilyFit, TabularOptions, TabularTrainable

__all__ = ["MixedOptions", "MixedTrainable", "FAMILIES", "DEFAULT_SCALE", "installed_default_families"]

FAMILIES: tuple[str, ...] = ("hgb", "random_forest", "linear", "torch_mlp", "xgboost", "lightgbm", "catboost", "autogluon",
                             "autosklearn")
# The boosting libraries cost about what hgb does on small tables (a full budget in 0.05-3 s on one core).
DEFAULT_FAMILIES: tuple[str, ...] = ("hgb", "random_forest", "linear", "torch_mlp", "xgboost", "lightgbm", "catboost")
# Family budget units per mixed unit: 27 mixed units is each family's full default budget.
DEFAULT_SCALE: dict[str, float] = {
    "hgb": 10.0, "random_forest": 4.0, "linear": 100.0 / 27.0, "torch_mlp": 1.0, "autogluon": 2.0, "autosklearn": 10.0,
    "xgboost": 10.0, "lightgbm": 10.0, "catboost": 10.0,
}


def installed_default_families() -> list[str]:
    """The default families whose libraries are installed: a user without an extra still gets a working sweep."""
    from rungflow.tasks.trainables import missing_extra

    return [name for name in DEFAULT_FAMILIES if missing_extra(name) is None]


class MixedOptions(TabularOptions):
    """``families``: which families to search (list) or family -> its space ({} = the family's default);
    ``scale``: family budget units per sweep budget unit; ``family_options``: extra options per family."""

    families: dict[str, dict[str, Any] | None] | list[str] = Field(default_factory=lambda: installed_default_families())
    scale: dict[str, float] = Field(default_factory=dict)
    family_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("families")
    @classmethod
    def _known(cls, families: Any) -> Any:
        names = list(families)
        if not names:
            raise ValueError(f"name at least one family, e.g. [{', '.join(DEFAULT_FAMILIES)}]")
        unknown = [n for n in names if n not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; use some of {', '.join(FAMILIES)}")
        if isinstance(families, dict):
            for name, space in families.items():
                if space:
                    try:
                        SearchSpace.from_dict(space)
                    except SpaceError as exc:
                        raise ValueError(f"families.{name}: {exc}") from None
        return families

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: dict[str, float]) -> dict[str, float]:
        for name, value in scale.items():
            if name not in FAMILIES:
                raise ValueError(f"scale.{name}: unknown family; use some of {', '.join(FAMILIES)}")
            if not value > 0:
                raise ValueError(f"scale.{name} = {value}: must be a positive number of family budget units per sweep unit")
        return scale

    @model_validator(mode="after")
    def _family_options(self) -> MixedOptions:
        from rungflow.tasks.trainables import get_trainable_class

        for name, extra in self.family_options.items():
            if name not in FAMILIES:
                raise ValueError(f"family_options.{name}: unknown family; use some of {', '.join(FAMILIES)}")
            if "data" in extra:
                raise ValueError(f"family_options.{name}.data: every family shares the top-level data; remove it here")
            try:
                get_trainable_class(name).Options(data=self.data, **extra)
            except ValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"family_options.{name}.{detail}") from None
        return self

    def family_names(self) -> list[str]:
        return list(self.families)


@register
class MixedTrainable(TabularTrainable):
    """Dispatches each trial to the family its config names; the score is that family's ``val_score``."""

    kind: ClassVar[str] = "mixed"
    budget_unit: ClassVar[str] = "units"  # x scale[family]: 10 boosting iterations, 4 trees, 1 epoch, 2 s ...
    default_budget: ClassVar[tuple[float, float]] = (1, 27)
    Options: ClassVar[type[TrainableOptions]] = MixedOptions
    options: MixedOptions

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._members: dict[str, TabularTrainable] = {}

    def member(self, family: str) -> TabularTrainable:
        """The family's own trainable, built once with the shared data and its family_options."""
        from rungflow.tasks.trainables import get_trainable_class

        if family not in self.options.family_names():
            raise TrainableError(f"mixed: config family={family!r} is not among trainable.options.families {self.options.family_names()}")
        if family not in self._members:
            opts = {"data": self.options.data.model_dump(), **self.options.family_options.get(family, {})}
            self._members[family] = get_trainable_class(family)(opts)  # type: ignore[assignment]
        return self._members[family]

    def scale(self, family: str) -> float:
        return float(self.options.scale.get(family, DEFAULT_SCALE[family]))

    def default_space(self) -> SearchSpace:
        families = self.options.families
        params: list[Any] = [CategoricalParam("family", tuple(self.options.family_names()))]
        for name in self.options.family_names():
            custom = families.get(name) if isinstance(families, dict) else None
            space = SearchSpace.from_dict(custom) if custom else self.member(name).default_space()
            if space is None:
                continue  # e.g. auto-sklearn: it searches its own space
            for p in space.params:
                when = (("family", (name,)),) + tuple((f"{name}.{parent}", allowed) for parent, allowed in p.when)
                params.append(dataclasses.replace(p, name=f"{name}.{p.name}", when=when))
        return SearchSpace(tuple(params))

    def check_space(self, space: SearchSpace) -> None:
        families = self.options.family_names()
        if "family" not in space.names or not isinstance(space["family"], CategoricalParam):
            raise ValueError(f"space.family: a mixed sweep needs a categorical 'family' with choices among {families}")
        unknown = [c for c in space["family"].choices if c not in families]
        if unknown:
            raise ValueError(f"space.family: choices {unknown} are not in trainable.options.families {families}; add them there or drop them here")
        for name in space.names:
            if name != "family" and name.split(".", 1)[0] not in space["family"].choices:
                raise ValueError(f"space.{name}: in a mixed sweep name family parameters FAMILY.param (e.g. hgb.learning_rate) "
                                 "with a family among space.family's choices")

    @staticmethod
    def split(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """(family, that family's own config) from a mixed config."""
        if "family" not in config:
            raise TrainableError(f"mixed: config has no 'family' ({dict(config)}); the space must have a categorical named family")
        family = str(config["family"])
        prefix = family + "."
        return family, {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        family, own = self.split(config)
        scale = self.scale(family)
        fit = self.member(family).fit_to_budget(own, budget * scale, dataset, device=device, seed=seed, checkpoint=checkpoint)
        fit.model.config = dict(config)
        return FamilyFit(fit.model, fit.budget_reached / scale, fit.budget_trained / scale, fit.checkpoint,
                         {**fit.metrics, "family_budget": float(fit.budget_reached)})

    def discard(self, model: FittedModel) -> None:
        if model.family in self._members:
            self._members[model.family].discard(model)
