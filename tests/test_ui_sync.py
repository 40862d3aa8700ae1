"""The sweep holds back new trials while the Prefect API is behind, so the UI shows every trial."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from rungflow.config import ConfigError, validate
from rungflow.flows.sweep import run_sweep
from rungflow.tasks.ui_sync import TRAIN_TASK_PREFIX, RecordedTaskRuns
from tests.conftest import sweep_config


class FakeServer:
    """Records ``per_poll`` more task runs each time it is asked, up to what the flow has finished (or a cap)."""

    def __init__(self, gate: RecordedTaskRuns, per_poll: int, cap: int | None = None) -> None:
        self.gate, self.per_poll, self.cap, self.recorded, self.polls = gate, per_poll, cap, 0, 0

    def __call__(self) -> int:
        self.polls += 1
        limit = self.gate.finished if self.cap is None else min(self.cap, self.gate.finished)
        self.recorded = min(limit, self.recorded + self.per_poll)
        return self.recorded


def _gate(max_unrecorded: int = 100, stall_seconds: float = 20.0) -> RecordedTaskRuns:
    clock = [0.0]
    gate = RecordedTaskRuns("flow-run", max_unrecorded=max_unrecorded, stall_seconds=stall_seconds,
                            _clock=lambda: clock[0], _sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    return gate


def test_no_api_call_while_the_flow_cannot_be_far_enough_ahead() -> None:
    gate = _gate(max_unrecorded=100)
    server = FakeServer(gate, per_poll=1000)
    gate.count_recorded = server
    for _ in range(100):
        gate.task_run_finished()
        gate.wait_for_server()
    assert server.polls == 0 and gate.waits == 0


def test_waits_until_the_server_is_back_within_half_the_limit() -> None:
    gate = _gate(max_unrecorded=100)
    server = FakeServer(gate, per_poll=30)
    gate.count_recorded = server
    for _ in range(250):
        gate.task_run_finished()
    gate.wait_for_server()
    assert gate.unrecorded <= 50
    assert server.recorded == 210 and server.polls == 7  # 30 a poll until 250 - recorded <= 50
    assert gate.waits == 1 and gate.waited_seconds == pytest.approx(6 * gate.poll_seconds)
    assert gate.gave_up is None


def test_gives_up_once_when_the_server_stops_recording_and_never_waits_again() -> None:
    gate = _gate(max_unrecorded=100, stall_seconds=5.0)
    server = FakeServer(gate, per_poll=50, cap=40)  # the server dropped the rest of the events
    gate.count_recorded = server
    for _ in range(200):
        gate.task_run_finished()
    gate.wait_for_server()
    assert gate.gave_up is not None and "no task run for 5 s" in gate.gave_up and "160 finished" in gate.gave_up
    polls = server.polls
    for _ in range(500):
        gate.task_run_finished()
        gate.wait_for_server()
    assert server.polls == polls


def test_an_api_error_does_not_stop_the_sweep() -> None:
    gate = _gate(max_unrecorded=1)

    def broken() -> int:
        raise httpx.ConnectError("refused")

    gate.count_recorded = broken
    gate.task_run_finished()
    gate.task_run_finished()
    gate.wait_for_server()
    assert gate.gave_up is not None and "ConnectError" in gate.gave_up


@pytest.mark.parametrize("value", [0, -5])
def test_bad_limit_names_the_field(tmp_path: Path, value: int) -> None:
    with pytest.raises(ConfigError, match="ui.max_unrecorded_task_runs"):
        validate(sweep_config(tmp_path, ui={"max_unrecorded_task_runs": value}))


@pytest.mark.slow
def test_a_fast_sweep_waits_for_the_real_server_and_it_shows_every_trial(prefect_server: str, tmp_path: Path) -> None:
    trials = 200
    cfg = validate(sweep_config(
        tmp_path, name="ui-sync", scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
        search={"algorithm": "random", "seed": 0, "num_trials": trials},
        runtime={"kind": "thread", "max_concurrent": 4}, ui={"max_unrecorded_task_runs": 10},
    ))
    result = run_sweep(cfg, tmp_path / "run")
    assert result["counts"]["by_status"] == {"ok": trials}
    sync = result["ui_sync"]
    # The server records task runs after they finish; with 10 allowed in arrears a 200-trial sweep had to wait.
    assert sync["finished_task_runs"] == trials and sync["waits"] >= 1 and sync["gave_up"] is None
    flow_run = httpx.post(f"{prefect_server}/flow_runs/filter",
                          json={"flow_runs": {"name": {"any_": ["ui-sync"]}}, "sort": "START_TIME_DESC",
                                "limit": 1}).json()[0]
    query = {"flow_runs": {"id": {"any_": [flow_run["id"]]}},
             "task_runs": {"name": {"like_": TRAIN_TASK_PREFIX}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    deadline = time.time() + 30
    while (shown := int(httpx.post(f"{prefect_server}/task_runs/count", json=query).json())) < trials:
        assert time.time() < deadline, f"the API shows {shown} of {trials} trials"
        time.sleep(0.5)
