"""Which trainable a user's callable is: rungflow's ``train(config, budget, checkpoint)``, a Ray Tune function
``train(config)`` or an Optuna ``objective(trial)``.

Decided by its signature and whether a space came with it, never by running it: three parameters make a rungflow
function; one makes a Ray Tune function when a ``space`` (its ``param_space``) is given, and an Optuna objective when
none is, since an objective defines its own space.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["callable_kind"]


def callable_kind(fn: Any, has_space: bool) -> str:
    """``"function"``, ``"raytune_function"`` or ``"optuna_objective"``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "function"  # a builtin or C callable: the rungflow contract, checked where it is called
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) == 1 and len(positional) < 3 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        return "raytune_function" if has_space else "optuna_objective"
    return "function"
