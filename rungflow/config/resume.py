"""What a resumed sweep may change: the sections outside RESUMABLE must match the run directory's config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

