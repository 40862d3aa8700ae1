"""Search spaces: typed parameters that sample, enumerate and map onto Optuna distributions.

A space is plain data. Searchers read it; nothing here runs a trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_bounds(self.name, self.low, self.high, self.log)

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
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if int(self.low) != self.low or int(self.high) != self.high:
            raise SpaceError(
                f"space.{self.name}: int bounds must be whole numbers, got low={self.low}, high={self.high}; "
                "use type: float for fractional values"
            )
        _check_bounds(self.name, self.low, self.high, self.log)

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


def _check_bounds(name: str, low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpaceError(f"space.{name}: bounds must be finite numbers, got low={low}, high={high}")
    if low > high:
        raise SpaceError(f"space.{name}: low={low} is above high={high}; swap them")
    if log and low <= 0:
        raise SpaceError(f"space.{name}: log scale needs low > 0, got low={low}; raise low or set log: false")


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

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.params)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {p.name: p.sample(rng) for p in self.params}

    def contains(self, config: Mapping[str, Any]) -> bool:
        return set(config) == set(self._by_name) and all(p.contains(config[p.name]) for p in self.params)

    def grid(self, points_per_numeric: int) -> list[dict[str, Any]]:
        """The Cartesian grid, numeric parameters cut into ``points_per_numeric`` values, in a fixed order."""
        axes: list[list[tuple[str, Any]]] = [[(p.name, v) for v in p.grid(points_per_numeric)] for p in self.params]
        configs: list[dict[str, Any]] = [{}]
        for axis in axes:
            configs = [{**c, k: v} for c in configs for k, v in axis]
        return configs

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
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> "SearchSpace":
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
            extra = set(p) - {"type", "low", "high", "log", "choices"}
            if extra:
                raise SpaceError(f"space.{name}: unknown keys {sorted(extra)}; allowed: type, low, high, log, choices")
            if kind in ("float", "int"):
                if "low" not in p or "high" not in p:
                    raise SpaceError(f"space.{name}: {kind} parameter needs both 'low' and 'high'")
                try:
                    low, high = float(p["low"]), float(p["high"])
                except (TypeError, ValueError):
                    raise SpaceError(f"space.{name}: low/high must be numbers, got low={p['low']!r}, high={p['high']!r}") from None
                log = bool(p.get("log", False))
                if kind == "float":
                    params.append(FloatParam(name, low, high, log))
                else:
                    params.append(IntParam(name, int(low) if low.is_integer() else low, int(high) if high.is_integer() else high, log))  # type: ignore[arg-type]
            elif kind == "categorical":
                choices = p.get("choices")
                if not isinstance(choices, Sequence) or isinstance(choices, str):
                    raise SpaceError(f"space.{name}: categorical needs a list under 'choices', got {choices!r}")
                params.append(CategoricalParam(name, tuple(choices)))
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
        return out
