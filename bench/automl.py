"""``python -m bench automl``: rungflow against AutoGluon and auto-sklearn on the real tables of :mod:`bench.tables`.

Per table, ``--splits`` outer folds (stratified for classification, seeded): each system trains on the other folds'
rows and is scored on the fold's, which no system sees. Every system gets the same wall-clock, ``--time-limit``
seconds: rungflow's sweep as its deadline, AutoGluon's ``time_limit`` (``medium_quality`` and ``best_quality``),
auto-sklearn's ``time_left_for_this_task``. The peers fit in worker subprocesses (AutoGluon in this environment,
auto-sklearn in its own: ``tasks/trainables/external.py``) on all the training rows, encoded as rungflow encodes
them. ``rungflow-stop`` is rungflow with the stop at the price (``--price``, in the metric's own units per GPU-hour);
``rungflow-costaware`` and ``rungflow-costblind`` are rungflow with ``search.cost_aware`` on and off, whatever the
default, with each run's trials and GPU-seconds per model family.

Each finished (table, time limit, split, system) run is a JSON file under ``--out``/runs/, so a rerun skips it;
``--render-only`` rebuilds results.json and results.md from those files. Reports: :mod:`bench.automl_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_json

__all__ = ["SYSTEMS", "add_arguments", "run", "run_one", "outer_splits", "constant_score", "test_score", "fit_rungflow",
           "families_of", "gpu_hours_to_best"]

SYSTEMS = ("rungflow", "rungflow-cold", "rungflow-stop", "rungflow-costaware", "rungflow-costblind", "ag-medium", "ag-best", "autosklearn")
DEFAULT_SYSTEMS = ("rungflow", "ag-medium", "ag-best", "autosklearn")
# The sweep's families until rungflow.automl chooses its own.
FAMILIES = ("hgb", "random_forest", "linear", "torch_mlp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tables", nargs="+", default=["dev"], help="dev, heldout, all or table names (python -m bench.tables)")
    p.add_argument("--time-limit", type=float, nargs="+", default=[60.0], help="seconds per system per split (60 and 300)")
    p.add_argument("--splits", type=int, default=3, help="outer train/test folds per table (at least 2)")
    p.add_argument("--first-splits", type=int, default=None, help="run only the first N of the folds (a slice; a rerun adds the rest)")
    p.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS), choices=SYSTEMS)
    p.add_argument("--price", type=float, default=0.1, help="rungflow-stop's min_gain_per_gpu_hour, in the metric's own units per GPU-hour (0.1 of accuracy is 10 points)")
    p.add_argument("--runtime", default=None, help="rungflow's runtime: thread, ray or a Ray address (default: automl's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/out/automl"))
    p.add_argument("--keep-runs", type=Path, default=None, metavar="DIR",
                   help="keep each rungflow run's config.json, ledger.jsonl and result.json in DIR/<table>/<limit>s/split<k>/<system>")
    p.add_argument("--portfolio-from", type=Path, default=None, metavar="DIR",
                   help="system rungflow starts from the portfolio learned on DIR's kept runs of every other table "
                        "(leave-one-table-out), not the shipped one")
    p.add_argument("--render-only", action="store_true", help="rebuild the report from the finished runs, running nothing")


# -- data ----------------------------------------------------------------------------------------------------------
def outer_splits(frame: Any, target: str, task: str, splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per outer fold; every row is a test row exactly once."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if splits < 2:
        raise ValueError(f"--splits {splits}: need at least 2 outer folds (3 is the benchmark's minimum)")
    if task == "classification":
        y = frame[target].astype(str).to_numpy()
        smallest = int(np.unique(y, return_counts=True)[1].min())
        if smallest >= splits:
            return list(StratifiedKFold(splits, shuffle=True, random_state=seed).split(frame, y))
    return list(KFold(splits, shuffle=True, random_state=seed).split(frame))


def constant_score(train: Any, test: Any, target: str, task: str) -> float:
    """The constant predictor's test score: the training rows' majority class, or their mean (R² about 0)."""
    if task == "classification":
        return float((test[target].astype(str) == train[target].astype(str).mode().iloc[0]).mean())
    return test_score(np.full(len(test), float(train[target].mean())), test[target], task)


def test_score(predicted: Any, truth: Any, task: str) -> float:
    """Accuracy (labels compared as text, so 1 and 1.0 and '1' agree) or R²."""
    if task == "classification":
        p = np.asarray([str(v) for v in predicted])
        t = np.asarray([str(v) for v in truth])
        return float((p == t).mean())
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    total = float(((t - t.mean()) ** 2).sum())
    return 1.0 - float(((t - p) ** 2).sum()) / total if total > 0 else 0.0


def _encoded(train: Any, test: Any, target: str, task: str) -> tuple[dict[str, Any], dict[str, np.ndarray], list[Any]]:
    """The peers' input: features encoded as rungflow encodes them, categories and classes from the training rows."""
    from rungflow.tasks.data import _is_categorical, encode_frame

    features = [c for c in train.columns if c != target]
    categories = {c: tuple(sorted({str(v) for v in train[c].dropna()})) for c in features if _is_categorical(train[c])}
    classes: list[Any] = []
    if task == "classification":
        classes = sorted(train[target].astype(str).unique())
        y = train[target].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    else:
        y = train[target].to_numpy(np.float64)
    request = {"feature_names": features, "categories": {k: list(v) for k, v in categories.items()}, "task": task,
               "n_classes": len(classes)}
    arrays = {"X_train": encode_frame(train, features, categories), "y_train": y,
              "X_eval": encode_frame(test, features, categories)}
    return request, arrays, classes


# -- systems -------------------------------------------------------------------------------------------------------
def _peer(env_name: str, extra: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    def fit(train: Any, test: Any, target: str, task: str, time_limit: float, workdir: Path, seed: int) -> dict[str, Any]:
        from rungflow.tasks.trainables.external import AUTOGLUON, AUTOSKLEARN, run_worker

        env = {"autogluon": AUTOGLUON, "autosklearn": AUTOSKLEARN}[env_name]
        request, arrays, classes = _encoded(train, test, target, task)
        limit = time_limit if env_name == "autogluon" else max(int(round(time_limit)), 30)
        request.update({"time_limit": limit, "seed": seed, **extra})
        # The worker scores X_eval, the test rows, without their labels; its time limit is soft, hence the margin.
        result, scores, _ = run_worker(env, "fit", request, arrays, workdir=workdir, timeout=time_limit * 3 + 180)
        assert scores is not None
        predicted = np.asarray(classes, dtype=object)[scores.argmax(axis=1)] if task == "classification" else scores
        return {"predicted": predicted, "models": int(result.get("n_models", 0)), "best_model": result.get("best_model", ""),
                "gpu_hours": 0.0}
    return fit


def families_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per model family of a ``mixed`` run: trials started, GPU-seconds billed, and the median over its trials of
    GPU-seconds per budget unit (what a proposal costs to train, whatever rung it reached)."""
    trials = json.loads((run_dir / "result.json").read_text()).get("trials") or {}
    spent: dict[str, list[float]] = {}  # trial -> [GPU-seconds, units trained]
    for line in (run_dir / "ledger.jsonl").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if entry.get("type") == "spend":
            record = entry["record"]
            acc = spent.setdefault(record["trial_id"], [0.0, 0.0])
            acc[0] += float(record.get("gpu_seconds") or 0.0)
            acc[1] += float(record.get("budget_trained") or 0.0)
    out: dict[str, dict[str, Any]] = {}
    for trial_id, config in trials.items():
        family = str(config.get("family", "?"))
        f = out.setdefault(family, {"trials": 0, "gpu_seconds": 0.0, "per_unit": []})
        f["trials"] += 1
        seconds, units = spent.get(trial_id, (0.0, 0.0))
        f["gpu_seconds"] += seconds
        if units > 0 and seconds > 0:
            f["per_unit"].append(seconds / units)
    return {family: {"trials": f["trials"], "gpu_seconds": f["gpu_seconds"],
                     "gpu_seconds_per_unit": float(np.median(f["per_unit"])) if f["per_unit"] else None}
            for family, f in sorted(out.items())}


def gpu_hours_to_best(anytime: Sequence[dict[str, Any]]) -> float | None:
    """GPU-hours billed when the run first reached its final best validation score (its anytime curve's last best)."""
    if not anytime:
        return None
    final = anytime[-1]["best"]
    return next(float(p["gpu_hours"]) for p in anytime if p["best"] == final and p["budget"] == anytime[-1]["budget"])


def fit_rungflow(train: Any, test: Any, target: str, task: str, time_limit: float, workdir: Path, seed: int,
                 price: float | None = None, runtime: str | None = None, cost_aware: bool | None = None,
                 portfolio: Any = None) -> dict[str, Any]:
    """rungflow on the training rows, predicting the test rows. The one place the harness calls rungflow: through
    ``rungflow.automl`` where it exists, else a ``mixed`` sweep with a wall-clock deadline and the same stop rule."""
    import rungflow

    automl = getattr(rungflow, "automl", None)
    run_dir = workdir / "run"
    if automl is not None:
        kwargs: dict[str, Any] = {"min_gain_per_gpu_hour": price} if price is not None else {}
        if cost_aware is not None:
            kwargs["cost_aware"] = cost_aware
        if portfolio is not None:
            kwargs["portfolio"] = portfolio
        automl(train, label=target, time_limit=time_limit, out=run_dir, seed=seed, runtime=runtime, **kwargs)
    else:
        from rungflow.config import validate
        from rungflow.flows.sweep import run_sweep

        train_csv = workdir / "train.csv"
        train.to_csv(train_csv, index=False)
        budget: dict[str, Any] = {"deadline": time_limit}
        if price is not None:
            budget["min_gain_per_gpu_hour"] = price
        cfg = validate({
            "name": "automl-bench",
            "trainable": {"kind": "mixed", "options": {"data": {"source": str(train_csv), "label": target, "task": task,
                                                                "seed": seed}, "families": list(FAMILIES)}},
            "search": {"algorithm": "tpe", "seed": seed},
            "scheduler": {"kind": "hyperband", "min_budget": 1, "max_budget": 9, "eta": 3, "iterations": 10},
            "budget": budget,
            "runtime": {"kind": runtime or "thread", "max_concurrent": os.cpu_count() or 1},
            "storage": {"run_dir": str(run_dir)},
        })
        run_sweep(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    model = rungflow.load_model(run_dir)
    # On Ray, trials run in worker processes this one never waits for, so their CPU time is what the ledger billed.
    on_ray = (result.get("runtime") or {}).get("kind", "ray") == "ray" if isinstance(result.get("runtime"), dict) else runtime != "thread"
    return {"predicted": model.predict(test.drop(columns=[target])), "gpu_hours": float(result["ledger"]["gpu_hours"]),
            "worker_cpu_hours": float(result["ledger"].get("cpu_hours", 0.0)) if on_ray else 0.0,
            "trials": int(result["ledger"]["trials_started"]), "stop_reason": result.get("stop_reason", ""),
            "family": getattr(model, "family", ""), "val_score": (result.get("best") or {}).get("score"),
            "cost_aware": (result.get("search") or {}).get("cost_aware"), "families": families_of(run_dir),
            "gpu_hours_to_best": gpu_hours_to_best(result.get("anytime") or []),
            "portfolio": _portfolio_outcome(result)}


def _portfolio_outcome(result: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the run started from a portfolio, its verdict, and whether the final best came from it."""
    history = result.get("history")
    if not history:
        return None
    verdict = history.get("prior") or {}
    return {"configs": len(history.get("portfolio") or []), "verdict": verdict.get("verdict"),
            "portfolio_best": verdict.get("portfolio_best"), "cold_best": verdict.get("cold_best"),
            "best_from_portfolio": history.get("best_from_portfolio"),
            "families": [c.get("family") for c in history.get("portfolio") or []]}


def _left_out_portfolio(args: argparse.Namespace, table: str) -> dict[str, Any] | None:
    """The portfolio of every other table's kept run (``--portfolio-from``), saved beside the results; None: the
    shipped one."""
    source = getattr(args, "portfolio_from", None)
    if source is None:
        return None
    from bench.automl_portfolio import portfolio_without

    portfolio = portfolio_without(source, [table])
    write_json(args.out / "portfolios" / f"{table}.json", portfolio)
    return portfolio


def _systems(args: argparse.Namespace, table: str = "") -> dict[str, Callable[..., dict[str, Any]]]:
    runtime = getattr(args, "runtime", None)
    return {
        "rungflow": lambda *a: fit_rungflow(*a, runtime=runtime, portfolio=_left_out_portfolio(args, table)),
        "rungflow-cold": lambda *a: fit_rungflow(*a, runtime=runtime, portfolio="off"),
        "rungflow-stop": lambda *a: fit_rungflow(*a, price=args.price, runtime=runtime),
        "rungflow-costaware": lambda *a: fit_rungflow(*a, runtime=runtime, cost_aware=True),
        "rungflow-costblind": lambda *a: fit_rungflow(*a, runtime=runtime, cost_aware=False),
        "ag-medium": _peer("autogluon", {"presets": "medium_quality", "num_cpus": os.cpu_count() or 1}),
        "ag-best": _peer("autogluon", {"presets": "best_quality", "num_cpus": os.cpu_count() or 1}),
        "autosklearn": _peer("autosklearn", {"memory_limit_mb": 3072}),
    }


def _cpu_seconds() -> float:
    # This process (rungflow's threads) and every waited-for child (the peers' workers).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_one(table: Any, frame: Any, split: int, fold: tuple[np.ndarray, np.ndarray], system: str, time_limit: float,
            args: argparse.Namespace) -> dict[str, Any]:
    """Run ``system`` on one outer fold; the row the report reads, with the error instead of a score if it failed."""
    train, test = frame.iloc[fold[0]].reset_index(drop=True), frame.iloc[fold[1]].reset_index(drop=True)
    workdir = args.out / "work" / table.name / f"{time_limit:g}s" / f"split{split}" / system
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    row: dict[str, Any] = {"table": table.name, "task": table.task, "split": split, "system": system, "time_limit": time_limit,
                           "train_rows": len(train), "test_rows": len(test),
                           "constant": constant_score(train, test, table.target, table.task)}
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    try:
        out = _systems(args, table.name)[system](train, test, table.target, table.task, time_limit, workdir, args.seed + split)
        row.update(status="ok", score=test_score(out.pop("predicted"), test[table.target], table.task), **out)
    except Exception as exc:  # one failed fit is a row in the report, not the end of a benchmark of hours
        traceback.print_exc()
        row.update(status="failed", score=None, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300])
    row["wall_seconds"] = time.perf_counter() - t0
    row["cpu_hours"] = (_cpu_seconds() - cpu0) / 3600.0 + row.get("worker_cpu_hours", 0.0)
    keep = getattr(args, "keep_runs", None)
    if keep is not None and (workdir / "run" / "result.json").is_file():
        # Configurations and scores only, what a later portfolio learns from; no checkpoint, model or table.
        kept = keep / table.name / f"{time_limit:g}s" / f"split{split}" / system
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "ledger.jsonl", "result.json"):
            shutil.copy2(workdir / "run" / name, kept / name)
    shutil.rmtree(workdir, ignore_errors=True)
    return row


def _row_path(out: Path, table: str, time_limit: float, split: int, system: str) -> Path:
    return out / "runs" / table / f"{time_limit:g}s" / f"split{split}" / f"{system}.json"


def _render(out: Path, time_limits: Sequence[float], systems: Sequence[str], meta: dict[str, Any]) -> dict[str, Any]:
    from bench.automl_report import markdown, report

    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/*/*/*.json"))]
    rows = [r for r in rows if r["table"] in meta["tables"] and r["split"] < meta["splits"]]
    reports, parts = {}, []
    for limit in time_limits:
        mine = [r for r in rows if r["time_limit"] == limit]
        if mine:
            reports[f"{limit:g}"] = report(mine, systems)
            parts.append(markdown(reports[f"{limit:g}"], title=f"{limit:g} s per system per split"))
    write_json(out / "results.json", {"reports": reports, "rows": rows, "meta": meta})
    text = "\n\n".join(parts) + f"\n\nMachine: {meta['machine']}; load average at the end {meta['loadavg'][0]:.1f}.\n"
    (out / "results.md").write_text(text)
    print(text, flush=True)
    return reports


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench import tables as suite

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    chosen = suite.select(args.tables)
    meta = {"tables": [t.name for t in chosen], "splits": args.splits, "seed": args.seed, "systems": list(args.systems),
            "runtime": args.runtime,
            "time_limits": list(args.time_limit), "price": args.price, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "loadavg": list(os.getloadavg())}
    if not args.render_only:
        from bench.common import prefect_api

        with prefect_api():
            for table in chosen:
                frame = suite.load(table)
                folds = outer_splits(frame, table.target, table.task, args.splits, args.seed)
                for limit in args.time_limit:
                    for split, fold in enumerate(folds[:args.first_splits]):
                        for system in args.systems:
                            path = _row_path(out, table.name, limit, split, system)
                            if path.is_file():
                                continue  # finished in an earlier run of the same command
                            row = run_one(table, frame, split, fold, system, limit, args)
                            write_json(path, row)
                            score = "failed" if row["score"] is None else f"{row['score']:.4f}"
                            print(f"automl {table.name} {limit:g}s split {split} {system}: {score} "
                                  f"(constant {row['constant']:.4f}, {row['wall_seconds']:.0f} s)", flush=True)
        meta["loadavg"] = list(os.getloadavg())
    return _render(out, args.time_limit, args.systems, meta)
