"""Shared pieces of the benchmarks: a quiet process, one Prefect API, sweep configs, curve metrics.

Nothing here imports Prefect at module level: :func:`quiet_env` must set the logging variables
before the first ``import prefect`` anywhere in the process, or Prefect reads its defaults.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "quiet_env",
    "prefect_api",
    "run_config",
    "fresh_dir",
    "peak_rss_mb",
    "Point",
    "incumbent_curve",
    "first_reach",
    "value_at",
    "median",
    "write_json",
    "publish",
    "fmt",
    "add_lcbench_grid_arguments",
    "by_instance",
    "neg_inf_if_none",
    "acc_cell",
    "anytime_figure",
    "median_anytime",
    "label_anytime_panel",
    "blank_spare_panels",
    "save_figure",
    "PLATEAU",
    "TERMINATOR_ERROR",
    "TERMINATOR_MIN_TRIALS",
]

LCBENCH_MAX_EPOCH = 52

# The peers' stoppers as the stopping benches set them (replayed in bench/stopping.py, run live in
# bench/stopping_live.py): here, below both, so neither imports the other.
PLATEAU = {"std": 0.1, "top": 10, "patience": 0}  # accuracy points; Tune's default std 0.001 never fires on %
TERMINATOR_ERROR = 0.2  # accuracy points: the error the regret bound is compared with
TERMINATOR_MIN_TRIALS = 20


def quiet_env(isolated_prefect_home: bool = True) -> None:
    """Environment for a benchmark process; call before anything imports prefect or ray.

    Each benchmark run creates thousands of task runs; an isolated PREFECT_HOME gives it its own
    SQLite database, so it neither grows the user's database nor contends with another server on it.
    """
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    # The flow logs through the API handler too; at WARNING there is little to ship anyway.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    # The server's telemetry heartbeat races the fresh database's migrations ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Progress UI of Ray Tune and Ray's own banners would otherwise flood the benchmark output.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if isolated_prefect_home and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="rungflow-bench-prefect-")
    if "prefect" in sys.modules:
        print("bench: warning: prefect was imported before quiet_env(); its log level may be the default",
              file=sys.stderr)


@contextlib.contextmanager
def prefect_api() -> Iterator[float]:
    """Start the embedded Prefect server exactly as ``rungflow sweep`` does; yields its start-up seconds."""
    from rungflow.flows.prefect_server import check_prefect_api, ensure_prefect_api, stop_prefect_server

    t0 = time.perf_counter()
    server = ensure_prefect_api()
    check_prefect_api()
    startup = time.perf_counter() - t0
    try:
        yield startup
    finally:
        if server is not None:
            _drain_events_before_stop()
            stop_prefect_server(server)
        home = os.environ.get("PREFECT_HOME", "")
        if server is not None and Path(home).name.startswith("rungflow-bench-prefect-"):
            shutil.rmtree(home, ignore_errors=True)


def _drain_events_before_stop() -> None:
    """Let the server persist the last task-run events before it is terminated.

    The embedded server's task-run recorder buffers events for up to its flush interval; stopping
    it sooner cancels that flush and it logs an "Error flushing N events" traceback per event.
    """
    try:
        from prefect.events.worker import EventsWorker
        from prefect.settings import get_current_settings

        EventsWorker.drain_all(timeout=10)
        interval = get_current_settings().server.services.task_run_recorder.flush_interval
    except Exception:
        interval = 5.0
    time.sleep(float(interval) + 1.0)


def run_config(
    name: str,
    *,
    trainable: Mapping[str, Any],
    algorithm: str,
    seed: int,
    scheduler: Mapping[str, Any],
    runtime: Mapping[str, Any],
    num_trials: int | None = None,
    max_gpu_hours: float | None = None,
    space: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A sweep config dict in the same shape a user's YAML has, ready for ``rungflow.config.validate``."""
    search: dict[str, Any] = {"algorithm": algorithm, "seed": seed}
    if num_trials is not None:
        search["num_trials"] = num_trials
    cfg: dict[str, Any] = {
        "name": name,
        "trainable": dict(trainable),
        "search": search,
        "scheduler": dict(scheduler),
        "runtime": dict(runtime),
    }
    if max_gpu_hours is not None:
        cfg["budget"] = {"max_gpu_hours": max_gpu_hours}
    if space is not None:
        cfg["space"] = dict(space)
    return cfg


def add_lcbench_grid_arguments(p: Any, instances: Sequence[str], seeds: Sequence[int]) -> None:
    """``--instances`` and ``--seeds``, the grid every LCBench sweep bench runs over (``p``: an argparse parser)."""
    p.add_argument("--instances", nargs="+", default=list(instances), help="LCBench OpenML task ids")
    p.add_argument("--seeds", nargs="+", type=int, default=list(seeds))


def by_instance(cells: Sequence[Any]) -> dict[str, list[Any]]:
    """Cells (anything with an ``instance``) grouped per instance, instances in the order first seen."""
    groups: dict[str, list[Any]] = {}
    for c in cells:
        groups.setdefault(c.instance, []).append(c)
    return groups


def fresh_dir(path: Path) -> Path:
    """An empty run directory: a leftover ledger.jsonl would make the sweep resume, not start over."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- anytime curves ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """After ``gpu_hours`` of spend, the best score among completed results at the full budget."""

    gpu_hours: float
    best: float


def incumbent_curve(events: Sequence[Mapping[str, Any]], full_budget: float, mode: str = "max") -> list[Point]:
    """One point per improvement of the full-budget incumbent, in billing order.

    Only results at the full budget count: a low-fidelity score is not what a user would deploy,
    and it is what the random baseline's B is measured on too.
    """
    sign = 1.0 if mode == "max" else -1.0
    best: float | None = None
    points: list[Point] = []
    for e in events:
        score = e.get("score")
        if e.get("status") != "completed" or score is None or not math.isfinite(score):
            continue
        if abs(float(e["budget"]) - full_budget) > 1e-9:
            continue
        if best is None or sign * score > sign * best:
            best = float(score)
            points.append(Point(float(e["cumulative_gpu_hours"]), best))
    return points


def first_reach(curve: Sequence[Point], target: float, mode: str = "max") -> float | None:
    """GPU-hours at which the incumbent first reaches ``target`` (None: never)."""
    for p in curve:
        if (p.best >= target) if mode == "max" else (p.best <= target):
            return p.gpu_hours
    return None


def value_at(curve: Sequence[Point], gpu_hours: float) -> float | None:
    """The incumbent after ``gpu_hours`` of spend (None: no full-budget result yet)."""
    found: float | None = None
    for p in curve:
        if p.gpu_hours <= gpu_hours + 1e-12:
            found = p.best
        else:
            break
    return found


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values; None entries are dropped, ``inf`` entries kept (an unreached target)."""
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # inf (an unreached target) is written as the string "inf": strict JSON has no infinity.
    tmp.write_text(json.dumps(_json_safe(data), indent=2))
    os.replace(tmp, path)


def publish(out: Path, data: Any, text: str) -> None:
    """Write a bench's results.json and results.md into ``out`` and show the table on stdout."""
    write_json(out / "results.json", data)
    (out / "results.md").write_text(text)
    print(text)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def fmt(x: float | None, spec: str = ".2f", none: str = "-") -> str:
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    text = format(x, spec)
    # A hair below zero (a peer that overshot its cap by one epoch) reads as "-0%": zero is what it means.
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def neg_inf_if_none(x: float | None) -> float:
    # A run with no full-budget result at that spend has nothing to deploy: rank it below any accuracy.
    return -math.inf if x is None else x


def acc_cell(x: float | None) -> str:
    """An accuracy table cell; -inf (see :func:`neg_inf_if_none`) reads as "none yet"."""
    return "none yet" if x is not None and math.isinf(x) and x < 0 else fmt(x, ".2f")


# --- anytime plots ----------------------------------------------------------------------------------
def anytime_figure(instances: Sequence[str], extra_panels: int = 0) -> tuple[Any, Any, Any]:
    """pyplot, a figure and its axes: one panel per instance, three to a row, plus ``extra_panels``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(instances))
    rows = math.ceil((len(instances) + extra_panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), dpi=110, squeeze=False)
    return plt, fig, axes


def median_anytime(pairs: Sequence[tuple[Any, Any]], grid: Sequence[float]) -> tuple[list[float], list[float]]:
    """The median over seeds of (run, cell) pairs' incumbent curves, spend as a share of each cell's G.

    A run has ``curve`` ((GPU-hours, best) steps) and ``gpu_hours``, a cell ``gpu_hours`` (its G). Only
    points where the median is a finite accuracy come back.
    """
    xs: list[float] = []
    ys: list[float] = []
    for x in grid:
        # Only where every seed's run has spent that much: beyond a capped run's stop the curve ends.
        if not all(x <= r.gpu_hours / c.gpu_hours + 1e-12 for r, c in pairs):
            break
        y = median([neg_inf_if_none(value_at([Point(g / c.gpu_hours, b) for g, b in r.curve], x)) for r, c in pairs])
        if y is not None and math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def label_anytime_panel(ax: Any, instance: str, seeds: int, xmin: float) -> None:
    # Log spend: the interesting part (first full-budget results, the 5-20 % marks) sits near the left.
    ax.set_xscale("log")
    ax.set_xlim(xmin, 1)
    ax.set_title(f"LCBench {instance} (median of {seeds} seed{'' if seeds == 1 else 's'})")
    ax.set_xlabel("GPU-hours spent / G of random-128")
    ax.set_ylabel("best accuracy at 52 epochs (%)")
    ax.grid(alpha=0.3)


def blank_spare_panels(axes: Any, used: int) -> list[Any]:
    """Turn off the panels past the first ``used``; they are returned so one can hold the legend."""
    spare = list(axes.flat)[used:]
    for ax in spare:
        ax.axis("off")
    return spare


def save_figure(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path


# The libraries whose releases change what a bench measures: the same seed gave different BOHB sweeps
# under Optuna 4.x and 5.0 (its TPE changed), so every table says which it ran with.
MEASURED_LIBRARIES = ("optuna", "ray", "prefect", "numpy", "torch", "yahpo-gym", "onnxruntime")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in MEASURED_LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def wall_and_load(meta: Mapping[str, Any]) -> str:
    """The footer every bench table carries: how long it ran, how loaded the machine was, with which libraries
    (``meta["versions"]`` from :func:`library_versions`; results written before it was recorded have none)."""
    libraries = "".join(f"; {name} {v}" for name, v in (meta.get("versions") or {}).items())
    return (f"Wall time {meta['wall_seconds']:.0f} s; 1-min load average {meta['loadavg_before'][0]:.2f} before, "
            f"{meta['loadavg_after'][0]:.2f} after; {meta['machine']}{libraries}.")
