"""``python -m bench.peer_synetune``: Syne Tune's ASHA and BOHB against ours, on one table both read.

Per LCBench instance, a pool of random configurations (the robust bench's reference pool: 4,096, seed 10 007)
is evaluated once on the YAHPO surrogate at every epoch 1..52: accuracy and cumulative seconds (the
surrogate's time made non-decreasing, as our billing and the robust bench read it). That table is a
:class:`syne_tune.blackbox_repository.BlackboxOffline`. Both searchers propose anywhere in the LCBench space;
a proposal is answered by its nearest row (log-scaled parameters compared in log space, every parameter
scaled to [0, 1]), the way Syne Tune serves its own LCBench table (a 1-nearest-neighbour surrogate), but
with a distance that respects the log scales. The one lookup (:class:`PoolBlackbox`) answers both sides:
Syne Tune through its simulator backend, ours through ``simulate(..., durations=..., scores=...)``.

Syne Tune 0.16 runs on ``UserBlackboxBackend``, the same simulated-tabular backend as
``BlackboxRepositoryBackend``, given the blackbox object: ``BlackboxRepositoryBackend`` only loads blackboxes
by the names in Syne Tune's recipe list, through a Hugging Face download. ``Tuner`` with ``SimulatorCallback``,
sleep time 0, ``n_workers`` trial slots. Ours: ``runtime.gpus_per_trial: 1``, so W GPUs are W trial slots too.

Per (instance, seed, slots): ours first (Hyperband 1..52, η = 3, BOHB, brackets side by side; its GPU-hours
G set the budget), then our ASHA (BOHB's searcher) capped at G, then Syne Tune's ASHA and BOHB
(grace period 1, reduction factor 3, max 52 epochs) stopped once their trials have trained G. Measured:
simulated wall-clock until a 52-epoch result reaches E[B] − 0.5 (E[B]: the expected best of 128 random
52-epoch configurations of the table), the best 52-epoch accuracy at the end against E[B], GPU-hours,
and the wall-clock at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import LCBENCH_MAX_EPOCH, fmt, median, write_json

__all__ = ["Table", "PoolBlackbox", "run_ours", "run_synetune", "main"]

DEV_INSTANCES = ("3945", "7593", "34539", "126025", "126026")
HELDOUT = ("167152", "167168")
POOL_SEED = 10_007  # the robust bench's reference pool (bench.search_sim.reference)
REFERENCE_TRIALS = 128
MARGIN = 0.5
ACC, TIME, EPOCH = "metric_valid_acc", "metric_elapsed_time", "epoch"
OURS = ("ours hyperband", "ours asha", "ours asha stopping")  # ASHA's promotion variant (the default), then Ray Tune's
THEIRS = ("syne tune asha", "syne tune bohb")
METHODS = (*OURS, *THEIRS)


class Table:
    """One instance's pool × 52 epochs, and the nearest-row lookup both simulators read."""

    def __init__(self, instance: str, pool: int = 4096) -> None:
        from syne_tune.blackbox_repository import BlackboxOffline
        from syne_tune.config_space import randint

        from bench import search_sim as S

        c = S.curves(str(instance))
        self.instance, self.space = str(instance), c.space
        rng = np.random.default_rng(POOL_SEED)
        configs = [c.space.sample(rng) for _ in range(pool)]
        c.prefetch(configs)
        self.acc = np.array([c.curve(x)[0] for x in configs])
        self.seconds = np.array([c.curve(x)[1] for x in configs])
        self.rows = configs
        self.unit = np.array([self._unit(x) for x in configs])
        epochs = np.arange(1, LCBENCH_MAX_EPOCH + 1)
        frame = {p.name: np.repeat([x[p.name] for x in configs], len(epochs)) for p in self.space.params}
        frame[EPOCH] = np.tile(epochs, pool)
        frame[ACC] = self.acc.reshape(-1)
        frame[TIME] = self.seconds.reshape(-1)
        import pandas as pd

        self.offline = BlackboxOffline(pd.DataFrame(frame), configuration_space=synetune_space(self.space),
                                       fidelity_space={EPOCH: randint(1, LCBENCH_MAX_EPOCH)},
                                       objectives_names=[ACC, TIME])
        self.blackbox = PoolBlackbox(self)
        final = self.acc[:, -1]
        from bench.search_sim import expected_max_of_k

        k = min(REFERENCE_TRIALS, pool)
        self.expected_best = expected_max_of_k(final, k)
        self.expected_gpu_hours = k * float(self.seconds[:, -1].mean()) / 3600.0
        self._nearest: dict[tuple[Any, ...], int] = {}

    def _unit(self, config: Mapping[str, Any]) -> list[float]:
        out = []
        for p in self.space.params:
            lo, hi, v = float(p.low), float(p.high), float(config[p.name])
            if p.log:
                lo, hi, v = math.log(lo), math.log(hi), math.log(max(v, float(p.low)))
            out.append((v - lo) / (hi - lo) if hi > lo else 0.0)
        return out

    def nearest(self, config: Mapping[str, Any]) -> int:
        key = tuple(sorted((k, config[k]) for k in self.space.names))
        i = self._nearest.get(key)
        if i is None:
            d = self.unit - np.asarray(self._unit(config))
            i = self._nearest[key] = int(np.argmin(np.einsum("ij,ij->i", d, d)))
        return i

    def curve(self, config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy, cumulative seconds) at epochs 1..52, read through the blackbox Syne Tune reads."""
        values = np.asarray(self.blackbox.objective_function({k: config[k] for k in self.space.names}))
        return values[:, 0], values[:, 1]


class PoolBlackbox:
    """The table as Syne Tune queries it: a proposal's nearest row, read from the ``BlackboxOffline``."""

    def __new__(cls, table: Table) -> Any:
        from syne_tune.blackbox_repository.blackbox import Blackbox

        class _PoolBlackbox(Blackbox):
            def __init__(self) -> None:
                super().__init__(configuration_space=table.offline.configuration_space,
                                 fidelity_space=table.offline.fidelity_space, objectives_names=[ACC, TIME])
                self._rows: dict[int, np.ndarray] = {}

            @property
            def fidelity_values(self) -> np.ndarray:
                return np.arange(1, LCBENCH_MAX_EPOCH + 1)

            def _objective_function(self, configuration: dict[str, Any], fidelity: dict | None = None,
                                    seed: int | None = None) -> Any:
                i = table.nearest(configuration)
                if i not in self._rows:
                    values = table.offline.objective_function(dict(table.rows[i]))
                    self._rows[i] = np.asarray(values, dtype=float)
                values = self._rows[i]
                if fidelity is None:
                    return values.copy()
                return dict(zip(self.objectives_names, values[int(fidelity[EPOCH]) - 1]))

        return _PoolBlackbox()


def synetune_space(space: Any) -> dict[str, Any]:
    from syne_tune.config_space import lograndint, loguniform, randint, uniform

    from rungflow.budgets.space import FloatParam, IntParam

    out: dict[str, Any] = {}
    for p in space.params:
        if isinstance(p, FloatParam):
            out[p.name] = (loguniform if p.log else uniform)(float(p.low), float(p.high))
        elif isinstance(p, IntParam):
            out[p.name] = (lograndint if p.log else randint)(int(p.low), int(p.high))
        else:
            raise ValueError(f"{p.name}: only numeric parameters are tabulated here")
    return out


def _reach(points: Sequence[tuple[float, float]], target: float) -> tuple[float | None, float | None]:
    """(first wall-clock seconds a 52-epoch result reached ``target``, best 52-epoch accuracy) from
    (finished at, accuracy) pairs of 52-epoch results."""
    reach, best = None, None
    for at, acc in sorted(points):
        best = acc if best is None else max(best, acc)
        if reach is None and acc >= target:
            reach = at
    return reach, best


def _row(table: Table, method: str, seed: int, workers: int, reach: float | None, best: float | None,
         gpu_hours: float, wall: float, trials: int, took: float) -> dict[str, Any]:
    return {"instance": table.instance, "method": method, "seed": seed, "workers": workers,
            "reach_hours": None if reach is None else reach / 3600, "wall_hours": wall / 3600,
            "final_gap": None if best is None else best - table.expected_best, "gpu_hours": gpu_hours,
            "trials": trials, "expected_best": table.expected_best, "expected_gpu_hours": table.expected_gpu_hours,
            "simulated_in": took}


def run_ours(table: Table, seed: int, workers: int, kind: str, *, iterations: int = 16,
             cap_gpu_hours: float | None = None, num_trials: int = 100_000, asha_type: str | None = None) -> dict[str, Any]:
    from rungflow.config import load_config
    from rungflow.flows.plan_sim import simulate

    def seconds(config: Mapping[str, Any], start: float, stop: float) -> float:
        cumulative = table.curve(config)[1]
        done = cumulative[int(round(start)) - 1] if start >= 1 else 0.0
        return float(cumulative[int(round(stop)) - 1] - done)

    def score(config: Mapping[str, Any], budget: float) -> float:
        return float(table.curve(config)[0][int(round(budget)) - 1])

    overrides = [f"name=peer-{table.instance}", f"trainable.options.instance={table.instance!r}",
                 "scheduler.min_budget=1", f"scheduler.kind={kind}", "runtime.gpus_per_trial=1",
                 f"search.seed={seed}", f"budget.max_gpu_hours={cap_gpu_hours if cap_gpu_hours else 100000}"]
    overrides += [f"scheduler.iterations={iterations}"] if kind == "hyperband" else [f"search.num_trials={num_trials}"]
    overrides += [f"scheduler.asha_type={asha_type}"] if asha_type else []
    config = load_config("examples/lcbench.yaml", overrides)
    t0 = time.perf_counter()
    r = simulate(config, workers=workers, durations=seconds, scores=score, against_one_gpu=False)
    took = time.perf_counter() - t0
    points = [(e["finished_at"], e["score"]) for e in r["events"]
              if e["budget"] >= LCBENCH_MAX_EPOCH and e["score"] is not None]
    reach, best = _reach(points, table.expected_best - MARGIN)
    method = "ours hyperband" if kind == "hyperband" else " ".join(filter(None, ("ours asha", asha_type)))
    return _row(table, method, seed, workers, reach, best,
                r["gpu_hours"], r["wall_seconds"], r["trials"], took)


def run_synetune(table: Table, seed: int, workers: int, method: str, cap_gpu_hours: float,
                 max_wall_hours: float | None = None, count_decision_time: bool = False) -> dict[str, Any]:
    """Syne Tune's ``method`` ("asha" or "bohb") on its simulator, stopped once its trials have trained
    ``cap_gpu_hours`` (one GPU a trial), or at ``max_wall_hours`` of simulated time."""
    os.environ.setdefault("SYNETUNE_FOLDER", str(Path(tempfile.gettempdir()) / "rungflow-synetune"))
    from syne_tune import Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository import UserBlackboxBackend
    from syne_tune.constants import ST_TUNER_TIME
    from syne_tune.optimizer.baselines import ASHA, BOHB
    from syne_tune.tuner_callback import TunerCallback

    for name in ("syne_tune", "syne_tune.tuner", "syne_tune.backend"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cap = cap_gpu_hours * 3600
    wall_cap = math.inf if max_wall_hours is None else max_wall_hours * 3600

    class Record(TunerCallback):
        """Every result with its simulated time; trial seconds as the trials report them (no resumes:
        Syne Tune 0.16's ASHA stops trials, it never pauses them)."""

        def __init__(self) -> None:
            self.points: list[tuple[float, float]] = []
            self.trained: dict[int, float] = {}
            self.now = 0.0
            self.seen: set[tuple[int, int]] = set()

        def _add(self, trial: Any, result: Mapping[str, Any]) -> None:
            key = (trial.trial_id, int(result[EPOCH]))
            if key in self.seen:
                return
            self.seen.add(key)
            self.now = max(self.now, float(result[ST_TUNER_TIME]))
            self.trained[trial.trial_id] = max(self.trained.get(trial.trial_id, 0.0), float(result[TIME]))
            if int(result[EPOCH]) >= LCBENCH_MAX_EPOCH:
                self.points.append((float(result[ST_TUNER_TIME]), float(result[ACC])))

        def on_trial_result(self, trial: Any, status: str, result: dict[str, Any], decision: str) -> None:
            self._add(trial, result)

        def on_trial_complete(self, trial: Any, result: dict[str, Any]) -> None:
            self._add(trial, result)

    record = Record()

    def stop(_status: Any) -> bool:
        return sum(record.trained.values()) >= cap or record.now >= wall_cap

    kinds = {"asha": ASHA, "bohb": BOHB}
    scheduler = kinds[method](table.offline.configuration_space, metric=ACC, time_attr=EPOCH,
                              max_t=LCBENCH_MAX_EPOCH, do_minimize=False, random_seed=seed, grace_period=1,
                              reduction_factor=3)
    class Backend(UserBlackboxBackend):
        def _advance_by_outside_time(self) -> None:
            # Syne Tune's simulated clock also counts the real seconds its own loop spends (BOHB refits its
            # KDE at every suggestion: seconds per trial on a loaded 2-core machine, hours over a sweep). Our
            # simulator charges no searcher time, so neither does theirs: both clocks are the trials' own.
            if count_decision_time:
                super()._advance_by_outside_time()

    backend = Backend(blackbox=table.blackbox, elapsed_time_attr=TIME)
    np.random.seed(seed)  # ASHA draws each trial's bracket from numpy's global generator
    tuner = Tuner(trial_backend=backend, scheduler=scheduler, stop_criterion=stop, n_workers=workers,
                  sleep_time=0, callbacks=[SimulatorCallback(), record], save_tuner=False,
                  results_update_interval=1e9, print_update_interval=1e9,
                  tuner_name=f"peer-{table.instance}-{method}-{workers}-{seed}")
    logging.getLogger("syne_tune.tuner").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # its progress tables, every run
        tuner.run()
    took = time.perf_counter() - t0
    reach, best = _reach(record.points, table.expected_best - MARGIN)
    return _row(table, f"syne tune {method}", seed, workers, reach, best, sum(record.trained.values()) / 3600,
                record.now, len(record.trained), took)


def run_cell(table: Table, seed: int, workers: int, *, iterations: int = 16, methods: Sequence[str] = METHODS,
             wall_factor: float = 20.0, report: Any = None) -> list[dict[str, Any]]:
    """Ours first: its GPU-hours are the budget every other method gets."""
    rows: list[dict[str, Any]] = []

    def add(r: dict[str, Any]) -> None:
        rows.append(r)
        if report is not None:
            report(r)

    ours = run_ours(table, seed, workers, "hyperband", iterations=iterations)
    if "ours hyperband" in methods:
        add(ours)
    cap = ours["gpu_hours"]
    if "ours asha" in methods:
        add(run_ours(table, seed, workers, "asha", cap_gpu_hours=cap))
    if "ours asha stopping" in methods:
        add(run_ours(table, seed, workers, "asha", cap_gpu_hours=cap, asha_type="stopping"))
    for m in ("asha", "bohb"):
        if f"syne tune {m}" in methods:
            add(run_synetune(table, seed, workers, m, cap, max_wall_hours=wall_factor * ours["wall_hours"]))
    return rows


def summarize(rows: Sequence[Mapping[str, Any]], groups: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    out = []
    for group, instances in groups.items():
        for w in sorted({r["workers"] for r in rows}):
            mine = [r for r in rows if r["instance"] in instances and r["workers"] == w]
            ours = {(r["instance"], r["seed"]): r for r in mine if r["method"] == "ours hyperband"}
            for m in METHODS:
                rs = [r for r in mine if r["method"] == m]
                if not rs:
                    continue
                # Ours against this method, run by run: at or below its wall-clock to the target (never
                # reaching counts as infinitely late on either side).
                paired = [(ours[(r["instance"], r["seed"])], r) for r in rs if (r["instance"], r["seed"]) in ours]
                at_or_below = sum(_late(o) <= _late(r) for o, r in paired)
                out.append({
                    "group": group, "workers": w, "method": m, "runs": len(rs),
                    "reached": sum(r["reach_hours"] is not None for r in rs),
                    "reach_hours": median([_late(r) for r in rs]),
                    "final_gap": median([r["final_gap"] for r in rs]),
                    "gpu_hours": median([r["gpu_hours"] for r in rs]),
                    "wall_hours": median([r["wall_hours"] for r in rs]),
                    "ours_at_or_below": None if m == "ours hyperband" else at_or_below,
                    "paired": len(paired),
                })
    return out


def _late(r: Mapping[str, Any]) -> float:
    return math.inf if r["reach_hours"] is None else r["reach_hours"]


def markdown(summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    lines = [
        f"LCBench, {meta['pool']} tabulated configurations × 52 epochs per instance; seeds "
        f"{' '.join(map(str, meta['seeds']))}; one trial a slot (ours: `gpus_per_trial: 1`, W GPUs; Syne Tune: "
        "`n_workers` W). Every method gets the GPU-hours our Hyperband + BOHB (16 iterations, brackets side by side) "
        "spent on that cell. Medians over instances × seeds. *reached*: runs whose 52-epoch best reached "
        "E[B] − 0.5; *to target*: simulated hours until it did (a run that never did counts as ∞); *final*: best "
        "52-epoch accuracy − E[B]; *ours ≤*: runs where our Hyperband reached the target no later.",
        "",
        "| instances | slots | method | reached | to target (h) | final | GPU-h | wall at end (h) | ours ≤ |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        mine = "" if s["ours_at_or_below"] is None else f"{s['ours_at_or_below']}/{s['paired']}"
        lines.append(f"| {s['group']} | {s['workers']} | {s['method']} | {s['reached']}/{s['runs']} | "
                     f"{fmt(s['reach_hours'], '.3f')} | {fmt(s['final_gap'], '+.2f')} | {s['gpu_hours']:.2f} | "
                     f"{s['wall_hours']:.2f} | {mine} |")
    lines += ["", "Per run, hours to E[B] − 0.5 (— never):", "",
              "| instance | seed | slots | " + " | ".join(METHODS) + " |",
              "|---|---:|---:|" + "---:|" * len(METHODS)]
    cells = sorted({(r["instance"], r["seed"], r["workers"]) for r in rows},
                   key=lambda c: (meta["order"].index(c[0]) if c[0] in meta["order"] else 99, c[1], c[2]))
    for inst, seed, w in cells:
        by = {r["method"]: r for r in rows if (r["instance"], r["seed"], r["workers"]) == (inst, seed, w)}
        vals = [fmt(by[m]["reach_hours"], ".3f", "—") if m in by else "" for m in METHODS]
        lines.append(f"| {inst} | {seed} | {w} | " + " | ".join(vals) + " |")
    took = sum(r["simulated_in"] for r in rows)
    lines += ["", f"Runs simulated in {took:.0f} s in all; {meta['machine']}; syne-tune {meta['synetune']}."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.peer_synetune", description=__doc__.splitlines()[0])
    p.add_argument("--instances", nargs="+", default=list(DEV_INSTANCES))
    p.add_argument("--heldout", nargs="*", default=list(HELDOUT), help="instances reported as their own group")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--workers", nargs="+", type=int, default=[8, 64], help="trial slots, both sides")
    p.add_argument("--iterations", type=int, default=16, help="our Hyperband iterations (49 trials each)")
    p.add_argument("--pool", type=int, default=4096, help="tabulated configurations per instance")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", type=Path, default=Path("bench/out/peer-synetune"))
    p.add_argument("--from", nargs="+", type=Path, default=[], dest="sources",
                   help="render the rows of these earlier --out folders (joined) instead of running")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    order = [*map(str, args.instances), *map(str, args.heldout)]
    if args.sources:
        for source in args.sources:
            rows += json.loads((source / "results.json").read_text())["rows"]
        return _publish(args, rows, order, t0, final=True)
    for instance in order:
        table = Table(instance, pool=args.pool)
        for seed in args.seeds:
            for w in args.workers:
                for r in run_cell(table, seed, w, iterations=args.iterations, methods=args.methods, report=say):
                    rows.append(r)
        _publish(args, rows, order, t0)
    return _publish(args, rows, order, t0, final=True)


def say(r: Mapping[str, Any]) -> None:
    print(f"  {r['instance']} s{r['seed']} {r['workers']} slots {r['method']}: to target "
          f"{fmt(r['reach_hours'], '.3f')} h, final {fmt(r['final_gap'], '+.2f')}, {r['gpu_hours']:.2f} GPU-h, wall "
          f"{r['wall_hours']:.3f} h, {r['trials']} trials ({r['simulated_in']:.1f} s)", flush=True)


def _publish(args: argparse.Namespace, rows: list[dict[str, Any]], order: list[str], t0: float,
             final: bool = False) -> dict[str, Any]:
    """Written after every instance, so a long run that is cut short keeps what it measured."""
    from importlib.metadata import version

    groups = {"dev": [str(i) for i in args.instances]}
    if args.heldout:
        groups["held-out"] = [str(i) for i in args.heldout]
    summary = summarize(rows, groups)
    meta = {"pool": args.pool, "seeds": list(args.seeds), "iterations": args.iterations, "order": order,
            "wall_seconds": time.perf_counter() - t0, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "synetune": version("syne-tune")}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"meta": meta, "summary": summary, "rows": rows})
    text = markdown(summary, rows, meta)
    (args.out / "results.md").write_text(text)
    if final:
        print(text)
    return {"summary": summary, "rows": rows}


if __name__ == "__main__":
    main()
