"""``python -m bench gpu``: a real sweep packed four trials to a GPU, its ledger checked against what nvidia-smi saw.

The torch_mlp family trains on scikit-learn's digits under successive halving, on the Ray runtime with
``gpus_per_trial: 0.25``, so four trials share one GPU. Each trial runs the family's own ``train`` and
reports, from inside its worker, the device it trained on, where the model tensors of the checkpoint it
resumed from were saved (``cuda:0`` or ``cpu``) and the epoch that checkpoint had reached. A background thread
samples ``nvidia-smi`` every ``--period`` seconds: utilisation, memory, and the processes holding the GPU.

Checked afterwards, from the ledger and the samples:

* every record is billed wall-clock × 0.25 GPU-seconds;
* four trials ran at once (their billed intervals overlap) and four processes held the GPU at once;
* each promoted trial resumed from its checkpoint and trained on from its epoch, not from zero, and on a
  GPU that checkpoint's tensors were CUDA tensors;
* for each Ray worker, the GPU-seconds billed to its trials against the time nvidia-smi listed it × 0.25:
  billed may not exceed held, beyond what was billed before its first listing (its first trial loads the
  data and creates the CUDA context); and once listed, it must be listed in at least 90% of the samples
  taken while it was billed.

Without a GPU (no nvidia-smi, or torch sees no CUDA device; ``--cpu`` forces it) the same sweep runs on
CPU, billed its GPU share as rungflow bills it there, and the table says what nvidia-smi could not show.
The exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import fresh_dir, library_versions, prefect_api, write_json

__all__ = [
    "GPU_SHARE", "Plan", "Sample", "Interval", "parse_gpu_query", "parse_apps_query", "SmiSampler",
    "checkpoint_locations", "probe", "intervals_from_ledger", "held_from_ledger", "max_overlap", "held_seconds", "account",
    "check_resumes", "check_billing", "render", "add_arguments", "run",
]

GPU_SHARE = 0.25
PACKED = 4  # trials that 0.25 GPU each fit on one GPU, and what the check asks to see at once
DATASET = "digits"
SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    "hidden_units": {"type": "int", "low": 32, "high": 256, "log": True},
    "num_layers": {"type": "int", "low": 1, "high": 3},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    # Small batches: many optimiser steps per epoch, so a trial keeps its GPU busy long enough for
    # half-second samples to see it.
    "batch_size": {"type": "int", "low": 16, "high": 64, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
}
GPU_QUERY = ("--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits")
APPS_QUERY = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")


@dataclass(frozen=True)
class Plan:
    """The sweep: successive halving of ``num_trials`` from ``min_budget`` to ``max_budget`` epochs by ``eta``."""

    num_trials: int = 16
    min_budget: int = 4
    max_budget: int = 32
    eta: int = 2
    seed: int = 0
    period: float = 0.5
    # A stage already running finishes; no stage starts after it, so the whole check stays within minutes.
    deadline_seconds: float = 360.0


# --- nvidia-smi ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One nvidia-smi reading at ``t`` (time.time()): utilisation %, memory used (MiB), pid -> MiB it held."""

    t: float
    utilisation: float | None
    memory_mib: float | None
    apps: Mapping[int, float | None]


def _number(text: str) -> float | None:
    """A csv field as nvidia-smi writes it with nounits; ``[N/A]``, ``[Not Supported]`` and the like are None."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_gpu_query(text: str) -> tuple[float | None, float | None]:
    """(utilisation %, memory used MiB) of the first GPU listed (the one ``-i`` selected)."""
    for line in text.splitlines():
        fields = [f for f in line.split(",")]
        if len(fields) >= 2 and line.strip():
            return _number(fields[0]), _number(fields[1])
    return None, None


def parse_apps_query(text: str) -> dict[int, float | None]:
    """pid -> MiB for each compute process; a line that is not ``pid, MiB`` (a notice, a blank) is skipped."""
    apps: dict[int, float | None] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 2:
            continue
        try:
            pid = int(fields[0].strip())
        except ValueError:
            continue
        apps[pid] = _number(fields[1])
    return apps


def _gpu_selector() -> str:
    """The GPU the sweep's workers see, as ``nvidia-smi -i`` names it (index or UUID)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


class SmiSampler:
    """Reads nvidia-smi every ``period`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(self, period: float, gpu: str, binary: str = "nvidia-smi") -> None:
        self.period = period
        self.gpu = gpu
        self.binary = binary
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvidia-smi-sampler", daemon=True)

    def _start(self, args: Sequence[str]) -> subprocess.Popen[str]:
        return subprocess.Popen([self.binary, "-i", self.gpu, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    @staticmethod
    def _output(proc: subprocess.Popen[str]) -> str:
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        if proc.returncode != 0:
            said = (err or out).strip()
            raise RuntimeError(said.splitlines()[0] if said else f"exit status {proc.returncode}")
        return out

    def read(self) -> Sample:
        """Both queries at once, stamped halfway through: one nvidia-smi call can take a good part of a period."""
        began = time.time()
        gpu_query, apps_query = self._start(GPU_QUERY), self._start(APPS_QUERY)
        try:
            utilisation, memory = parse_gpu_query(self._output(gpu_query))
            apps = parse_apps_query(self._output(apps_query))
        finally:
            for proc in (gpu_query, apps_query):
                if proc.poll() is None:  # its sibling failed first: no zombie left behind
                    proc.kill()
                    proc.communicate()
        return Sample((began + time.time()) / 2, utilisation, memory, apps)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                self.samples.append(self.read())
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                if len(self.errors) < 20:  # a broken driver fails every read alike: a few say it
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.period - (time.perf_counter() - began)))

    def start(self) -> SmiSampler:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples


def smi_available(binary: str = "nvidia-smi") -> str | None:
    """None when nvidia-smi answers and torch sees a CUDA device; else why the GPU half cannot run."""
    if shutil.which(binary) is None:
        return f"{binary} not found"
    try:
        out = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{binary} -L failed ({type(exc).__name__})"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return f"{binary} -L lists no GPU"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is false"
    return None


# --- the trial -----------------------------------------------------------------------------------
def checkpoint_locations(data: bytes) -> tuple[list[str], int]:
    """(where each model tensor of a torch_mlp checkpoint was saved, e.g. ``cuda:0``; the epoch it reached).

    Read without moving anything to a device, so a CUDA checkpoint is recognised as one on any machine. Only
    the model's tensors are judged: AdamW keeps its step counters on the CPU whatever device it trains on.
    """
    import torch

    saved_at: dict[int, str] = {}

    def keep_where_read(storage: Any, location: str) -> Any:
        saved_at[storage.data_ptr()] = str(location)
        return storage

    state = torch.load(io.BytesIO(data), weights_only=True, map_location=keep_where_read)
    model = state["model"].values()
    return [saved_at.get(t.untyped_storage().data_ptr(), "unknown") for t in model], int(state["epoch"])


def probe(config: dict[str, Any], budget: int, checkpoint: bytes | None) -> Any:
    """The torch_mlp family's own ``train`` on digits, reporting what it resumed from and where it ran.

    The family's checkpoint is its own bytes, passed through untouched, so what is inspected here is exactly
    what the family saved at the trial's previous rung.
    """
    import torch

    import rungflow
    from rungflow.tasks.trainables.base import TrainRequest
    from rungflow.tasks.trainables.torch_mlp import TorchMLPTrainable

    metrics: dict[str, float] = {"pid": float(os.getpid())}
    if checkpoint is not None:
        locations, epoch = checkpoint_locations(checkpoint)
        metrics.update(checkpoint_epoch=float(epoch), checkpoint_tensors=float(len(locations)),
                       checkpoint_cuda_tensors=float(sum(loc.startswith("cuda") for loc in locations)))
    device = rungflow.trial_device()
    # The family seeds a trial by its id, which a training function is not told: the config stands in for it.
    trial = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=6).hexdigest()
    family = TorchMLPTrainable({"dataset": DATASET})
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    outcome = family.train(TrainRequest(trial_id=trial, config=config, budget=budget, checkpoint=checkpoint,
                                        device=device))
    metrics.update(on_cuda=float(device.startswith("cuda")), epochs_this_call=float(outcome.budget_trained),
                   epochs_total=float(outcome.budget_reached))
    if device.startswith("cuda"):
        metrics["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return rungflow.Report(score=outcome.score, checkpoint=outcome.checkpoint, metrics=metrics)


# --- accounting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """One billed attempt: who ran it, when, and what it was billed."""

    trial_id: str
    rung: int
    budget: float
    pid: int | None
    started_at: float
    finished_at: float
    wall_seconds: float
    gpu_seconds: float
    gpus: float
    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


def _pid_of(worker: str | None) -> int | None:
    """The pid in a ledger worker id ``host:pid[:node]``."""
    parts = (worker or "").split(":")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def intervals_from_ledger(path: Path) -> list[Interval]:
    """Every spend record of the ledger at ``path``, in billing order."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("type") != "spend":
            continue
        r = entry["record"]
        out.append(Interval(r["trial_id"], int(r["rung"]), float(r["budget"]), _pid_of(r.get("worker")),
                            float(r["started_at"]), float(r["finished_at"]), float(r.get("wall_seconds") or 0.0),
                            float(r["gpu_seconds"]), float(r["gpus"]), str(r["status"]),
                            {k: v for k, v in (r.get("metrics") or {}).items() if v is not None}, r.get("error")))
    return out


def held_from_ledger(path: Path) -> tuple[float, int, int]:
    """(GPU-seconds the ledger's hold lines say the workers held, workers, of them never released).

    Each worker's release line repeats its acquire line with ``released_at`` set; the later line wins. A ledger
    written before workers' holds were recorded has none: (0, 0, 0).
    """
    spans: dict[tuple[str, float], Mapping[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("type") == "hold":
            hold = entry["hold"]
            spans[(hold["worker"], hold["acquired_at"])] = hold
    done = [h for h in spans.values() if h.get("released_at") is not None]
    seconds = sum((h["released_at"] - h["acquired_at"]) * h["gpus"] for h in done)
    return seconds, len(spans), len(spans) - len(done)


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """The most spans open at one instant (one that ends where another starts does not overlap it)."""
    spans = list(spans)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def _weights(samples: Sequence[Sample], period: float) -> list[float]:
    """Seconds each sample stands for: until the next one, at most two usual gaps (a stalled read is not held time).

    The usual gap is the median one, not ``period``: where nvidia-smi itself takes longer than a period, reads
    come as fast as it answers.
    """
    gaps = [b.t - a.t for a, b in zip(samples, samples[1:])]
    usual = max(period, statistics.median(gaps)) if gaps else period
    return [min(max(gap, 0.0), 2 * usual) for gap in gaps] + ([usual] if samples else [])


def held_seconds(samples: Sequence[Sample], period: float) -> dict[int, float]:
    """pid -> seconds nvidia-smi saw it among the GPU's compute processes."""
    held: dict[int, float] = {}
    for s, w in zip(samples, _weights(samples, period)):
        for pid in s.apps:
            held[pid] = held.get(pid, 0.0) + w
    return held


@dataclass
class ProcessFigures:
    pid: int
    records: int
    ledger_gpu_seconds: float
    held_seconds: float | None  # None: nvidia-smi never listed this pid
    startup_seconds: float | None  # from its first trial's start to its first listing
    billed_before_listed_gpu_seconds: float  # what the ledger billed before nvidia-smi first listed it
    samples_while_billed: int  # after its first listing
    listed_while_billed: int
    peak_mib: float | None

    @property
    def held_gpu_seconds(self) -> float | None:
        return None if self.held_seconds is None else self.held_seconds * GPU_SHARE

    @property
    def coverage(self) -> float | None:
        """Of the samples taken while this worker was billed (once it had first been listed), the share listing it."""
        return self.listed_while_billed / self.samples_while_billed if self.samples_while_billed else None

    def verdict(self, period: float) -> bool:
        """Listed whenever billed, and billed no more than it held: the ledger and the GPU tell the same story.

        What it was billed before its first listing (the dataset load and the CUDA context its first trial
        creates) is time nvidia-smi could not see; each record's two ends may fall between two samples.
        """
        if self.held_gpu_seconds is None:
            return False
        unseen = self.billed_before_listed_gpu_seconds + self.records * 2 * period * GPU_SHARE
        return (self.coverage is None or self.coverage >= MIN_COVERAGE) and \
            self.ledger_gpu_seconds <= self.held_gpu_seconds + unseen


@dataclass
class Accounting:
    processes: list[ProcessFigures]
    others: list[int]  # new GPU processes that no ledger record names (another pid namespace, or not ours)
    listed_any: bool  # nvidia-smi listed some process the sweep started (in a container it may list none)
    pids_match: bool  # ... and those were the pids the ledger names
    max_processes: int  # most of the sweep's processes listed at once
    utilisation_mean: float | None  # while at least one of them was listed
    utilisation_peak: float | None
    memory_peak_mib: float | None
    held_gpu_seconds_total: float


def account(intervals: Sequence[Interval], samples: Sequence[Sample], period: float,
            baseline: Iterable[int] = ()) -> Accounting:
    """The ledger's GPU-seconds per worker against nvidia-smi's view of the same processes.

    ``baseline``: pids that held the GPU before the sweep began (not the sweep's). When no ledger pid is
    ever listed while new ones are (nvidia-smi in a container may report the host's pids), the new ones
    stand for the sweep's workers in the totals and the concurrency figure.
    """
    before = set(baseline)
    by_pid: dict[int, list[Interval]] = {}
    for iv in intervals:
        if iv.pid is not None:
            by_pid.setdefault(iv.pid, []).append(iv)
    held = held_seconds(samples, period)
    seen = {pid for s in samples for pid in s.apps} - before
    pids_match = bool(seen & set(by_pid))
    ours = set(by_pid) if pids_match else seen
    processes = []
    for pid, ivs in sorted(by_pid.items()):
        listed = [s.t for s in samples if pid in s.apps]
        first = min(listed) if listed else None
        cut = math.inf if first is None else first
        inside = [s for s in samples if s.t >= cut and any(iv.started_at <= s.t <= iv.finished_at for iv in ivs)]
        mib = [v for s in samples if (v := s.apps.get(pid)) is not None]
        processes.append(ProcessFigures(
            pid=pid, records=len(ivs), ledger_gpu_seconds=sum(iv.gpu_seconds for iv in ivs), held_seconds=held.get(pid),
            startup_seconds=None if first is None else first - min(iv.started_at for iv in ivs),
            billed_before_listed_gpu_seconds=sum(max(0.0, min(iv.finished_at, cut) - iv.started_at) for iv in ivs) * GPU_SHARE,
            samples_while_billed=len(inside), listed_while_billed=sum(pid in s.apps for s in inside),
            peak_mib=max(mib) if mib else None))
    busy = [s for s in samples if ours & set(s.apps)]
    util = [s.utilisation for s in busy if s.utilisation is not None]
    memory = [s.memory_mib for s in samples if s.memory_mib is not None]
    return Accounting(
        processes=processes,
        others=sorted(seen - set(by_pid)),
        listed_any=bool(seen),
        pids_match=pids_match,
        max_processes=max((len(ours & set(s.apps)) for s in samples), default=0),
        utilisation_mean=sum(util) / len(util) if util else None,
        utilisation_peak=max(util) if util else None,
        memory_peak_mib=max(memory) if memory else None,
        held_gpu_seconds_total=sum(held.get(pid, 0.0) for pid in ours) * GPU_SHARE,
    )


@dataclass
class Resumes:
    promoted: int  # records above rung 0 that completed
    continued: int  # of them: resumed at the previous rung's epoch and trained only the rest
    cuda_checkpoints: int  # of them: every model tensor of the checkpoint they resumed from was a CUDA one
    on_cuda: int  # records (any rung) that trained on a CUDA device
    records: int
    problems: list[str]


def check_resumes(intervals: Sequence[Interval]) -> Resumes:
    """Each promoted trial's own report: the epoch its checkpoint held, and what it trained on from there."""
    done = [iv for iv in intervals if iv.status == "completed"]
    reached = {(iv.trial_id, iv.rung): iv.budget for iv in done}
    problems: list[str] = []
    promoted = continued = cuda = 0
    for iv in done:
        if iv.rung == 0:
            continue
        promoted += 1
        m = iv.metrics
        previous = reached.get((iv.trial_id, iv.rung - 1))
        if "checkpoint_epoch" not in m:
            problems.append(f"{iv.trial_id} rung {iv.rung}: started without a checkpoint")
            continue
        ok = (previous is not None and m["checkpoint_epoch"] == previous
              and m.get("epochs_this_call") == iv.budget - m["checkpoint_epoch"] and m.get("epochs_total") == iv.budget)
        if ok:
            continued += 1
        else:
            problems.append(f"{iv.trial_id} rung {iv.rung}: checkpoint at epoch {m['checkpoint_epoch']:g} "
                            f"(previous rung {previous}), trained {m.get('epochs_this_call')}, "
                            f"reached {m.get('epochs_total')} of {iv.budget:g}")
        tensors = m.get("checkpoint_tensors", 0.0)
        if tensors > 0 and m.get("checkpoint_cuda_tensors") == tensors:
            cuda += 1
    on_cuda = sum(iv.metrics.get("on_cuda") == 1.0 for iv in intervals)
    return Resumes(promoted, continued, cuda, on_cuda, len(intervals), problems)


def check_billing(intervals: Sequence[Interval]) -> tuple[float, list[str]]:
    """(largest |GPU-s − wall × 0.25| over records, records that were not billed at 0.25 GPU)."""
    worst = 0.0
    problems = []
    for iv in intervals:
        wall = iv.finished_at - iv.started_at
        worst = max(worst, abs(iv.gpu_seconds - wall * GPU_SHARE))
        if iv.gpus != GPU_SHARE:
            problems.append(f"{iv.trial_id} rung {iv.rung}: billed {iv.gpus:g} GPU, not {GPU_SHARE:g}")
    return worst, problems


# The clock of the billed seconds (perf_counter in the worker) and of finished − started (time.time(), taken a
# moment later) differ by the few milliseconds between them; more means the bill is not wall × share.
BILLING_TOLERANCE_GPU_SECONDS = 0.05
# A worker holds its CUDA context from its first trial until it is given back (idle too long, or the sweep's end),
# so once listed it should be listed in nearly every sample taken while it is billed; a read that straddles a
# trial's end may miss it.
MIN_COVERAGE = 0.9


# --- the table -----------------------------------------------------------------------------------
def _f(x: float | None, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def evaluate(intervals: Sequence[Interval], samples: Sequence[Sample] | None, period: float,
             baseline: Iterable[int] = (), smi_note: str | None = None,
             held: tuple[float, int, int] | None = None) -> dict[str, Any]:
    """Rows of the table (what, ledger, nvidia-smi, verdict) and whether every check passed.

    ``samples`` None: no GPU, so only what the ledger and the trials' own reports show is checked. ``held``: the
    ledger's hold lines (:func:`held_from_ledger`), shown beside what nvidia-smi saw held, not judged: a hold
    starts when the worker is asked for, before its process exists.
    """
    rows: list[tuple[str, str, str, str]] = []
    failed: list[str] = []

    def row(what: str, ledger: str, smi: str, ok: bool | None) -> None:
        rows.append((what, ledger, smi, "" if ok is None else ("ok" if ok else "FAIL")))
        if ok is False:
            failed.append(what.strip())

    def gpu_row(what: str, ledger: str, ok: bool) -> None:
        """A check only a GPU can pass: without one the row says it was not judged, rather than passing."""
        if gpu:
            row(what, ledger, "", ok)
        else:
            rows.append((what, ledger, "", "n/a: no GPU"))

    def held_row(smi_held: float | None) -> None:
        if held is not None and held[1]:
            row("GPU-seconds the workers held, idle included", f"{held[0]:.1f} ({held[1]} workers"
                + (f", {held[2]} never released)" if held[2] else ")"), _f(smi_held), None)

    gpu = samples is not None
    worst, wrong_share = check_billing(intervals)
    overlap = max_overlap((iv.started_at, iv.finished_at) for iv in intervals)
    resumes = check_resumes(intervals)
    acc = account(intervals, samples, period, baseline) if samples is not None else None
    total = sum(iv.gpu_seconds for iv in intervals)
    row("nvidia-smi", "", f"sampled every {period:g} s: {len(samples)} samples" if samples is not None
        else f"unavailable ({smi_note})", None if samples is None else bool(samples))
    row("trials / records billed, all completed", f"{len({iv.trial_id for iv in intervals})} / {len(intervals)}", "",
        bool(intervals) and all(iv.status == "completed" for iv in intervals))
    row(f"GPU-s − wall × {GPU_SHARE:g}, largest", f"{worst:.4f}" + (f"; {len(wrong_share)} not at {GPU_SHARE:g} GPU"
                                                                    if wrong_share else ""), "",
        worst <= BILLING_TOLERANCE_GPU_SECONDS and not wrong_share)
    listed = acc is not None and acc.listed_any
    row(f"trials at once (≥ {PACKED})", str(overlap), f"{acc.max_processes} processes" if acc and listed else "-",
        overlap >= PACKED and (not listed or acc is not None and acc.max_processes >= PACKED))
    gpu_row("records trained on CUDA", f"{resumes.on_cuda} of {resumes.records}", resumes.on_cuda == resumes.records)
    row("promoted trials resumed at their epoch", f"{resumes.continued} of {resumes.promoted}", "",
        resumes.promoted > 0 and resumes.continued == resumes.promoted)
    gpu_row("... from a checkpoint of CUDA tensors", f"{resumes.cuda_checkpoints} of {resumes.promoted}",
            resumes.promoted > 0 and resumes.cuda_checkpoints == resumes.promoted)
    if acc is None:
        row("GPU-seconds billed", f"{total:.1f}", "-", None)
        held_row(None)
    else:
        row(f"GPU-seconds: billed, held × {GPU_SHARE:g}", f"{total:.1f}", f"{acc.held_gpu_seconds_total:.1f}"
            if listed else "-", all(p.verdict(period) for p in acc.processes) if acc.pids_match else None)
        if acc.pids_match:
            for p in acc.processes:
                cov = None if p.coverage is None else p.coverage * 100
                row(f"  worker {p.pid}: {p.records} records", f"{p.ledger_gpu_seconds:.1f}",
                    f"{_f(p.held_gpu_seconds)}; listed in {_f(cov, '.0f')}% of samples while billed; "
                    f"first {_f(p.startup_seconds)} s into its first trial; peak {_f(p.peak_mib, ',.0f')} MiB",
                    p.verdict(period))
            if acc.others:
                row("other new GPU processes", "", ", ".join(map(str, acc.others[:8])), None)
        elif listed:
            row("worker pids in nvidia-smi", "", f"none of the ledger's; {len(acc.others)} new pids stand for them "
                "(nvidia-smi reports another pid namespace)", None)
        else:
            row("worker processes in nvidia-smi", "", "none listed (a container's processes can be invisible to it)",
                None)
        held_row(acc.held_gpu_seconds_total if listed else None)
        row("GPU utilisation: mean, peak", "", f"{_f(acc.utilisation_mean, '.0f')}%, {_f(acc.utilisation_peak, '.0f')}%"
            " while workers were listed", None)
        row("GPU memory used, peak", "", f"{_f(acc.memory_peak_mib, ',.0f')} MiB", None)
    unfinished = [f"{iv.trial_id} rung {iv.rung}: {iv.status}: {_last_line(iv.error)}" for iv in intervals
                  if iv.status != "completed"]
    for problem in (unfinished + resumes.problems + wrong_share)[:6]:
        rows.append(("  " + problem, "", "", ""))
    return {"rows": rows, "failed": failed, "ok": not failed, "resumes": asdict(resumes),
            "accounting": None if acc is None else {**asdict(acc), "processes": [
                {**asdict(p), "held_gpu_seconds": p.held_gpu_seconds, "coverage": p.coverage, "ok": p.verdict(period)}
                for p in acc.processes]},
            "max_overlap": overlap, "billing_gap_gpu_seconds": worst, "gpu_seconds_billed": total}


def _last_line(error: str | None) -> str:
    """The line of a (possibly remote) traceback that names the exception."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no error recorded"


def render(rows: Sequence[Sequence[str]], footer: str = "") -> str:
    """One markdown table, as the other benches print theirs."""
    lines = ["| check | ledger | nvidia-smi | |", "|---|---:|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(lines) + (f"\n\n{footer}" if footer else "")


# --- the command ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Plan()
    p.add_argument("--trials", type=int, default=d.num_trials, help="trials at the first rung (default %(default)s)")
    p.add_argument("--min-budget", type=int, default=d.min_budget, help="epochs at the first rung (default %(default)s)")
    p.add_argument("--max-budget", type=int, default=d.max_budget, help="epochs at the top rung (default %(default)s)")
    p.add_argument("--eta", type=int, default=d.eta, help="1/eta of a rung is promoted (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--period", type=float, default=d.period, help="seconds between nvidia-smi samples")
    p.add_argument("--deadline", type=float, default=d.deadline_seconds,
                   help="seconds after which no further stage starts (default %(default)s)")
    p.add_argument("--cpu", action="store_true", help="hide the GPUs: run the CPU path even where a GPU is present")
    p.add_argument("--run-dir", type=Path, default=Path("bench/out/gpu/run"), help="the sweep's run directory (emptied first)")
    p.add_argument("--out", type=Path, default=None, help="also write the table and its figures as JSON here")


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(num_trials=args.trials, min_budget=args.min_budget, max_budget=args.max_budget, eta=args.eta,
                seed=args.seed, period=args.period, deadline_seconds=args.deadline)


def _hide_gpus_or_pick_one(cpu: bool) -> None:
    """Before Ray starts: ``--cpu`` hides every GPU; otherwise the workers see one GPU, so 0.25 each packs them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif visible is None or visible.strip():
        # nvidia-smi numbers GPUs in PCI order; so must CUDA, for "GPU 0" to be the same card to both.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        os.environ["CUDA_VISIBLE_DEVICES"] = (visible or "0").split(",")[0].strip()


def sweep(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """The sweep itself (Prefect flow, Ray actors); returns its result.json."""
    import rungflow

    cpus = max(GPU_SHARE, min(1.0, (os.cpu_count() or 1) / PACKED))  # four slots even on a 2-core machine
    result = rungflow.sweep(
        probe, space=SPACE, metric="val_accuracy", mode="max", name="bench-gpu",
        search={"algorithm": "random", "seed": plan.seed, "num_trials": plan.num_trials},
        scheduler={"kind": "sha", "min_budget": plan.min_budget, "max_budget": plan.max_budget, "eta": plan.eta},
        budget={"deadline": plan.deadline_seconds},
        runtime={"kind": "ray", "gpus_per_trial": GPU_SHARE, "cpus_per_trial": cpus, "max_concurrent": PACKED,
                 "max_retries": 0},
        out=run_dir)
    return result.raw


def run(args: argparse.Namespace) -> int:
    plan = plan_of(args)
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    _hide_gpus_or_pick_one(args.cpu)
    smi_note = "--cpu hides the GPUs" if args.cpu else smi_available()
    sampler: SmiSampler | None = None
    baseline: set[int] = set()
    if smi_note is None:
        sampler = SmiSampler(plan.period, _gpu_selector())
        try:
            baseline = set(sampler.read().apps)  # processes on the GPU before the sweep: not the sweep's
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            smi_note, sampler = f"nvidia-smi -i {sampler.gpu} failed: {exc}", None
    import ray

    started_ray = not ray.is_initialized()
    run_dir = fresh_dir(args.run_dir)
    with prefect_api():
        if sampler is not None:
            sampler.start()
        try:
            result = sweep(plan, run_dir)
        finally:
            if started_ray and ray.is_initialized():
                ray.shutdown()
            samples = sampler.stop() if sampler is not None else None
    intervals = intervals_from_ledger(run_dir / "ledger.jsonl")
    figures = evaluate(intervals, samples, plan.period, baseline, smi_note, held_from_ledger(run_dir / "ledger.jsonl"))
    wall = time.perf_counter() - t0
    note = (f"{result.get('runtime', {}).get('note') or ''}").strip()
    footer = (f"Sweep: successive halving of {plan.num_trials} torch_mlp trials on {DATASET}, {plan.min_budget}→"
              f"{plan.max_budget} epochs, η = {plan.eta}, {GPU_SHARE:g} GPU per trial; stop: {result.get('stop_reason')}; "
              f"best val_accuracy {_f((result.get('best') or {}).get('score'), '.3f')}. Wall time {wall:.0f} s on "
              f"{platform.node() or 'this machine'}, {os.cpu_count()} CPUs, 1-min load average {load_before:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after"
              + "".join(f"; {k} {v}" for k, v in library_versions().items() if k in ("torch", "ray", "prefect"))
              + (f". {note}." if note else ".")
              + (f" nvidia-smi read errors: {len(sampler.errors)} ({sampler.errors[0]})." if sampler and sampler.errors else "")
              + ("" if figures["ok"] else f" FAILED: {', '.join(figures['failed'])}."))
    print(render(figures["rows"], footer), flush=True)
    if args.out is not None:
        write_json(args.out, {"plan": asdict(plan), "wall_seconds": wall, "loadavg_before": load_before,
                              "loadavg_after": os.getloadavg()[0], "stop_reason": result.get("stop_reason"),
                              "runtime_note": note, "nvidia_smi": smi_note or "available", "table": figures["rows"],
                              "ok": figures["ok"], "failed": figures["failed"],
                              "figures": {k: v for k, v in figures.items() if k not in ("rows", "failed", "ok")},
                              "samples": [asdict(s) for s in samples] if samples is not None else None,
                              "versions": library_versions()})
    return 0 if figures["ok"] else 1
