"""Test-only fault injection: ``RUNGFLOW_FAULT_AT=<point>[:<n>]`` kills this process with SIGKILL.

The sweep calls :func:`fault_point` at a few named places (``search``: the searcher has proposed a
bracket's trials; ``dispatch``: a stage's trials were dispatched; ``gate``: a rung was gated but its
survivors not yet promoted; ``promote``: the survivors were promoted; ``asha-result``: ASHA billed
a result). The ``n``-th time this process passes the point (default 1) it dies as a preempted
machine would: no ``finally``, no flush. The fault-injection tests use it to kill the sweep at
exact places; with the variable unset (always, outside tests) a call is one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["fault_point", "ENV"]

ENV = "RUNGFLOW_FAULT_AT"
_passed: Counter[str] = Counter()


def fault_point(name: str) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
