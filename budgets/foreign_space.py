"""Search spaces written for Ray Tune or Optuna, as rungflow spaces (the YAML form of :class:`SearchSpace`).

Plain data in, plain data out: Ray Tune's sampling objects are read by their class and attributes, never
imported, so the core stays free of Ray. Two sources:

- a Ray Tune ``param_space``: nested dicts whose leaves are samplers (``tune.uniform`` ...), grid searches
  (``{"grid_search": [...]}``) or constants. Parameters are named by their path (``"model/lr"``, Ray's own
  flattening); constants and the nesting live in a *layout* that :func:`materialize` fills back in;
- the paths an Optuna objective took when it was probed (each a list of ``(name, spec, value)`` in the order
  it suggested them): parameters seen only under some values of a categorical become conditional on it.

Discrete ranges (``tune.quniform``, ``suggest_int(step=2)``...) become categorical choices when they have at
most :data:`MAX_DISCRETE_CHOICES` values (the searcher then proposes exactly the values the code can take);
wider ones stay numeric and are snapped to the step by :func:`materialize` / :func:`snap`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rungflow.budgets.space import SearchSpace, SpaceError

__all__ = ["ForeignSpace", "tune_param_space", "objective_space", "materialize", "snap", "discrete_spec",
           "MAX_DISCRETE_CHOICES", "SUPPORTED_TUNE_SAMPLERS", "PARAM_MARKER"]

MAX_DISCRETE_CHOICES = 64
PARAM_MARKER = "$rungflow_param"
SUPPORTED_TUNE_SAMPLERS = ("tune.uniform", "quniform", "loguniform", "qloguniform", "randint", "qrandint",
                           "lograndint", "qlograndint", "choice", "grid_search", "constants", "nested dicts")


@dataclass(frozen=True)
class ForeignSpace:
    """A space in rungflow's YAML form, plus how to rebuild the config the user's code expects.

    ``layout`` is the original nesting with constants kept and each searched leaf replaced by
    ``{PARAM_MARKER: name}``; ``steps`` maps a numeric parameter to the step its values are snapped to.
    """

    space: dict[str, dict[str, Any]]
    layout: Any = None
    steps: dict[str, float] = field(default_factory=dict)
    grid: tuple[str, ...] = ()


def discrete_spec(name: str, kind: str, low: float, high: float, step: float, log: bool = False) -> tuple[dict[str, Any], float | None]:
    """The spec of a range in steps of ``step``: categorical when narrow, else numeric with a step to snap to."""
    if step <= 0:
        raise SpaceError(f"space.{name}: step/q = {step:g} must be positive; give a positive step")
    count = math.floor((high - low) / step + 1e-9) + 1
    if count < 1:
        raise SpaceError(f"space.{name}: no multiple of {step:g} lies in [{low:g}, {high:g}]; widen the range or lower the step")
    if not log and count <= MAX_DISCRETE_CHOICES:
        values = [low + i * step for i in range(count)]
        values = [int(round(v)) if kind == "int" else float(round(v, 12)) for v in values]
        return {"type": "categorical", "choices": values}, None
    return {"type": kind, "low": low, "high": high, "log": log}, step


def snap(value: Any, step: float | None, low: float | None = None) -> Any:
    """``value`` rounded to the nearest multiple of ``step`` (counted from ``low`` when given)."""
    if step is None or not isinstance(value, (int, float)):
        return value
    base = low or 0.0
    snapped = base + round((value - base) / step) * step
    return int(round(snapped)) if isinstance(value, int) else float(snapped)


# Ray Tune ------------------------------------------------------------------------------------------

def _sampler_name(domain: Any) -> tuple[str, float | None]:
    """(``uniform``/``loguniform``/``normal``/..., q or None) of a Ray Tune domain's sampler."""
    sampler = domain.get_sampler() if hasattr(domain, "get_sampler") else getattr(domain, "sampler", None)
    q = None
    if type(sampler).__name__ == "Quantized":
        q = float(sampler.q)
        sampler = sampler.get_sampler()
    return type(sampler).__name__.lstrip("_").lower(), q


def _tune_leaf(name: str, value: Any) -> tuple[dict[str, Any], float | None] | None:
    """The spec of one Ray Tune sampler, or None when ``value`` is a constant."""
    kind = type(value).__name__
    module = type(value).__module__ or ""
    if not module.startswith("ray.tune"):
        return None
    if kind == "Categorical":
        return {"type": "categorical", "choices": list(value.categories)}, None
    if kind in ("Float", "Integer"):
        sampler, q = _sampler_name(value)
        if sampler not in ("uniform", "loguniform"):
            raise SpaceError(f"param_space.{name}: Ray Tune's {sampler} sampler (tune.randn/qrandn) has no rungflow "
                             f"equivalent; use one of {', '.join(SUPPORTED_TUNE_SAMPLERS)}")
        log = sampler == "loguniform"
        low, high = float(value.lower), float(value.upper)
        if kind == "Integer":
            # Ray's randint/lograndint exclude the upper bound; their quantized forms include it.
            high = high if q is not None else high - 1
            if q is not None:
                return discrete_spec(name, "int", math.ceil(low / q) * q, math.floor(high / q) * q, q, log)
            return {"type": "int", "low": int(low), "high": int(high), "log": log}, None
        if q is not None:
            return discrete_spec(name, "float", math.ceil(low / q) * q, math.floor(high / q) * q, q, log)
        return {"type": "float", "low": low, "high": high, "log": log}, None
    if kind == "Function":
        raise SpaceError(f"param_space.{name}: tune.sample_from(...) runs arbitrary code per trial and cannot be "
                         f"searched by rungflow; use one of {', '.join(SUPPORTED_TUNE_SAMPLERS)}")
    raise SpaceError(f"param_space.{name}: Ray Tune's {kind} is not supported; use one of {', '.join(SUPPORTED_TUNE_SAMPLERS)}")


def tune_param_space(param_space: Mapping[str, Any]) -> ForeignSpace:
    """Convert a Ray Tune ``param_space``; :class:`SpaceError` names the key and the fix."""
    if not isinstance(param_space, Mapping):
        raise SpaceError(f"param_space: expected a dict of name to sampler or constant, got {type(param_space).__name__}")
    space: dict[str, dict[str, Any]] = {}
    steps: dict[str, float] = {}
    grid: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        name = "/".join(path)
        if isinstance(node, Mapping) and set(node) == {"grid_search"}:
            values = node["grid_search"]
            if not isinstance(values, Sequence) or isinstance(values, str) or not values:
                raise SpaceError(f"param_space.{name}: grid_search needs a non-empty list of values")
            for value in values:
                if _tune_leaf(name, value) is not None or (isinstance(value, Mapping) and "grid_search" in value):
                    raise SpaceError(f"param_space.{name}: grid_search lists a sampler ({type(value).__name__}) among its "
                                     "values; give either tune.grid_search([fixed values]) or one sampler for this key")
            space[name] = {"type": "categorical", "choices": list(values)}
            grid.append(name)
            return {PARAM_MARKER: name}
        if isinstance(node, Mapping):
            out = {}
            for key, child in node.items():
                if not isinstance(key, str) or "/" in key:
                    raise SpaceError(f"param_space.{name + '/' if name else ''}{key!r}: keys must be strings without '/'; rename it")
                out[key] = walk(child, (*path, key))
            return out
        leaf = _tune_leaf(name, node)
        if leaf is None:
            try:
                json.dumps(node)
            except (TypeError, ValueError):
                raise SpaceError(f"param_space.{name}: the constant {type(node).__name__} cannot be stored with the "
                                 "sweep's config; pass it with tune.with_parameters(train, ...) or load it inside train") from None
            return node
        spec, step = leaf
        space[name] = spec
        if step is not None:
            steps[name] = step
        return {PARAM_MARKER: name}

    layout = walk(param_space, ())
    if not space:
        raise SpaceError("param_space: nothing to search (only constants); give at least one tune.uniform/choice/... "
                         "or tune.grid_search")
    SearchSpace.from_dict(space)  # the same checks as a YAML space
    return ForeignSpace(space=space, layout=layout, steps=steps, grid=tuple(grid))


def materialize(config: Mapping[str, Any], layout: Any, steps: Mapping[str, float] | None = None) -> Any:
    """The config the user's code expects: ``layout`` with each parameter filled from ``config`` (snapped)."""
    steps = steps or {}
    if isinstance(layout, Mapping) and set(layout) == {PARAM_MARKER}:
        name = layout[PARAM_MARKER]
        return snap(config.get(name), steps.get(name))
    if isinstance(layout, Mapping):
        return {key: materialize(config, child, steps) for key, child in layout.items()}
    if isinstance(layout, list):
        return [materialize(config, child, steps) for child in layout]
    return layout


# Optuna ---------------------------------------------------------------------------------------------

Path = Sequence[tuple[str, Mapping[str, Any], Any]]


def objective_space(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """The space an objective defines, from the paths it took when probed (first path first).

    A parameter is conditional on a categorical suggested before it when it appeared under only some of that
    categorical's values; a condition that does not reproduce every probed path is dropped (the parameter is
    then proposed always, and ignored where the objective does not ask for it).
    """
    specs: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for path in paths:
        for name, spec, _ in path:
            spec = dict(spec)
            if name in specs and specs[name] != spec:
                raise SpaceError(f"the objective suggests {name!r} as {_describe(specs[name])} and as {_describe(spec)}; "
                                 "give each distribution its own name")
            if name not in specs:
                specs[name] = spec
                order.append(name)
    if not specs:
        raise SpaceError("the objective suggested no parameter (no trial.suggest_* call before it reported or returned); "
                         "call trial.suggest_float/int/categorical for what to search")
    converted = {name: _rungflow_spec(name, spec) for name, spec in specs.items()}
    taken = [{name: value for name, _, value in path} for path in paths]
    positions = [{name: i for i, (name, _, _) in enumerate(path)} for path in paths]
    space: dict[str, dict[str, Any]] = {}
    for name in order:
        spec = dict(converted[name])
        with_p = [i for i, t in enumerate(taken) if name in t]
        when: dict[str, list[Any]] = {}
        for parent in order[:order.index(name)]:
            if converted[parent]["type"] != "categorical":
                continue
            if not all(parent in taken[i] and positions[i][parent] < positions[i][name] for i in with_p):
                continue
            allowed = _unique(taken[i][parent] for i in with_p)
            reached = _unique(t[parent] for t in taken if parent in t)
            if len(allowed) < len(reached):
                when[parent] = allowed
        if when and all((name in t) == all(t.get(parent, _ABSENT) in values for parent, values in when.items())
                        for t in taken):
            spec["when"] = when
        space[name] = spec
    SearchSpace.from_dict(space)
    return space


_ABSENT = object()


def _rungflow_spec(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """An Optuna distribution (``{type, low, high, log, step}`` or ``{type: categorical, choices}``) as a space spec."""
    if raw["type"] == "categorical":
        return {"type": "categorical", "choices": list(raw["choices"])}
    step = raw.get("step")
    if step is not None and not (raw["type"] == "int" and step == 1):
        return discrete_spec(name, raw["type"], raw["low"], raw["high"], float(step), bool(raw.get("log")))[0]
    return {"type": raw["type"], "low": raw["low"], "high": raw["high"], "log": bool(raw.get("log"))}


def _unique(values: Any) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _describe(spec: Mapping[str, Any]) -> str:
    if spec.get("type") == "categorical":
        return f"categorical {list(spec['choices'])}"
    step = f" step {spec['step']}" if spec.get("step") not in (None, 1) else ""
    return f"{spec.get('type')} [{spec.get('low')}, {spec.get('high')}]{' log' if spec.get('log') else ''}{step}"
