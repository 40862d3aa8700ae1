"""Fault figures: a sweep through a Prefect server killed for 60 s, a PostgreSQL restart, an MLflow server down 60 s.

Each scenario runs the same sweep through the CLI (two Hyperband iterations, 44 train task runs of
``--sleep`` seconds, three at a time) against real server processes, injects its fault once the
first three trials are billed, and reports what was lost (trials missing from the ledger,
``result.json``, the Optuna study, MLflow; (trial, rung) billed twice), how the flow run ended, how
many train task runs the Prefect API shows, and the wall-clock against the same sweep without a fault.

    flock /tmp/rungflow-cpu.lock .venv/bin/python -m bench.faults --outage 60 --json bench/out/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO, free_port
from tests.servers import RestartableMLflow, RestartablePrefect

PLANNED = 44  # train task runs of the sweep below


class LocalPostgres:
    """A throwaway PostgreSQL cluster (Debian's binaries) on loopback, which can be restarted."""

    password = "faults-pw"

    def __init__(self, root: Path) -> None:
        self.bin = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1].parent
        self.root, self.data, self.port = root, root / "data", free_port()
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            shutil.chown(root, "postgres")
        pw = root / "pw"
        pw.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(pw, "postgres")
        subprocess.run([*self.run_as, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={pw}"], check=True,
                       capture_output=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([*self.run_as, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                                      "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                                     stdout=(self.root / "postgres.log").open("a"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        while subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode:
            assert self.proc.poll() is None, (self.root / "postgres.log").read_text()[-2000:]
            time.sleep(0.2)

    def stop(self) -> None:
        """A fast shutdown (SIGINT to the postmaster), as `systemctl restart postgresql` does."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                           capture_output=True)
            self.proc.wait(timeout=60)

    def createdb(self, name: str) -> None:
        subprocess.run([*self.run_as, str(self.bin / "createdb"), "-h", str(self.root), "-p", str(self.port), "-U",
                        "postgres", name], check=True, capture_output=True)

    def url(self, db: str, driver: str) -> str:
        return f"{driver}://postgres:{self.password}@127.0.0.1:{self.port}/{db}"


def _sweep_yaml(name: str, sleep: float, extra: str = "") -> str:
    return (f"name: {name}\ntrainable: {{kind: noop, options: {{sleep_seconds: {sleep}}}}}\n"
            "search: {algorithm: random, seed: 0}\n"
            "scheduler: {kind: hyperband, min_budget: 1, max_budget: 9, eta: 3, iterations: 2}\n"
            "budget: {max_gpu_hours: 1}\nruntime: {kind: thread, max_concurrent: 3}\n" + extra)


def _spends(ledger: Path) -> list[dict[str, Any]]:
    if not ledger.exists():
        return []
    return [e["record"] for line in ledger.read_text().splitlines() if (e := json.loads(line))["type"] == "spend"]


def run_scenario(kind: str, work: Path, sleep: float, outage: float, pg_down: float = 0.0) -> dict[str, Any]:
    """One sweep with fault ``kind`` (none, prefect, postgres, mlflow) injected after three billed trials."""
    work.mkdir(parents=True)
    (work / "prefect").mkdir()
    name = f"faults-{kind}"
    extra, pg, mlflow = "", None, None
    if kind == "postgres":
        pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="rungflow-faults-pg-")))
        pg.start()
        pg.createdb("prefect")
        pg.createdb("optuna")
        extra = f"storage: {{optuna_url: '{pg.url('optuna', 'postgresql+psycopg')}'}}\n"
    if kind == "mlflow":
        (work / "mlflow").mkdir()
        mlflow = RestartableMLflow(work / "mlflow")
        mlflow.start()
        extra = f"tracking: {{mlflow: {{tracking_uri: '{mlflow.uri}', experiment: faults}}}}\n"
    server = RestartablePrefect(work / "prefect", database_url=pg.url("prefect", "postgresql+asyncpg") if pg else None)
    config, out, log = work / "sweep.yaml", work / "run", work / "cli.log"
    config.write_text(_sweep_yaml(name, sleep, extra))
    ledger = out / "ledger.jsonl"
    figures: dict[str, Any] = {"fault": kind}
    try:
        server.start()
        env = {**os.environ, "PREFECT_API_URL": server.api, "PYTHONPATH": str(REPO)}
        began = time.time()
        cli = subprocess.Popen([sys.executable, "-m", "rungflow.flows.cli", "sweep", str(config), "--out", str(out)],
                               cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            while len(_spends(ledger)) < 3:
                assert cli.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            down = time.time()
            if kind == "prefect":
                server.kill()
                time.sleep(outage)
                figures["restart_seconds"] = round(server.start(), 1)
            elif kind == "postgres":
                assert pg is not None
                pg.stop()
                time.sleep(pg_down)
                pg.start()
            elif kind == "mlflow":
                assert mlflow is not None
                mlflow.kill()
                time.sleep(outage)
                figures["restart_seconds"] = round(mlflow.start(), 1)
            figures["down_seconds"] = round(time.time() - down, 1) if kind != "none" else 0.0
            cli.wait(timeout=1800)
            figures["cli_seconds"] = round(time.time() - began, 1)
        finally:
            if cli.poll() is None:
                cli.kill()
        figures["exit_status"] = cli.returncode
        spends = _spends(ledger)
        keys = [(s["trial_id"], s["rung"]) for s in spends]
        result = json.loads((out / "result.json").read_text())
        figures.update(
            stop_reason=result["stop_reason"], planned_task_runs=PLANNED, billed=len(keys),
            billed_twice=len(keys) - len(set(keys)), lost=PLANNED - len(set(keys)),
            result_json_events=len(result["events"]), sweep_seconds=round(result["elapsed_seconds"], 1),
            prefect_outages=(result.get("prefect_api") or {}).get("outages"),
        )
        import optuna

        url = pg.url("optuna", "postgresql+psycopg") if pg else f"sqlite:///{out / 'optuna.db'}"
        study = optuna.load_study(study_name=name, storage=url)
        figures["optuna_trials"] = len(study.trials)
        figures["optuna_unfinished"] = sum(not t.state.is_finished() for t in study.trials)
        figures["rungflow_trials"] = result["counts"]["trials"]
        if mlflow is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=mlflow.uri)
            experiment = client.get_experiment_by_name("faults")
            runs = client.search_runs([experiment.experiment_id], max_results=1000)
            children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
            figures["mlflow_trial_runs"] = len(children)
            figures["mlflow_trial_runs_distinct"] = len({r.data.tags.get("trial_id", r.info.run_name) for r in children})
            figures["mlflow_unfinished"] = sum(r.info.status == "RUNNING" for r in runs)
        api = server.api
        flow_run = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}, "limit": 1}).json()[0]
        figures["flow_run_state"] = flow_run["state_type"]
        query = {"flow_runs": {"id": {"any_": [flow_run["id"]]}},
                 "task_runs": {"name": {"like_": "train-"}, "state": {"type": {"any_": ["COMPLETED"]}}}}
        deadline = time.time() + 60
        while (shown := int(httpx.post(f"{api}/task_runs/count", json=query).json())) < len(keys) and time.time() < deadline:
            time.sleep(1)
        figures["task_runs_shown"] = shown
        artifacts = httpx.post(f"{api}/artifacts/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json()
        summary = next((a for a in artifacts if (a.get("key") or "").endswith("-summary")), None)
        figures["summary_counts_all"] = bool(summary) and f"on {result['counts']['trials']} trials" in summary["data"]
    finally:
        server.kill()
        if mlflow is not None:
            mlflow.kill()
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.root, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the Prefect / MLflow server stays down")
    parser.add_argument("--sleep", type=float, default=4.0, help="seconds per trial")
    parser.add_argument("--pg-down", type=float, default=0.0, help="seconds PostgreSQL stays stopped in its restart")
    parser.add_argument("--faults", nargs="+", default=["none", "prefect", "postgres", "mlflow"])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rungflow-faults-"))
    rows = []
    for kind in args.faults:
        row = run_scenario(kind, work / kind, args.sleep, args.outage, args.pg_down)
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = next((r for r in rows if r["fault"] == "none"), None)
    if base is not None:
        for row in rows:
            row["extra_seconds_vs_no_fault"] = round(row["cli_seconds"] - base["cli_seconds"], 1)
    report = {"outage_seconds": args.outage, "sleep_seconds": args.sleep, "pg_down_seconds": args.pg_down, "scenarios": rows, "work_dir": str(work)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
