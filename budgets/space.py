"""Search spaces: typed parameters that sample, enumerate and map onto Optuna distributions.

A space is plain data. Searchers read it; nothing here runs a trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "FloatParam",
    "IntParam",
    "CategoricalParam",
    "Param",
    "SearchSpace",
    "SpaceError",
]


class SpaceError(ValueError):
    """A search space that cannot be searched; the message names the parameter and the fix."""


N = TypeVar("N", int, float)


@dataclass(frozen=True)
class _Range(Generic[N]):
    """A numeric parameter: ``low`` to ``high`` inclusive, sampled evenly or on a log scale."""

    name: str
    low: N
    high: N
    log: bool = False
    when: Condition = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"space.{self.name}: bounds must be finite numbers, got low={self.low}, high={self.high}")
        if self.low > self.high:
            raise SpaceError(f"space.{self.name}: low={self.low} is above high={self.high}; swap them")
        if self.log and self.low <= 0:
            raise SpaceError(f"space.{self.name}: log scale needs low > 0, got low={self.low}; raise low or set log: false")


@dataclass(frozen=True)
class FloatParam(_Range[float]):
    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def grid(self, points: int) -> list[float]:
        if self.low == self.high:
            return [float(self.low)]
        if self.log:
            return [float(v) for v in np.geomspace(self.low, self.high, points)]
        return [float(v) for v in np.linspace(self.low, self.high, points)]

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= float(value) <= self.high


@dataclass(frozen=True)
class IntParam(_Range[int]):
    def __post_init__(self) -> None:
        if int(self.low) != self.low or int(self.high) != self.high:
            raise SpaceError(
                f"space.{self.name}: int bounds must be whole numbers, got low={self.low}, high={self.high}; "
                "use type: float for fractional values"
            )
        super().__post_init__()

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            # Sample in log space over [low-0.5, high+0.5) so each integer gets its log-width share.
            lo, hi = math.log(self.low - 0.5 if self.low > 0.5 else self.low), math.log(self.high + 0.5)
            value = int(round(math.exp(rng.uniform(lo, hi))))
        else:
            value = int(rng.integers(self.low, self.high + 1))
        return min(max(value, self.low), self.high)

    def grid(self, points: int) -> list[int]:
        span = self.high - self.low + 1
        if span <= points:
            return list(range(self.low, self.high + 1))
        raw = np.geomspace(self.low, self.high, points) if self.log else np.linspace(self.low, self.high, points)
        return sorted({int(round(v)) for v in raw})

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and self.low <= int(value) <= self.high


@dataclass(frozen=True)
class CategoricalParam:
    name: str
    choices: tuple[Any, ...]
    when: Condition = ()

    def __post_init__(self) -> None:
        if len(self.choices) == 0:
            raise SpaceError(f"space.{self.name}: categorical has no choices; give at least one under 'choices'")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise SpaceError(f"space.{self.name}: categorical choices repeat ({list(self.choices)}); list each once")

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def grid(self, points: int) -> list[Any]:
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        return value in self.choices


Param = FloatParam | IntParam | CategoricalParam

# A parameter's activation condition: ((parent, allowed values), ...), all of which must hold; () = always active.
Condition = tuple[tuple[str, tuple[Any, ...]], ...]


def is_active(param: Param, config: Mapping[str, Any]) -> bool:
    """Whether ``param`` is active given the values already chosen in ``config`` (parents come first)."""
    return all(parent in config and config[parent] in allowed for parent, allowed in param.when)


def _condition_from(name: str, raw: Any) -> Condition:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise SpaceError(f"space.{name}.when: expected a mapping of parent parameter to its value(s), e.g. when: {{family: hgb}}")
    out = []
    for parent, values in raw.items():
        allowed = tuple(values) if isinstance(values, Sequence) and not isinstance(values, str) else (values,)
        if not allowed:
            raise SpaceError(f"space.{name}.when.{parent}: empty list of values; give the value(s) that activate {name}")
        out.append((str(parent), allowed))
    return tuple(out)


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of named parameters."""

    params: tuple[Param, ...]
    _by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.params:
            raise SpaceError("space: no parameters to search; give at least one under 'space' or pick a trainable with a default space")
        names = [p.name for p in self.params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpaceError(f"space: parameter names repeat: {duplicates}; give each parameter once")
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params})
        seen: dict[str, Param] = {}
        for p in self.params:
            for parent, allowed in p.when:
                if parent == p.name:
                    raise SpaceError(f"space.{p.name}.when: a parameter cannot depend on itself")
                if parent not in self._by_name:
                    raise SpaceError(f"space.{p.name}.when: unknown parent {parent!r}; condition on a categorical declared in the space")
                if parent not in seen:
                    raise SpaceError(f"space.{p.name}.when: parent {parent!r} must be declared before {p.name!r}; move it up")
                parent_param = seen[parent]
                if not isinstance(parent_param, CategoricalParam):
                    raise SpaceError(f"space.{p.name}.when: parent {parent!r} must be categorical, it is {type(parent_param).__name__}")
                unknown = [v for v in allowed if v not in parent_param.choices]
                if unknown:
                    raise SpaceError(
                        f"space.{p.name}.when.{parent}: {unknown} not among {parent}'s choices {list(parent_param.choices)}; fix the value"
                    )
            seen[p.name] = p
        if self.conditional:
            # A condition that can never hold leaves the parameter dead: almost certainly a typo.
            for p in self.params:
                if p.when and not any(is_active(p, c) for c in _parent_assignments(self, p)):
                    raise SpaceError(f"space.{p.name}.when: can never be active (its parents' conditions exclude each other)")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def conditional(self) -> bool:
        """Whether some parameter is active only for some values of another (e.g. a model family's knobs)."""
        return any(p.when for p in self.params)

    def active(self, config: Mapping[str, Any]) -> list[Param]:
        """The parameters active for ``config`` (in declaration order)."""
        return [p for p in self.params if is_active(p, config)]

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.params)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One configuration; inactive parameters are left out (and draw nothing from ``rng``)."""
        config: dict[str, Any] = {}
        for p in self.params:
            if is_active(p, config):
                config[p.name] = p.sample(rng)
        return config

    def contains(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` sets exactly the active parameters, each to a valid value."""
        chosen: dict[str, Any] = {}
        for p in self.params:
            if is_active(p, chosen):
                if p.name not in config or not p.contains(config[p.name]):
                    return False
                chosen[p.name] = config[p.name]
        return set(config) == set(chosen)

    def grid(self, points_per_numeric: int) -> list[dict[str, Any]]:
        """The grid, numeric parameters cut into ``points_per_numeric`` values, in a fixed order.

        In a conditional space each branch is its own Cartesian grid: a parameter varies only in the
        configurations where it is active.
        """
        configs: list[dict[str, Any]] = [{}]
        for p in self.params:
            values = p.grid(points_per_numeric)
            configs = [{**c, p.name: v} for c in configs for v in values] if not p.when else [
                out for c in configs for out in ([{**c, p.name: v} for v in values] if is_active(p, c) else [c])
            ]
        return configs

    def describe(self) -> str:
        """One line per parameter, conditional ones indented under the condition that activates them."""
        lines = []
        for p in self.params:
            spec = self.to_dict()[p.name]
            body = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("type", "when"))
            cond = " and ".join(f"{k} in {list(v)}" if len(v) > 1 else f"{k}={v[0]}" for k, v in p.when)
            lines.append(f"{'  ' if p.when else ''}{p.name}: {spec['type']} {body}{f'  (when {cond})' if cond else ''}")
        return "\n".join(lines)

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions for each parameter (imported lazily: the rest of the core does not need optuna)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for p in self.params:
            if isinstance(p, FloatParam):
                out[p.name] = FloatDistribution(p.low, p.high, log=p.log)
            elif isinstance(p, IntParam):
                out[p.name] = IntDistribution(p.low, p.high, log=p.log)
            else:
                out[p.name] = CategoricalDistribution(list(p.choices))
        return out

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """Build from the YAML form ``{name: {type: float|int|categorical, low, high, log, choices}}``."""
        if not isinstance(spec, Mapping):
            raise SpaceError(f"space: expected a mapping of parameter name to its spec, got {type(spec).__name__}")
        params: list[Param] = []
        for name, p in spec.items():
            if not isinstance(p, Mapping):
                raise SpaceError(
                    f"space.{name}: expected a mapping like {{type: float, low: 0.001, high: 0.1, log: true}}, got {p!r}"
                )
            kind = p.get("type")
            extra = set(p) - {"type", "low", "high", "log", "choices", "when"}
            if extra:
                raise SpaceError(f"space.{name}: unknown keys {sorted(extra)}; allowed: type, low, high, log, choices, when")
            when = _condition_from(name, p.get("when"))
            if kind in ("float", "int"):
                if "low" not in p or "high" not in p:
                    raise SpaceError(f"space.{name}: {kind} parameter needs both 'low' and 'high'")
                try:
                    low, high = float(p["low"]), float(p["high"])
                except (TypeError, ValueError):
                    raise SpaceError(f"space.{name}: low/high must be numbers, got low={p['low']!r}, high={p['high']!r}") from None
                log = bool(p.get("log", False))
                if kind == "float":
                    params.append(FloatParam(name, low, high, log, when))
                else:
                    params.append(IntParam(name, int(low) if low.is_integer() else low, int(high) if high.is_integer() else high, log, when))  # type: ignore[arg-type]
            elif kind == "categorical":
                choices = p.get("choices")
                if not isinstance(choices, Sequence) or isinstance(choices, str):
                    raise SpaceError(f"space.{name}: categorical needs a list under 'choices', got {choices!r}")
                params.append(CategoricalParam(name, tuple(choices), when))
            else:
                raise SpaceError(f"space.{name}: unknown type {kind!r}; use one of float, int, categorical")
        return cls(tuple(params))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for p in self.params:
            if isinstance(p, CategoricalParam):
                out[p.name] = {"type": "categorical", "choices": list(p.choices)}
            else:
                out[p.name] = {"type": "float" if isinstance(p, FloatParam) else "int", "low": p.low, "high": p.high, "log": p.log}
            if p.when:
                out[p.name]["when"] = {k: list(v) if len(v) > 1 else v[0] for k, v in p.when}
        return out


def _parent_assignments(space: SearchSpace, param: Param) -> list[dict[str, Any]]:
    """Every combination of the choices of ``param``'s ancestors that are themselves reachable."""
    ancestors: set[str] = set()
    frontier = [parent for parent, _ in param.when]
    while frontier:
        name = frontier.pop()
        if name not in ancestors:
            ancestors.add(name)
            frontier.extend(parent for parent, _ in space[name].when)
    assignments: list[dict[str, Any]] = [{}]
    for p in space.params:
        if p is param:
            break
        if p.name in ancestors and isinstance(p, CategoricalParam):
            assignments = [
                out for a in assignments for out in ([{**a, p.name: v} for v in p.choices] if is_active(p, a) else [a])
            ]
    return assignments
