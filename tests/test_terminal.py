"""What a user sees in a real terminal: one progress line, warnings only from Prefect, counts that add up.

The sweep runs in tmux (a real pty, so rich draws its live display as it would for a user) and the
pane's whole scrollback is read back with ``capture-pane``; a pipe would hide what a terminal shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect._internal.analytics.ci_detection import CI_ENV_VARS

from rungflow.budgets.ledger import SpendRecord, TrialStatus
from rungflow.flows.cli import _Progress, trial_counts_line
from tests.conftest import REPO

CONFIG = """\
name: terminal
trainable: {kind: noop, options: {sleep_seconds: 0.05}}
search: {algorithm: random, seed: 0}
scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}
budget: {max_gpu_hours: 10, price_per_gpu_hour: 2.0}
runtime: {kind: thread, max_concurrent: 2}
"""


def _record(trial: str, bracket: int, rung: int, budget: float, *, trained: float, ok: bool = True) -> SpendRecord:
    return SpendRecord(trial_id=trial, bracket=bracket, rung=rung, budget=budget, score=0.5 if ok else None,
                       status=TrialStatus.COMPLETED if ok else TrialStatus.FAILED, gpu_seconds=1.0, gpus=1.0, cost=0.0,
                       started_at=0.0, finished_at=1.0, budget_trained=trained)


def test_progress_advances_by_the_planned_increment_even_when_a_trainable_retrains_from_scratch() -> None:
    progress = _Progress()
    progress("planned", {"units": 3 * 1 + 1 * (9 - 1), "name": "p", "max_gpu_hours": 1.0, "mode": "max"})
    try:
        # A family without checkpoints retrains from scratch: budget_trained is the whole budget, 1 then 9.
        for record in (_record("a", 0, 0, 1, trained=1), _record("b", 0, 0, 1, trained=1), _record("c", 0, 0, 1, trained=1),
                       _record("a", 0, 1, 9, trained=9)):
            progress("result", {"record": record, "gpu_hours": 0.1, "cost": 0.2})
        task = progress.progress.tasks[0]
        assert task.completed == task.total == 11  # 3 x 1 + 1 x (9 - 1), not 3 + 9 = 12
        assert "0.1/1 GPU-h" in task.fields["spend"] and task.fields["best"] == "best 0.5"
    finally:
        progress.stop()


def test_summary_counts_every_trial_once_by_what_happened_to_it() -> None:
    from rungflow.budgets.ledger import Ledger

    ledger = Ledger(price_per_gpu_hour=1.0)
    for record in (_record("a", 0, 0, 1, trained=1), _record("b", 0, 0, 1, trained=1), _record("c", 0, 0, 1, trained=1, ok=False),
                   _record("a", 0, 1, 9, trained=8), _record("d", 1, 0, 3, trained=3)):
        ledger.charge(record)
    outcome = ledger.trials_by_outcome(max_budget=9)
    assert outcome == {"full_budget": 1, "stopped_by_gate": 1, "failed": 1, "unfinished": 1}
    line = trial_counts_line(ledger.summary(max_budget=9))
    assert line == ("4 trials: 1 reached the full budget, 1 stopped by the gate, 1 failed, "
                    "1 unfinished when the sweep stopped")


@pytest.mark.slow
def test_a_sweep_in_a_real_terminal_prints_one_progress_line_and_no_prefect_info(tmp_path: Path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it with apt-get)")
    config = tmp_path / "sweep.yaml"
    config.write_text(CONFIG)
    run_dir, done = tmp_path / "run", tmp_path / "exit-status"
    socket = str(tmp_path / "tmux.sock")
    # A newcomer's first run: a Prefect home that never saw Prefect, no CI variable and no opt-out of our making
    # (Prefect stays quiet under any of those, so each would hide its first-run telemetry notice).
    prefect_home = tmp_path / "brand-new-prefect-home"
    env = {k: v for k, v in os.environ.items()
           if k not in CI_ENV_VARS and k != "DO_NOT_TRACK"
           and not k.startswith(("PREFECT_LOGGING", "PREFECT_SERVER_ANALYTICS", "PREFECT_API_URL"))}
    env["PREFECT_HOME"] = str(prefect_home)
    command = (f"cd {REPO} && {sys.executable} -m rungflow.flows.cli sweep {config} --out {run_dir}; "
               f"echo $? > {done}; sleep 600")
    subprocess.run([tmux, "-S", socket, "new-session", "-d", "-x", "150", "-y", "50", command], env=env, check=True)
    try:
        deadline = time.time() + 300
        while not done.exists() and time.time() < deadline:
            time.sleep(1)
        pane = subprocess.run([tmux, "-S", socket, "capture-pane", "-p", "-S", "-", "-J"], capture_output=True, text=True,
                              check=True).stdout
    finally:
        subprocess.run([tmux, "-S", socket, "kill-server"], check=False)
    assert done.exists() and done.read_text().strip() == "0", pane
    assert "| INFO" not in pane, pane  # Prefect's per-task lines stay off the console ...
    assert "telemetry" not in pane.lower() and "Traceback" not in pane, pane
    assert "anonymous usage" not in pane and "DO_NOT_TRACK" not in pane, pane  # Prefect's first-run notice
    # Prefect marks the notice shown once it has printed it; with telemetry off it never does. (It still notes
    # milestones in the same folder, but sends no event under DO_NOT_TRACK.)
    assert not (prefect_home / ".sdk_telemetry" / "notice_shown").exists()
    bars = re.findall(r"(\d+)/(\d+) units", pane)
    assert len(bars) == 1, pane  # one line, redrawn in place, not one per update
    assert bars[0][0] == bars[0][1], pane  # ends at the plan's total
    assert re.search(r"\d+ trials: \d+ reached the full budget, \d+ stopped by the gate, 0 failed", pane), pane
    log = (run_dir / "sweep.log").read_text()
    assert "Task run 'train-t0000-r0' - Finished in state Completed()" in log  # ... they are in the run's log file


@pytest.mark.slow
def test_verbose_brings_prefect_info_back_to_the_console(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(CONFIG.replace("max_budget: 9", "max_budget: 3"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_LOGGING", "PREFECT_API_URL"))}
    out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "-v", "sweep", str(config), "--out", str(tmp_path / "run")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Task run 'train-t0000-r0' - Finished in state Completed()" in out.stderr + out.stdout
