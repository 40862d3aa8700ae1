"""A user's own ``train(config, budget, checkpoint)``: from Python and YAML, on threads, local Ray and a
two-node loopback cluster; checkpoints resumed, bad input refused before spending, failures kept per trial."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import rungflow
from rungflow.config import ConfigError, load_config
from rungflow.tasks.trainables import TrainableError, TrainRequest, get_trainable_class
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "own_pytorch"
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def counting_train(config, budget, checkpoint):
    """Trains `budget` units in all, continuing from the checkpoint; reports how many it ran in this call."""
    done = 0 if checkpoint is None else checkpoint["units"]
    ran = int(budget) - done
    score = 1.0 - (config["x"] - 0.3) ** 2 - 1.0 / (1 + int(budget))
    return rungflow.Report(score=score, checkpoint={"units": int(budget), "history": [float(done)]},
                           metrics={"units_this_call": ran})


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rungflow.flows.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


# --- the contract, without Prefect or Ray --------------------------------------------------------------
def test_a_promoted_trial_gets_its_checkpoint_back_and_trains_only_the_new_units() -> None:
    from rungflow.tasks.trainables.function import register_callable

    token = register_callable(counting_train)
    trainable = get_trainable_class("function")({"callable": token})
    first = trainable.train(TrainRequest("t", {"x": 0.3}, 1))
    again = trainable.train(TrainRequest("t", {"x": 0.3}, 9, checkpoint=first.checkpoint))
    assert first.metrics["units_this_call"] == 1 and again.metrics["units_this_call"] == 8
    assert (first.budget_trained, again.budget_trained) == (1.0, 8.0)
    assert again.score == pytest.approx(1.0 - 0.1)


def test_scores_and_checkpoints_that_are_not_allowed_fail_the_trial_with_the_fix() -> None:
    from rungflow.tasks.trainables.function import register_callable

    class Opaque:  # an arbitrary object: torch.load(weights_only=True) refuses to unpickle it
        pass

    cases = {
        lambda c, b, k: "0.9": "returned str '0.9' as its score",
        lambda c, b, k: float("nan"): "not a finite number",
        lambda c, b, k: rungflow.Report(score=0.5, checkpoint=Opaque()): "torch.load(weights_only=True)",
        lambda c, b, k: rungflow.Report(score=0.5, metrics={"note": "text"}): "metrics are numbers",
    }
    for fn, message in cases.items():
        trainable = get_trainable_class("function")({"callable": register_callable(fn)})
        with pytest.raises(TrainableError, match=message.replace("(", r"\(").replace(")", r"\)")):
            trainable.train(TrainRequest("t", {"x": 0.1}, 1))


def test_raw_bytes_checkpoints_round_trip() -> None:
    from rungflow.tasks.trainables.function import register_callable

    seen: list[object] = []

    def train(config, budget, checkpoint):
        seen.append(checkpoint)
        return rungflow.Report(score=1.0, checkpoint=b"\x00raw" + bytes([int(budget)]))

    trainable = get_trainable_class("function")({"callable": register_callable(train)})
    out = trainable.train(TrainRequest("t", {}, 1))
    trainable.train(TrainRequest("t", {}, 3, checkpoint=out.checkpoint))
    assert seen == [None, b"\x00raw\x01"]


@pytest.mark.parametrize(
    ("files", "function", "expected"),
    [
        ({}, "train.py:train", "train.py does not exist"),
        ({"train.py": "def other(config, budget, checkpoint): return 1\n"}, "train.py:train", "has no 'train'"),
        ({"train.py": "train = 3\n"}, "train.py:train", "is a int, not a function"),
        ({"train.py": "def train(config, budget): return 1\n"}, "train.py:train", "takes (config, budget); it must take"),
        ({"train.py": "import no_such_module_here\n"}, "train.py:train", "importing train.py raised ModuleNotFoundError"),
        ({}, "os.path:join", "name a .py file relative to the config"),
        ({}, "/etc/passwd.py:x", "must lie in the config's folder"),
        ({}, "../up.py:train", "must lie in the config's folder"),
    ],
)
def test_bad_function_entrypoints_exit_2_with_one_line_before_spending(tmp_path: Path, files, function, expected) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: bad\ntrainable: {{function: {json.dumps(function)}}}\nspace: {json.dumps(SPACE)}\n"
                      "scheduler: {kind: sha, min_budget: 1, max_budget: 3, eta: 3}\nruntime: {kind: thread}\n")
    out = _cli("sweep", str(config), "--out", str(tmp_path / "run"))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "run" / "ledger.jsonl").exists()


def test_an_operator_can_switch_file_entrypoints_off(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("raise SystemExit('must never run')\n")
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: entrypoints-off\ntrainable: {{function: train.py:train}}\nspace: {json.dumps(SPACE)}\n")
    out = _cli("plan", str(config), env={**os.environ, "RUNGFLOW_ALLOW_ENTRYPOINTS": "0"})
    assert out.returncode == 2 and "RUNGFLOW_ALLOW_ENTRYPOINTS=0" in out.stderr and "must never run" not in out.stderr


@pytest.mark.parametrize(("kind", "options", "expected"), [
    ("function", {}, "this sweep's training function was passed from Python and is not registered in this process; "
                     "rerun it with rungflow.sweep(train, ..., out=RUN_DIR), which resumes the same run directory"),
    ("raytune_function", {"metric": "loss"}, "this sweep's Ray Tune function was passed from Python and is not "
                                             "registered in this process; rerun it with rungflow.sweep(train, ..., out=RUN_DIR)"),
    ("optuna_objective", {}, "this sweep's objective was passed from Python and is not registered in this process; "
                             "rerun it with rungflow.sweep(objective, ..., out=RUN_DIR)"),
])
def test_a_callable_from_another_process_is_refused_with_how_to_pass_it_again(kind, options, expected) -> None:
    # A run resumed in a new process names its callable by a token that only the first process registered.
    trainable = get_trainable_class(kind)({"callable": "registered-elsewhere", **options})
    with pytest.raises(TrainableError) as error:
        trainable.check()
    assert str(error.value) == "trainable: " + expected


def test_python_arguments_are_validated_like_the_yaml_sections() -> None:
    with pytest.raises(ConfigError, match=r"scheduler.eta = 1"):
        rungflow.sweep(counting_train, space=SPACE, scheduler={"kind": "sha", "min_budget": 1, "max_budget": 9, "eta": 1})
    with pytest.raises(ConfigError, match=r"takes \(config, budget\); it must take \(config, budget, checkpoint\)"):
        rungflow.sweep(lambda config, budget: 1.0, space=SPACE)  # one parameter would be a Ray Tune function (migrate.md)
    with pytest.raises(TypeError, match="schedular"):  # a misspelt section is Python's own error, naming it
        rungflow.sweep(counting_train, space=SPACE, schedular={"kind": "sha"})  # type: ignore[call-arg]


# --- end to end on real Prefect and Ray -----------------------------------------------------------------
@pytest.mark.slow
def test_python_sweep_on_threads_resumes_checkpoints_and_keeps_metrics(prefect_server: str, tmp_path: Path) -> None:
    def flaky(config, budget, checkpoint):
        if config["x"] > 0.85:
            raise RuntimeError("diverged")
        return counting_train(config, budget, checkpoint)

    result = rungflow.sweep(flaky, space=SPACE, metric="val_score", mode="max", search={"algorithm": "random", "seed": 3},
                            scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
                            budget={"max_gpu_hours": 1}, runtime={"kind": "thread", "max_concurrent": 2},
                            out=tmp_path / "run")
    assert result.stop_reason == "schedule_complete" and result.metric.name == "val_score"
    events = result.events
    promoted = [e for e in events if e["rung"] > 0 and e["status"] == "completed"]
    assert promoted and all(e["metrics"]["units_this_call"] == e["budget_trained"] < e["budget"] for e in promoted)
    failed = [e for e in events if e["status"] == "failed"]
    assert all("RuntimeError: diverged" in e["error"] for e in failed)
    assert result.best.config["x"] <= 0.85 and result.best_checkpoint["units"] == result.best.budget
    assert result.leaderboard[0]["metrics"]["units_this_call"] >= 1
    ledger = [json.loads(x) for x in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines()]
    assert any(x.get("type") == "spend" and x["record"]["metrics"].get("units_this_call") for x in ledger)
    # The same call on the same run directory resumes it: nothing trains again.
    again = rungflow.sweep(flaky, space=SPACE, metric="val_score", mode="max", search={"algorithm": "random", "seed": 3},
                           scheduler={"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3},
                           budget={"max_gpu_hours": 1}, runtime={"kind": "thread", "max_concurrent": 2},
                           out=tmp_path / "run")
    assert len(again.events) == len(events) and again.best.trial_id == result.best.trial_id


@pytest.mark.slow
def test_the_example_trains_real_torch_on_local_ray_and_as_a_prefect_subflow(prefect_server: str, tmp_path: Path,
                                                                              ray_shutdown: None) -> None:
    from prefect import flow

    sys.path.insert(0, str(EXAMPLE))
    try:
        import train as example  # the user's own module, not importable on the workers by name
    finally:
        sys.path.remove(str(EXAMPLE))

    @flow(name="users-own-flow")
    def weekly() -> rungflow.SweepResult:
        return rungflow.sweep(example.train, space={"lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
                                                    "hidden": {"type": "int", "low": 16, "high": 64},
                                                    "dropout": {"type": "float", "low": 0.0, "high": 0.3}},
                              metric="val_accuracy", mode="max", search={"algorithm": "random", "seed": 0, "num_trials": 3},
                              scheduler={"kind": "sha", "min_budget": 1, "max_budget": 3, "eta": 3},
                              budget={"max_gpu_hours": 1}, runtime={"kind": "ray", "gpus_per_trial": 0.25, "max_concurrent": 2},
                              out=tmp_path / "run")

    result = weekly()
    assert result.stop_reason == "schedule_complete" and result.best.score > 0.8
    top = [e for e in result.events if e["rung"] == 1]
    assert len(top) == 1 and top[0]["metrics"]["epochs_this_call"] == 2  # 3 epochs in all, 1 of them at rung 0
    assert set(result.best_checkpoint) == {"model", "optimiser", "epoch"} and result.best_checkpoint["epoch"] == 3
    assert all(":" in e["worker"] for e in result.events)  # ran in Ray worker processes
    assert result.ledger.gpu_hours > 0


@pytest.mark.slow
def test_yaml_function_sweep_survives_kill_9_and_resumes(prefect_server: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(textwrap.dedent("""
        import time
        def train(config, budget, checkpoint):
            time.sleep(0.2)
            done = 0 if checkpoint is None else checkpoint["units"]
            return {"score": 0.0} if False else __import__("rungflow").Report(
                score=1 - (config["x"] - 0.5) ** 2 + budget / 100, checkpoint={"units": int(budget)},
                metrics={"units_this_call": int(budget) - done})
    """))
    (project / "sweep.yaml").write_text(f"name: own\ntrainable: {{function: train.py:train}}\nspace: {json.dumps(SPACE)}\n"
                                        "search: {algorithm: random, seed: 1}\n"
                                        "scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3}\n"
                                        "runtime: {kind: thread, max_concurrent: 2}\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "RUNGFLOW_FAULT_AT": "gate:2"}
    run = tmp_path / "run"
    killed = _cli("sweep", "sweep.yaml", "--out", str(run), env=env, cwd=project)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    env.pop("RUNGFLOW_FAULT_AT")
    done = _cli("resume", str(run), env=env, cwd=tmp_path)  # from another folder: the config keeps the file's place
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["stop_reason"] == "schedule_complete"
    keys = [(e["trial_id"], e["rung"], e["attempt"]) for e in result["events"]]
    assert len(keys) == len(set(keys))  # nothing billed twice
    spent_before = {(x["record"]["trial_id"], x["record"]["rung"]) for x in before if x.get("type") == "spend"}
    assert spent_before <= {(e["trial_id"], e["rung"]) for e in result["events"]}
    assert all(e["metrics"]["units_this_call"] == e["budget_trained"] for e in result["events"] if e["status"] == "completed")


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_from_the_functions_checkpoint(prefect_server: str, tmp_path: Path,
                                                                      ray_shutdown: None) -> None:
    def slow(config, budget, checkpoint):
        time.sleep(2.0)
        return counting_train(config, budget, checkpoint)

    run = tmp_path / "run"
    killed: list[int] = []

    def kill_during_the_promoted_rung() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            ledger = run / "ledger.jsonl"
            if ledger.exists() and ledger.read_text().count('"type": "spend"') >= 3:
                time.sleep(1.0)
                for line in ledger.read_text().splitlines():
                    entry = json.loads(line)
                    if entry.get("type") == "spend" and entry["record"].get("worker"):
                        pid = int(entry["record"]["worker"].split(":")[1])
                        try:
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)
                        except ProcessLookupError:
                            pass
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_during_the_promoted_rung, daemon=True)
    killer.start()
    result = rungflow.sweep(slow, space=SPACE, search={"algorithm": "random", "seed": 0, "num_trials": 3},
                            scheduler={"kind": "sha", "min_budget": 1, "max_budget": 3, "eta": 3},
                            runtime={"kind": "ray", "max_concurrent": 2, "max_retries": 2}, out=run)
    killer.join(timeout=5)
    assert killed
    promoted = [e for e in result.events if e["rung"] == 1]
    done = [e for e in promoted if e["status"] == "completed"]
    assert any(e["status"] == "lost" for e in promoted) and len(done) == 1
    assert done[0]["metrics"]["units_this_call"] == 2 and done[0]["budget_trained"] == 2  # from the rung-0 checkpoint


@pytest.mark.slow
def test_a_remote_cluster_gets_the_config_folder_as_its_working_dir(prefect_server: str, tmp_path: Path) -> None:
    from tests.test_flow import _ray_node, _stop_group

    project = tmp_path / "outside-the-repo"
    project.mkdir()
    (project / "helper_data.py").write_text("OFFSET = 0.25\n")
    (project / "train.py").write_text(textwrap.dedent("""
        import rungflow
        from helper_data import OFFSET   # a sibling module: found because the folder is the working dir
        def train(config, budget, checkpoint):
            copied = "runtime_resources" in __file__ or "working_dir_files" in __file__
            return rungflow.Report(score=config["x"] + OFFSET, metrics={"from_working_dir": float(copied)})
    """))
    (project / "sweep.yaml").write_text(f"name: remote\ntrainable: {{function: train.py:train}}\nspace: {json.dumps(SPACE)}\n"
                                        "search: {algorithm: random, seed: 0, num_trials: 3}\n"
                                        "scheduler: {kind: sha, min_budget: 1, max_budget: 3, eta: 3}\n"
                                        "runtime: {kind: ray, address: ADDRESS, max_concurrent: 2}\n")
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = _ray_node(ray_bin, ["--head", "--port", str(port), "--include-dashboard", "false"], env, tmp_path / "head.log")
    worker = None
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while subprocess.run([ray_bin, "status", "--address", address], env=env, capture_output=True,
                             timeout=60).returncode != 0:
            assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()
            time.sleep(1)
        worker = _ray_node(ray_bin, ["--address", address], env, tmp_path / "worker.log")
        config_text = (project / "sweep.yaml").read_text().replace("ADDRESS", address)
        (project / "sweep.yaml").write_text(config_text)
        out = _cli("sweep", str(project / "sweep.yaml"), "--out", str(tmp_path / "run"),
                   env={**env, "PREFECT_API_URL": prefect_server})
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        result = json.loads((tmp_path / "run" / "result.json").read_text())
        completed = [e for e in result["events"] if e["status"] == "completed"]
        assert completed and all(e["metrics"]["from_working_dir"] == 1.0 for e in completed)
        assert math.isclose(result["best"]["score"], result["best"]["config"]["x"] + 0.25)
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop_group(proc)


def test_the_example_config_loads_with_its_file_beside_it() -> None:
    config = load_config(EXAMPLE / "sweep.yaml")
    assert config.trainable.kind == "function"
    assert Path(config.trainable.options["base_dir"]) == EXAMPLE.resolve()
    config.trainable_class()(config.trainable.options).check()


@pytest.mark.slow
def test_a_cpu_only_sweep_bills_cpu_hours_and_stops_at_its_cpu_cap(prefect_server: str, tmp_path: Path) -> None:
    def busy(config, budget, checkpoint):
        time.sleep(0.3)
        return counting_train(config, budget, checkpoint)

    cap = 2 * 0.3 * 2 / 3600  # about two trials' worth of 2 CPUs x 0.3 s
    result = rungflow.sweep(busy, space=SPACE, search={"algorithm": "random", "seed": 0, "num_trials": 9},
                            scheduler={"kind": "fifo", "min_budget": 1, "max_budget": 1},
                            budget={"max_cpu_hours": cap, "price_per_cpu_hour": 3.0, "price_per_gpu_hour": 10.0},
                            runtime={"kind": "thread", "max_concurrent": 1, "gpus_per_trial": 0, "cpus_per_trial": 2},
                            out=tmp_path / "run")
    ledger = result.ledger
    assert result.stop_reason == "max_cpu_hours" and ledger.gpu_hours == 0
    assert ledger.cpu_hours >= cap and ledger.cost == pytest.approx(ledger.cpu_hours * 3.0)
    completed = [e for e in result.events if e["status"] == "completed"]
    assert all(e["cpu_hours"] > 0 for e in completed) and len(completed) < 9


def test_a_checkpoint_json_keeps_as_it_is_is_stored_without_torch_and_others_keep_their_types() -> None:
    from rungflow.tasks.trainables.function import decode_checkpoint, encode_checkpoint

    # A fresh process, as a new Ray worker is: a plain dict checkpoint round-trips and torch is never imported.
    code = ("import sys; from rungflow.tasks.trainables.function import decode_checkpoint, encode_checkpoint; "
            "state = {'iteration': 3, 'w': [0.5, 1.0], 'name': 'a'}; "
            "assert decode_checkpoint(encode_checkpoint(state, 3)) == (state, 3.0); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    # What JSON would change goes through torch and comes back with its types: tuples, int keys.
    assert decode_checkpoint(encode_checkpoint({"pair": (1, 2), 7: "seven"}, 1)) == ({"pair": (1, 2), 7: "seven"}, 1.0)
