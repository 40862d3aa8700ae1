"""What the driver does when the sweep's monitoring is lost for good: stop, bill what was started, then say so.

An executor's ``publish`` may find that the place the sweep reports to (the Prefect API, for the flow) has been gone
longer than the sweep may train unwatched. It raises :class:`MonitorLost`. The loops take it as a stop, not a crash:
they hand out nothing more, cancel what is in flight through the executor (jobs not yet started come back at once;
running ones finish or stop where the runtime can stop them), bill every job they get back, and only then let the
exception go on. Left to unwind the loop at once, it would leave the ledger with start markers that no spend follows:
the workers' time would be spent and never billed.
"""

from __future__ import annotations

__all__ = ["MonitorLost"]


class MonitorLost(RuntimeError):
    """The sweep can no longer be watched and must stop; ``str()`` says what was lost and the fix, in one line."""
