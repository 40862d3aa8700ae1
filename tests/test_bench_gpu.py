"""``python -m bench gpu``: nvidia-smi's output parsed and accounted, and the CPU path end to end.

The accounting tests build a sweep's ledger intervals and nvidia-smi samples by hand: four workers that hold a
GPU from their first trial on, next to a process that held it before the sweep. Each check is then broken once
(a worker never listed, one billed for more than it held, a restarted promotion, a share billed wrong) and must
fail.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench import gpu
from bench.gpu import (
    GPU_SHARE,
    Interval,
    Sample,
    account,
    check_billing,
    check_resumes,
    evaluate,
    max_overlap,
    parse_apps_query,
    parse_gpu_query,
    render,
)

# nvidia-smi's csv,noheader,nounits output for one GPU held by four Ray workers of a sweep and one other process.
# Written in that format by hand: no GPU machine has run this check yet, so none was captured from one.
GPU_LINE = "37, 2287\n"
APPS_OUTPUT = "41807, 618\n48211, 416\n48212, 416\n48213, 412\n48214, 416\n"
APPS_NOT_SUPPORTED = "48211, [N/A]\n48212, [Not Supported]\n"

OTHER = 41807  # held the GPU before the sweep began
WORKERS = (48211, 48212, 48213, 48214)
PERIOD = 0.5


def test_parse_gpu_query_reads_utilisation_and_memory_and_tolerates_missing_fields() -> None:
    assert parse_gpu_query(GPU_LINE) == (37.0, 2287.0)
    assert parse_gpu_query("37, 2287\n12, 100\n") == (37.0, 2287.0)  # the GPU that -i selected comes first
    assert parse_gpu_query("[N/A], 2287\n") == (None, 2287.0)
    assert parse_gpu_query("") == (None, None)


def test_parse_apps_query_reads_pids_and_memory() -> None:
    assert parse_apps_query(APPS_OUTPUT) == {41807: 618.0, 48211: 416.0, 48212: 416.0, 48213: 412.0, 48214: 416.0}
    assert parse_apps_query(APPS_NOT_SUPPORTED) == {48211: None, 48212: None}
    assert parse_apps_query("") == {}
    assert parse_apps_query("No running processes found\n") == {}


def _fake_smi(tmp_path: Path, body: str) -> str:
    path = tmp_path / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_the_sampler_reads_the_selected_gpu_every_period(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    binary = _fake_smi(tmp_path, f"""echo "$@" >> {calls}
case "$*" in
  *--query-gpu=*) printf '{GPU_LINE}' ;;
  *--query-compute-apps=*) printf '{APPS_OUTPUT}' ;;
esac
""")
    sampler = gpu.SmiSampler(0.1, "GPU-8f3e", binary=binary).start()
    time.sleep(0.8)
    samples = sampler.stop()
    assert len(samples) >= 3 and not sampler.errors
    assert samples[0].utilisation == 37.0 and samples[0].memory_mib == 2287.0
    assert set(samples[0].apps) == {OTHER, *WORKERS}
    assert all(b.t > a.t for a, b in zip(samples, samples[1:]))
    assert all(line.startswith("-i GPU-8f3e --query-") for line in calls.read_text().splitlines())


def test_a_failing_nvidia_smi_is_reported_and_fails_the_check(tmp_path: Path) -> None:
    binary = _fake_smi(tmp_path, "echo 'Failed to initialize NVML: Driver/library version mismatch' >&2\nexit 9\n")
    sampler = gpu.SmiSampler(0.1, "0", binary=binary)
    with pytest.raises(RuntimeError, match="Driver/library version mismatch"):
        sampler.read()
    sampler.start()
    time.sleep(0.3)
    assert sampler.stop() == [] and "Driver/library version mismatch" in sampler.errors[0]
    figures = evaluate(_sweep(), [], PERIOD, baseline={OTHER})
    assert "nvidia-smi" in figures["failed"]


def _samples(until: float = 20.0, first_listed: float = 2.0, listed=WORKERS, gaps: dict[int, tuple[float, float]] | None = None,
             ) -> list[Sample]:
    """Samples every PERIOD s: OTHER throughout, each of ``listed`` from ``first_listed`` on (except in its gap)."""
    out = []
    for i in range(int(until / PERIOD) + 1):
        t = 1000.0 + i * PERIOD
        apps = {OTHER: 618.0}
        for pid in listed:
            lo, hi = (gaps or {}).get(pid, (0.0, 0.0))
            if t - 1000.0 >= first_listed and not lo <= t - 1000.0 < hi:
                apps[pid] = 416.0
        out.append(Sample(t, 40.0 if len(apps) > 1 else 0.0, 600.0 + 400.0 * (len(apps) - 1), apps))
    return out


def _interval(trial: str, rung: int, budget: float, pid: int, start: float, end: float, gpu_seconds: float | None = None,
              **metrics: float) -> Interval:
    wall = end - start
    return Interval(trial, rung, budget, pid, 1000.0 + start, 1000.0 + end, wall,
                    wall * GPU_SHARE if gpu_seconds is None else gpu_seconds, GPU_SHARE, "completed",
                    {"on_cuda": 1.0, "epochs_this_call": budget, "epochs_total": budget, **metrics})


def _promoted(trial: str, pid: int, start: float, end: float, previous: float = 1.0, budget: float = 2.0,
              **overrides: float) -> Interval:
    metrics = {"checkpoint_epoch": previous, "checkpoint_tensors": 4.0, "checkpoint_cuda_tensors": 4.0,
               "epochs_this_call": budget - previous, "epochs_total": budget, **overrides}
    return _interval(trial, 1, budget, pid, start, end, **metrics)


def _sweep() -> list[Interval]:
    """Rung 0: four trials at once on the four workers, then two more; rung 1: two promoted ones, resumed."""
    first = [_interval(f"t{i}", 0, 1.0, pid, 0.5, 6.0) for i, pid in enumerate(WORKERS)]
    more = [_interval("t4", 0, 1.0, WORKERS[0], 6.2, 9.0), _interval("t5", 0, 1.0, WORKERS[1], 6.2, 9.5)]
    return first + more + [_promoted("t0", WORKERS[2], 10.0, 14.0), _promoted("t5", WORKERS[3], 10.0, 15.0)]


def test_a_sweep_that_held_what_it_billed_passes_every_check() -> None:
    intervals, samples = _sweep(), _samples()
    acc = account(intervals, samples, PERIOD, baseline={OTHER})
    assert acc.pids_match and acc.max_processes == 4 and acc.others == []
    by_pid = {p.pid: p for p in acc.processes}
    # Listed from t = 2 s to the end (20 s): 37 samples, each standing for 0.5 s (the last for one period).
    assert by_pid[WORKERS[0]].held_seconds == pytest.approx(18.5)
    assert by_pid[WORKERS[0]].startup_seconds == pytest.approx(1.5)
    assert by_pid[WORKERS[0]].billed_before_listed_gpu_seconds == pytest.approx(1.5 * GPU_SHARE)
    assert all(p.coverage == 1.0 and p.verdict(PERIOD) for p in acc.processes)
    assert acc.utilisation_mean == 40.0 and acc.memory_peak_mib == 2200.0
    figures = evaluate(intervals, samples, PERIOD, baseline={OTHER})
    assert figures["ok"], render(figures["rows"])
    assert figures["max_overlap"] == 4
    assert figures["resumes"]["continued"] == figures["resumes"]["cuda_checkpoints"] == 2


def test_a_worker_billed_but_never_listed_fails() -> None:
    figures = evaluate(_sweep(), _samples(listed=WORKERS[:3]), PERIOD, baseline={OTHER})
    assert not figures["ok"]
    assert f"worker {WORKERS[3]}: 2 records" in figures["failed"]
    assert "trials at once (≥ 4)" in figures["failed"]  # three processes at once is not packing four


def test_a_worker_billed_for_more_than_it_held_fails() -> None:
    intervals = _sweep()
    # t5's promotion billed as if it had held a whole GPU for its 5 s: more than 0.25 of what the worker held.
    intervals[-1] = replace(intervals[-1], gpu_seconds=50.0)
    acc = account(intervals, _samples(), PERIOD, baseline={OTHER})
    assert not {p.pid: p for p in acc.processes}[WORKERS[3]].verdict(PERIOD)
    figures = evaluate(intervals, _samples(), PERIOD, baseline={OTHER})
    assert f"worker {WORKERS[3]}: 2 records" in figures["failed"]
    assert "GPU-s − wall × 0.25, largest" in figures["failed"]


def test_a_worker_missing_from_nvidia_smi_while_billed_fails() -> None:
    samples = _samples(gaps={WORKERS[2]: (9.5, 14.5)})  # gone during its whole promotion, 10-14 s
    acc = account(_sweep(), samples, PERIOD, baseline={OTHER})
    worker = {p.pid: p for p in acc.processes}[WORKERS[2]]
    assert worker.coverage is not None and worker.coverage < gpu.MIN_COVERAGE
    assert not worker.verdict(PERIOD)


def test_pids_from_another_namespace_stand_in_for_the_workers() -> None:
    renamed = [Sample(s.t, s.utilisation, s.memory_mib, {(pid + 100_000 if pid in WORKERS else pid): v
                                                         for pid, v in s.apps.items()}) for s in _samples()]
    acc = account(_sweep(), renamed, PERIOD, baseline={OTHER})
    assert not acc.pids_match and acc.listed_any and acc.max_processes == 4 and len(acc.others) == 4
    figures = evaluate(_sweep(), renamed, PERIOD, baseline={OTHER})
    assert figures["ok"]
    assert any("another pid namespace" in r[2] for r in figures["rows"])


def test_a_promotion_that_restarted_from_zero_or_from_a_cpu_checkpoint_fails() -> None:
    restarted = _sweep()
    restarted[-1] = _promoted("t5", WORKERS[3], 10.0, 15.0, epochs_this_call=2.0)  # retrained all 2 epochs
    resumes = check_resumes(restarted)
    assert resumes.promoted == 2 and resumes.continued == 1 and resumes.problems
    assert "promoted trials resumed at their epoch" in evaluate(restarted, _samples(), PERIOD, {OTHER})["failed"]

    no_checkpoint = _sweep()
    no_checkpoint[-1] = _interval("t5", 1, 2.0, WORKERS[3], 10.0, 15.0)
    assert check_resumes(no_checkpoint).continued == 1

    on_cpu = _sweep()
    on_cpu[-1] = _promoted("t5", WORKERS[3], 10.0, 15.0, checkpoint_cuda_tensors=3.0)
    assert "... from a checkpoint of CUDA tensors" in evaluate(on_cpu, _samples(), PERIOD, {OTHER})["failed"]
    # Without a GPU a CPU checkpoint is what is expected: nothing to fail.
    assert evaluate(on_cpu, None, PERIOD, smi_note="nvidia-smi not found")["ok"]


def test_billing_at_another_share_or_not_wall_times_share_fails() -> None:
    intervals = _sweep()
    intervals[0] = replace(intervals[0], gpus=0.5, gpu_seconds=intervals[0].wall_seconds * 0.5)
    worst, wrong = check_billing(intervals)
    assert worst == pytest.approx(5.5 * 0.25) and len(wrong) == 1


def test_held_from_ledger_takes_each_workers_release_line(tmp_path: Path) -> None:
    def hold(worker: str, at: float, released: float | None) -> str:
        return json.dumps({"type": "hold", "hold": {"worker": worker, "gpus": 0.25, "cpus": 1.0, "acquired_at": at,
                                                     "released_at": released}})

    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("\n".join([
        hold("actor-0", 100.0, None), hold("actor-1", 101.0, None), json.dumps({"type": "session", "session": {}}),
        hold("actor-0", 100.0, 140.0), hold("actor-0", 150.0, None), hold("actor-0", 150.0, 160.0),
        hold("actor-1", 101.0, None),
    ]) + "\n")
    # actor-0 twice (40 s, then 10 s), actor-1 never released: 50 s x 0.25, three workers, one still open.
    assert gpu.held_from_ledger(ledger) == (pytest.approx(12.5), 3, 1)
    assert gpu.held_from_ledger(_write(tmp_path / "old.jsonl", "")) == (0, 0, 0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_max_overlap_counts_spans_open_at_once() -> None:
    assert max_overlap((a, b) for a, b in [(0, 2), (1, 3), (2, 4)]) == 2  # touching ends do not overlap
    assert max_overlap([(0, 5), (1, 5), (2, 5), (3, 5)]) == 4
    assert max_overlap([]) == 0


def test_checkpoint_locations_tells_a_cuda_checkpoint_on_a_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from rungflow.tasks.trainables.torch_mlp import _save

    model = torch.nn.Linear(4, 2)
    optimiser = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimiser.step()  # AdamW's state now holds a step counter per parameter: a one-element CPU tensor even on a GPU
    assert gpu.checkpoint_locations(_save(model, optimiser, 3, 0.5)) == (["cpu", "cpu"], 3)
    # What torch.save writes for a model trained on the first GPU: every tensor but the step counters tagged cuda:0.
    monkeypatch.setattr("torch.serialization.location_tag", lambda storage: "cuda:0" if storage.nbytes() > 4 else "cpu")
    locations, epoch = gpu.checkpoint_locations(_save(model, optimiser, 7, 0.5))
    assert epoch == 7 and locations == ["cuda:0", "cuda:0"]


@pytest.mark.parametrize(("visible", "cpu", "workers_see"), [
    (None, False, "0"), ("2,3", False, "2"), ("GPU-8f3e", False, "GPU-8f3e"), ("", False, ""), ("0,1", True, ""),
])
def test_the_workers_see_one_gpu_or_none(monkeypatch: pytest.MonkeyPatch, visible: str | None, cpu: bool,
                                         workers_see: str) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "")  # so that the teardown restores what the test process had
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    gpu._hide_gpus_or_pick_one(cpu)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == workers_see  # two shares on two cards would not be packing
    if workers_see:
        assert gpu._gpu_selector() == workers_see and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.slow
def test_the_cpu_path_runs_a_packed_sweep_and_checks_it_end_to_end(prefect_server: str, tmp_path: Path,
                                                                   ray_shutdown: None, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # --cpu hides the GPUs for the rest of the process: restored after
    parser = argparse.ArgumentParser()
    gpu.add_arguments(parser)
    args = parser.parse_args(["--cpu", "--trials", "8", "--min-budget", "1", "--max-budget", "4", "--eta", "2",
                              "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "gpu.json")])
    status = gpu.run(args)
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "unavailable (--cpu hides the GPUs)" in printed and "FAIL" not in printed
    report = json.loads((tmp_path / "gpu.json").read_text())
    figures = report["figures"]
    assert report["ok"] and report["samples"] is None and report["stop_reason"] == "schedule_complete"
    assert figures["max_overlap"] >= 4  # four trials at once on this 2-core machine, each holding 0.25 GPU
    # 8 trials at 1 epoch, 4 promoted to 2, 2 to 4: each promotion resumed from its own checkpoint.
    assert figures["resumes"]["records"] == 14 and figures["resumes"]["promoted"] == 6
    assert figures["resumes"]["continued"] == 6
    ledger = gpu.intervals_from_ledger(tmp_path / "run" / "ledger.jsonl")
    assert all(iv.gpus == GPU_SHARE and iv.metrics["on_cuda"] == 0.0 for iv in ledger)
    assert all(iv.gpu_seconds == pytest.approx(iv.wall_seconds * GPU_SHARE) for iv in ledger)
    assert sum(iv.gpu_seconds for iv in ledger) == pytest.approx(figures["gpu_seconds_billed"])
    # One Ray worker process per worker the pool held, none of them this process: four at once, and more only where
    # an idle worker was given back at a barrier and a new one started (release_idle_after: auto, which waits as
    # long as a worker took to start; under load a barrier can outlast that).
    pids = {iv.pid for iv in ledger}
    _, workers_held, _ = gpu.held_from_ledger(tmp_path / "run" / "ledger.jsonl")
    assert len(pids) == workers_held >= 4 and os.getpid() not in pids
    assert printed.count("| check | ledger | nvidia-smi |") == 1  # one table
