"""Config errors as one line naming the field, the value and the fix; every section refuses unknown keys."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config that cannot run; ``str()`` is one line naming the field, the value and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
