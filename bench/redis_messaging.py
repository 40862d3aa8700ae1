"""Prefect's messaging on Redis (prefect-redis) against its in-memory default, at 10,000 trivial trials.

For each broker a fresh ``prefect server start`` (SQLite, rungflow's recommended recorder settings)
and, for Redis, a fresh ``redis-server``; the same sweep (fifo, N no-op trials, threads, 2 at a time)
through the CLI in its own process. Reported: the sweep's wall-clock, how long it held back trials
for the UI (``ui_sync``), train task runs the API shows when the CLI returns and how long until it
shows all N (and, when it never does, which train task runs it left in which state), and the peak RSS of
the server's process tree (and of redis-server).

``--publisher-batch-size 1`` sets ``PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE`` for the Redis server:
prefect-redis 0.2.8's publisher clears its batch after awaiting the deduplication pipeline, so an event
that arrives during a periodic flush of a part-full batch (default 5, every 10 s) is dropped unpublished;
a batch of one is flushed by the call that added it.

    flock /tmp/rungflow-cpu.lock .venv/bin/python -m bench.redis_messaging --trials 10000 --json bench/out/redis.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO, free_port
from tests.servers import RestartablePrefect


def _tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo += children.get(current, [])
    return total / 1024.0


class PeakRSS:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, _tree_rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak, 1)


def run(broker: str, trials: int, work: Path, publisher_batch_size: int | None = None) -> dict[str, Any]:
    work.mkdir(parents=True)
    env: dict[str, str] = {}
    redis = None
    if broker == "redis":
        port = free_port()
        redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                  "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
                                 stdout=(work / "redis.log").open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            assert redis.poll() is None and time.time() < deadline, (work / "redis.log").read_text()
            time.sleep(0.2)
        env = {"PREFECT_MESSAGING_BROKER": "prefect_redis.messaging", "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
               "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1", "PREFECT_REDIS_MESSAGING_PORT": str(port)}
        if publisher_batch_size is not None:
            env["PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE"] = str(publisher_batch_size)
    (work / "prefect").mkdir()
    server = RestartablePrefect(work / "prefect", env=env)
    name = f"redis-bench-{broker}"
    config = work / "sweep.yaml"
    config.write_text(f"name: {name}\ntrainable: {{kind: noop}}\nsearch: {{algorithm: random, seed: 0, num_trials: {trials}}}\n"
                      "scheduler: {kind: fifo, min_budget: 1, max_budget: 1}\nruntime: {kind: thread, max_concurrent: 2}\n")
    try:
        startup = server.start()
        assert server.proc is not None
        rss = PeakRSS(server.proc.pid)
        redis_rss = PeakRSS(redis.pid) if redis is not None else None
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(work / "run")],
                             cwd=REPO, env={**os.environ, "PREFECT_API_URL": server.api, "PYTHONPATH": str(REPO)},
                             capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"{broker}: the sweep failed: {out.stderr[-2000:]}")
        result = json.loads((work / "run" / "result.json").read_text())
        api = server.api
        flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}, "limit": 1}).json()[0]
        query = {"flow_runs": {"id": {"any_": [flow_run["id"]]}},
                 "task_runs": {"name": {"like_": "train-"}, "state": {"type": {"any_": ["COMPLETED"]}}}}
        t1 = time.perf_counter()
        at_return = shown = int(httpx.post(f"{api}/task_runs/count", json=query).json())
        while shown < trials and time.perf_counter() - t1 < 120:
            time.sleep(1)
            shown = int(httpx.post(f"{api}/task_runs/count", json=query).json())
        catch_up = time.perf_counter() - t1
        # The train task runs the API never showed completed: name and the state it holds them in.
        stuck: list[str] = []
        if shown < trials:
            query_all = {"flow_runs": query["flow_runs"], "task_runs": {"name": {"like_": "train-"}}}
            offset = 0
            while len(stuck) < 10:
                page = httpx.post(f"{api}/task_runs/filter", json={**query_all, "limit": 200, "offset": offset}).json()
                stuck += [f"{t['name']}: {t['state_type']}" for t in page if t["state_type"] != "COMPLETED"]
                if len(page) < 200:
                    break
                offset += 200
        # Proof the server's messages went through Redis: the commands it served and the streams it holds.
        redis_commands = None
        if redis is not None:
            info = subprocess.run(["redis-cli", "-p", env["PREFECT_REDIS_MESSAGING_PORT"], "info", "stats"],
                                  capture_output=True, text=True).stdout
            redis_commands = int(next(line.split(":")[1] for line in info.splitlines()
                                      if line.startswith("total_commands_processed")))
        server_log = "\n".join((work / "prefect").glob("server-*.log").__next__().read_text().splitlines()[-40:])
        return {
            "broker": broker, "publisher_batch_size": publisher_batch_size, "trials": trials, "server_start_s": round(startup, 1), "cli_wall_s": round(wall, 1),
            "ms_per_trial": round(1000 * wall / trials, 2), "flow_run_state": flow_run["state_type"],
            "ui_sync": result.get("ui_sync"), "task_runs_shown_at_return": at_return, "task_runs_shown": shown,
            "catch_up_s": round(catch_up, 1), "not_completed_in_api": stuck[:10], "server_peak_rss_mb": rss.stop(),
            "redis_peak_rss_mb": redis_rss.stop() if redis_rss else None, "redis_commands": redis_commands,
            "server_errors": [line for line in server_log.splitlines() if "ERROR" in line or "Traceback" in line][:5],
        }
    finally:
        server.kill()
        if redis is not None:
            redis.kill()
            redis.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_messaging", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--brokers", nargs="+", default=["memory", "redis"], choices=["memory", "redis"])
    parser.add_argument("--publisher-batch-size", type=int,
                        help="PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE for the Redis server (prefect-redis's default: 5)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rungflow-redis-"))
    rows = []
    for broker in args.brokers:
        row = run(broker, args.trials, work / broker, args.publisher_batch_size if broker == "redis" else None)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
