"""End-to-end sweeps as Prefect flows on a real Prefect server, in threads and on real local Ray."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from rungflow.config import validate
from rungflow.flows.sweep import run_sweep
from tests.conftest import REPO, free_port, sweep_config

pytestmark = pytest.mark.slow


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def _task_run_names(api: str, flow_name: str, expect_train: int) -> list[str]:
    """Task run names of the flow run, polled: task run states reach the server as events, a little later."""
    flows = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [flow_name]}}}).json()
    assert flows, f"no flow run named {flow_name}"
    flow_run = flows[-1]
    assert flow_run["state_type"] == "COMPLETED"
    deadline = time.time() + 60
    while True:
        runs = httpx.post(
            f"{api}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}, "limit": 200},
        ).json()
        names = sorted(r["name"] for r in runs)
        if sum(n.startswith("train-") for n in names) >= expect_train or time.time() > deadline:
            return names
        time.sleep(1)


def test_thread_sweep_writes_result_and_names_task_runs(prefect_server: str, tmp_path: Path) -> None:
    # Not a valid artifact key as it stands: the keys use its slug, "thread-sweep-1-…".
    cfg = validate(sweep_config(tmp_path, name="Thread sweep_1", runtime={"kind": "thread", "max_concurrent": 2,
                                                                             "gpus_per_trial": 0.5}))
    result = run_sweep(cfg, tmp_path / "run")
    on_disk = _result(tmp_path / "run")
    assert on_disk["status"] == "finished" and result["stop_reason"] == "schedule_complete"
    # Hyperband 1..9, eta 3: brackets (9@1, 3@3, 1@9), (5@3, 1@9), (3@9): 17 trials, 22 trial-rungs.
    assert len(on_disk["trials"]) == 17
    assert len(on_disk["events"]) == 22
    assert [len(b["rungs"]) for b in on_disk["schedule"]] == [3, 2, 1]
    for key in ("trial_id", "bracket", "rung", "budget", "score", "status", "gpu_hours", "cumulative_gpu_hours",
                "started_at", "finished_at"):
        assert key in on_disk["events"][0]
    assert set(on_disk["best"]) >= {"trial_id", "config", "score", "budget"}
    assert on_disk["best"]["budget"] == 9
    ledger = on_disk["ledger"]
    assert ledger["trials_started"] == 17 and ledger["trials_failed"] == 0
    # Billed wall-clock x 0.5 GPU; money = GPU-hours x price.
    wall = sum(e["wall_seconds"] for e in on_disk["events"])
    assert ledger["gpu_hours"] == pytest.approx(wall * 0.5 / 3600, rel=1e-6)
    assert ledger["cost"] == pytest.approx(ledger["gpu_hours"] * 2.0, rel=1e-6)
    names = _task_run_names(prefect_server, "Thread sweep_1", 22)
    assert sum(n.startswith("train-") for n in names) == 22
    assert "train-t0000-r0" in names
    assert {"search-b0", "gate-b0-r0", "promote-b0-r0", "search-b2"} <= set(names)
    artifacts = {a["key"]: a for a in httpx.post(f"{prefect_server}/artifacts/latest/filter", json={}).json()}
    board = artifacts["thread-sweep-1-leaderboard"]
    assert board["type"] == "table" and "t00" in str(board["data"])
    assert "Top 17 of 17 trials" in board["description"] and "ok 17" in board["description"]
    assert artifacts["thread-sweep-1-budget"]["type"] == "progress"
    assert "schedule_complete" in artifacts["thread-sweep-1-decision"]["data"]
    plot = artifacts["thread-sweep-1-plot"]
    assert plot["type"] == "markdown" and "](data:image/png;base64,iVBOR" in plot["data"]
    summary = artifacts["thread-sweep-1-summary"]
    assert summary["type"] == "markdown" and on_disk["best"]["trial_id"] in summary["data"]
    assert f"${on_disk['best']['cost']:.2f}" in summary["data"] and "every planned stage ran" in summary["data"]
    # Created once and updated in place as stages finish: one artifact per kind in the flow run.
    run_id = httpx.post(f"{prefect_server}/flow_runs/filter",
                        json={"flow_runs": {"name": {"any_": ["Thread sweep_1"]}}}).json()[-1]["id"]
    mine = httpx.post(f"{prefect_server}/artifacts/filter",
                      json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    assert sorted(a["key"] for a in mine) == sorted(f"thread-sweep-1-{k}" for k in
                                                     ("budget", "decision", "leaderboard", "plot", "summary"))


def test_failing_and_nan_trials_lose_at_the_gate(prefect_server: str, tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path, name="failing", trainable={
        "kind": "noop", "options": {"fail_when_x_above": 0.7, "nan_when_x_above": 0.5}}))
    result = run_sweep(cfg, tmp_path / "run")
    failed = [e for e in result["events"] if e["status"] == "failed"]
    assert failed, "expected some trials with x > 0.5 to fail"
    assert any("not a finite number" in (e["error"] or "") for e in failed)
    assert any("RuntimeError" in (e["error"] or "") for e in failed)
    failed_ids = {e["trial_id"] for e in failed}
    promoted = {e["trial_id"] for e in result["events"] if e["rung"] > 0}
    assert not failed_ids & promoted
    assert result["ledger"]["trials_failed"] == len(failed_ids)
    assert result["stop_reason"] == "schedule_complete"


def test_same_seed_same_proposals_and_schedule(prefect_server: str, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        cfg = validate(sweep_config(tmp_path / str(i), name=f"repro-{i}", search={"algorithm": "tpe", "seed": 7}))
        runs.append(run_sweep(cfg, tmp_path / str(i) / "run"))
    assert runs[0]["trials"] == runs[1]["trials"]
    strip = lambda r: [(e["trial_id"], e["rung"], e["score"]) for e in r["events"]]  # noqa: E731
    assert sorted(strip(runs[0])) == sorted(strip(runs[1]))


def test_asha_promotes_without_barriers(prefect_server: str, tmp_path: Path) -> None:
    cfg = validate(sweep_config(tmp_path, name="asha", scheduler={"kind": "asha", "min_budget": 1, "max_budget": 9,
                                                                    "eta": 3}, search={"algorithm": "bohb", "seed": 1,
                                                                                       "num_trials": 18}))
    result = run_sweep(cfg, tmp_path / "run")
    assert result["ledger"]["trials_started"] == 18
    assert any(e["rung"] == 2 and e["budget"] == 9 for e in result["events"])
    assert result["stop_reason"] == "schedule_complete"


def test_ray_sweep_trains_torch_on_workers_and_resumes_from_checkpoints(
    prefect_server: str, tmp_path: Path, ray_shutdown: None
) -> None:
    cfg = validate(sweep_config(
        tmp_path, name="ray-torch",
        trainable={"kind": "torch_mlp", "options": {"dataset": "digits"}},
        scheduler={"kind": "sha", "min_budget": 1, "max_budget": 9, "eta": 3},
        runtime={"kind": "ray", "gpus_per_trial": 0.25, "cpus_per_trial": 1},
    ))
    result = run_sweep(cfg, tmp_path / "run")
    events = result["events"]
    assert [(b, len(s["rungs"])) for b, s in enumerate(result["schedule"])] == [(0, 3)]
    assert len(events) == 9 + 3 + 1
    pids = {e["worker"].split(":")[1] for e in events}
    assert str(os.getpid()) not in pids, "train tasks should run in Ray worker processes"
    by_rung = {r: [e for e in events if e["rung"] == r] for r in (0, 1, 2)}
    assert all(e["budget_trained"] == 1 for e in by_rung[0])
    # Promoted trials continue from the checkpoint: 3-1 and 9-3 epochs, not 3 and 9.
    assert all(e["budget_trained"] == 2 for e in by_rung[1])
    assert all(e["budget_trained"] == 6 for e in by_rung[2])
    assert result["best"]["score"] > 0.8
    assert result["runtime"]["note"]  # no GPU here: the fallback is stated
    assert (tmp_path / "run" / "checkpoints" / result["best"]["trial_id"] / "rung-2.ckpt").exists()
    names = _task_run_names(prefect_server, "ray-torch", 13)
    assert sum(n.startswith("train-") for n in names) == 13


def test_hard_cap_mid_stage_cancels_in_flight_ray_trials_and_bills_them(
    prefect_server: str, tmp_path: Path, ray_shutdown: None
) -> None:
    cfg = validate(sweep_config(
        tmp_path, name="cap",
        trainable={"kind": "noop", "options": {"sleep_seconds": 1.0}},
        scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
        search={"algorithm": "random", "seed": 0, "num_trials": 8},
        budget={"max_gpu_hours": 2.5 / 3600, "on_cap": "cancel"},
        runtime={"kind": "ray", "gpus_per_trial": 1, "cpus_per_trial": 1},
    ))
    result = run_sweep(cfg, tmp_path / "run")
    assert result["stop_reason"] == "max_gpu_hours"
    statuses = [e["status"] for e in result["events"]]
    assert "cancelled" in statuses and statuses.count("completed") < 8
    cancelled = [e for e in result["events"] if e["status"] == "cancelled"]
    assert all(e["gpu_hours"] >= 0 for e in cancelled)
    assert len(result["events"]) == 8  # every trial billed exactly once
    stop = [d for d in result["decisions"] if d["action"] == "stop"]
    assert stop and stop[-1]["reason"] == "max_gpu_hours"


def _ray_node(ray_bin: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """One Ray node in the foreground (``--block``), in its own process group so the test stops exactly it.

    A node joining a cluster gets a temp dir of its own, as it would on its own machine. Sharing the head's, two
    runtime-env agents unpack one working_dir into the same folder, and the second unpacking deletes the folder
    the first one's workers already run in. Under /tmp, not tmp_path: Ray's socket paths must stay short.
    """
    own_dir = tempfile.mkdtemp(prefix="ray-node-") if "--address" in args else None
    # Workers on OS-chosen ports: `ray start` hands out 10002 upwards, and with another test's cluster on the machine a
    # driver's port can be taken between the raylet's check and its bind, which aborts the driver (the test process)
    # with "Check failed: Failed to start the grpc server ... port 10002". ray.init(address="local") already does this.
    proc = subprocess.Popen([ray_bin, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                             "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
                             *(["--temp-dir", own_dir] if own_dir else []), *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    proc.ray_temp_dir = own_dir  # removed by _stop_group once the node is down
    return proc


def _stop_group(proc: subprocess.Popen) -> None:
    # Never `ray stop`: it stops every Ray instance on the machine, not just this test's nodes.
    try:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
    finally:
        if getattr(proc, "ray_temp_dir", None):
            shutil.rmtree(proc.ray_temp_dir, ignore_errors=True)


def test_sweep_on_a_ray_cluster_reached_by_address(prefect_server: str, tmp_path: Path, ray_shutdown: None) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    nodes_started = [_ray_node(ray_bin, ["--head", "--port", str(port), "--include-dashboard", "false"], env,
                               tmp_path / "head.log")]
    try:
        deadline = time.time() + 180
        while subprocess.run([ray_bin, "status", "--address", f"127.0.0.1:{port}"], env=env, capture_output=True,
                             timeout=60).returncode != 0:
            assert nodes_started[0].poll() is None, (tmp_path / "head.log").read_text()
            assert time.time() < deadline, "the Ray head did not come up"
            time.sleep(1)
        nodes_started.append(_ray_node(ray_bin, ["--address", f"127.0.0.1:{port}"], env, tmp_path / "node.log"))
        ray.init(address=f"127.0.0.1:{port}", logging_level="WARNING")
        while ray.cluster_resources().get("CPU", 0) < 2:
            assert time.time() < deadline, "the second Ray node did not join"
            time.sleep(1)
        ray.shutdown()
        cfg = validate(sweep_config(
            tmp_path, name="cluster",
            trainable={"kind": "noop", "options": {"sleep_seconds": 0.5}},
            scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
            search={"algorithm": "random", "seed": 0, "num_trials": 6},
            runtime={"kind": "ray", "address": f"127.0.0.1:{port}", "cpus_per_trial": 1},
        ))
        result = run_sweep(cfg, tmp_path / "run")
        nodes = {e["worker"].split(":")[2] for e in result["events"]}
        assert len(nodes) == 2, f"trials should spread over both nodes, saw {nodes}"
        assert result["ledger"]["trials_completed"] == 6

        # What the sweep held, against Ray's own record of its actors. Hyperband's barriers leave workers idle:
        # with a 0.3 s grace they are given back and started again, so the holds are many short spans. One bracket
        # at a time, so every rung's last 1 s trial leaves the other worker idle past the grace.
        held_cfg = validate(sweep_config(
            tmp_path, name="cluster-held",
            trainable={"kind": "noop", "options": {"sleep_seconds": 1.0}},
            scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3, "max_open_brackets": 1},
            search={"algorithm": "random", "seed": 0},
            runtime={"kind": "ray", "address": f"127.0.0.1:{port}", "cpus_per_trial": 1, "gpus_per_trial": 0.5,
                     "release_idle_after": 0.3},
            storage={"run_dir": str(tmp_path / "held")},
        ))
        before = _trial_worker_ids()
        held = run_sweep(held_cfg, tmp_path / "held")["ledger"]
        lifetimes = _trial_worker_lifetimes(exclude=before)
        assert held["workers_held"] == len(lifetimes) >= 3, (held, lifetimes)  # released idle and started again
        ray_gpu_hours = sum(lifetimes) * 0.5 / 3600  # billed its half GPU, on CPU here
        assert held["gpu_hours_held"] == pytest.approx(ray_gpu_hours, rel=0.02), (held, lifetimes)
        assert held["gpu_hours_held"] > held["gpu_hours"]  # start-up and idle grace: held is more than trained
    finally:
        ray.shutdown()
        for proc in reversed(nodes_started):
            _stop_group(proc)


def _trial_worker_ids() -> set[str]:
    from ray._private.state import state

    return {actor_id for actor_id, a in state.actor_table(None).items() if "TrialWorker" in a.get("ActorClassName", "")}


def _trial_worker_lifetimes(exclude: set[str]) -> list[float]:
    """Seconds each of the sweep's workers lived, from Ray's actor table (its start to its end, as Ray reports
    them), once every one of them is dead."""
    from ray._private.state import state

    deadline = time.time() + 30
    while True:
        actors = {i: a for i, a in state.actor_table(None).items()
                  if "TrialWorker" in a.get("ActorClassName", "") and i not in exclude}
        if all(a["State"] == "DEAD" and a.get("EndTime") for a in actors.values()) or time.time() > deadline:
            return [(a["EndTime"] - a["StartTime"]) / 1000.0 for a in actors.values()]
        time.sleep(0.5)


def test_cli_sweep_and_report(prefect_server: str, tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "name: cli-sweep\ntrainable: {kind: noop}\nsearch: {algorithm: tpe, seed: 3}\n"
        "scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\n"
        "budget: {max_gpu_hours: 1}\nruntime: {kind: thread}\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(out),
                          "--set", "scheduler.eta=3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "leaderboard" in run.stdout and "schedule_complete" in run.stdout
    report = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "report", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "t00" in report.stdout and (out / "anytime.png").stat().st_size > 1000


def test_marginal_gain_rule_stops_a_surrogate_sweep_and_records_why(prefect_server: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from rungflow.tasks.trainables.yahpo_lcbench import LCBenchTrainable  # noqa: F401  (data path checked below)

    base = sweep_config(
        tmp_path, name="lcbench-stop",
        trainable={"kind": "yahpo_lcbench", "options": {"instance": "3945"}},
        search={"algorithm": "bohb", "seed": 0},
        scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 52, "eta": 3, "iterations": 4},
        # One slot: the brackets run one after another, so the three runs make the same proposals whatever order
        # results come back in (on more slots brackets run side by side and follow that order).
        runtime={"kind": "thread", "max_concurrent": 1},
    )
    try:
        full = run_sweep(validate({**base, "budget": {"max_gpu_hours": 100}}), tmp_path / "full")
    except Exception as exc:  # only a missing LCBench data folder is a reason to skip
        if "RUNGFLOW_YAHPO_DATA" in str(exc):
            pytest.skip(str(exc))
        raise
    stopped = run_sweep(validate({**base, "budget": {
        "max_gpu_hours": 100, "min_gain_per_gpu_hour": 0.5, "window_gpu_hours": 0.5, "min_gpu_hours": 0.5,
        "patience": 2}}), tmp_path / "stopped")
    assert full["stop_reason"] == "schedule_complete"
    assert stopped["stop_reason"] == "min_gain_per_gpu_hour"
    assert stopped["ledger"]["gpu_hours"] < full["ledger"]["gpu_hours"]
    last = stopped["decisions"][-1]
    assert last["action"] == "stop" and last["gain_per_gpu_hour"] < 0.5 and last["threshold"] == 0.5
    assert last["below_threshold_checks"] >= 2
    # The spend up to the stop is the same spend the full run made: same seed, same proposals.
    keys = lambda r: {(e["trial_id"], e["rung"], e["score"]) for e in r["events"]}  # noqa: E731
    assert keys(stopped) <= keys(full)
    # The default window, one Hyperband iteration's brackets (4 here), judged as each bracket completes:
    # the stop comes before the first stage of a bracket, once the window and an iteration before it
    # (8 brackets) are complete.
    by_iteration = run_sweep(validate({**base, "budget": {"max_gpu_hours": 100, "min_gain_per_gpu_hour": 0.5,
                                                          "patience": 1}}), tmp_path / "by-iteration")
    last = by_iteration["decisions"][-1]
    assert by_iteration["stop_reason"] == "min_gain_per_gpu_hour", last
    match = re.fullmatch(r"bracket (\d+) rung 0", last["stage"])
    assert match and int(match.group(1)) >= 8 and "completed brackets" in last["detail"], last
    assert keys(by_iteration) <= keys(full)
