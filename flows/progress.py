"""The sweep's live progress line on the terminal, with Prefect's console log lines printed above it."""

from __future__ import annotations

import logging
import math
from typing import Any

from rich.console import Console

from rungflow.flows.cli_common import console


class _Progress:
    """One line that updates in place: the stage running, planned units done, spend against the caps, best so far.

    Units advance by each stage's planned increment (a trainable that retrains from scratch at every rung
    still only moves the schedule on by the rung's increment), so the count ends at the plan's total.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f} units"),
                                 TextColumn("{task.fields[spend]}"), TextColumn("{task.fields[best]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = None
        self.name = "sweep"
        self.caps: dict[str, float | None] = {}
        self.mode = "max"
        self.best: float | None = None
        self.reached: dict[str, float] = {}
        self.cpu_hours = 0.0

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "planned":
            self.name = data.get("name", "sweep")
            self.caps = {"gpu_hours": data.get("max_gpu_hours"), "cost": data.get("max_cost"),
                         "cpu_hours": data.get("max_cpu_hours")}
            self.mode = data.get("mode") or "max"
            self.progress.start()
            _route_prefect_console(self.progress.console)
            self.task = self.progress.add_task(self.name, total=data["units"], spend="", best="")
        elif kind == "result" and self.task is not None:
            record = data["record"]
            increment = max(0.0, record.budget - self.reached.get(record.trial_id, 0.0))
            self.reached[record.trial_id] = max(record.budget, self.reached.get(record.trial_id, 0.0))
            if record.ok and record.score is not None and math.isfinite(record.score):
                better = self.best is None or (record.score > self.best if self.mode == "max" else record.score < self.best)
                self.best = record.score if better else self.best
            self.cpu_hours += record.cpu_hours
            self.progress.update(self.task, advance=increment, description=f"{self.name} · bracket {record.bracket} rung {record.rung}",
                                 spend=self._spend(data), best="" if self.best is None else f"best {self.best:.4g}")
        elif kind == "decision" and data["decision"]["action"] == "stop":
            self.progress.console.print(f"[yellow]budget controller: stop ({data['decision']['reason']}): "
                                        f"{data['decision']['detail']}")
        elif kind == "done":
            result = data.get("result") or {}
            if self.task is not None and result.get("stop_reason") == "schedule_complete":
                # ASHA's plan is an estimate of how its rungs fill; a finished schedule is all of it.
                done = self.progress.tasks[0].completed
                self.progress.update(self.task, total=done, description=f"{self.name} · done")
            self.stop()

    def _spend(self, data: dict[str, Any]) -> str:
        gpu_cap, cost_cap = self.caps.get("gpu_hours"), self.caps.get("cost")
        gpu = f"{data['gpu_hours']:.3g}" + (f"/{gpu_cap:g}" if gpu_cap else "") + " GPU-h"
        cost = f"${data['cost']:.2f}" + (f"/{cost_cap:g}" if cost_cap else "")
        cpu_cap = self.caps.get("cpu_hours")
        cpu = f" · {self.cpu_hours:.3g}/{cpu_cap:g} CPU-h" if cpu_cap else ""
        return f"{gpu}{cpu} · {cost}"

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()
            _route_prefect_console(None)
            self.task = None


_prefect_consoles: dict[int, Any] = {}


def _route_prefect_console(target: Console | None) -> None:
    """Print Prefect's console log lines through ``target`` (the live progress display) so they land above the
    bar instead of inside it; ``None`` gives each handler its own console back."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, PrefectConsoleHandler):
            if target is not None:
                _prefect_consoles.setdefault(id(handler), handler.console)
                handler.console = target
            elif id(handler) in _prefect_consoles:
                handler.console = _prefect_consoles.pop(id(handler))

