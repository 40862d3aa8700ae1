"""``python -m bench transfer``: earlier sweeps as a prior, leave-one-task-out on the LCBench surrogate.

History is what a user has: H earlier default sweeps (``examples/lcbench.yaml``: Hyperband 2..52 epochs, η = 3,
BOHB, run to their end), each on another LCBench task, run by the sweep's own driver on a simulated cluster
(:mod:`budgets.simulate`, as ``rungflow plan --simulate`` runs it) and written as run directories (``config.json``,
``ledger.jsonl``, ``result.json``). The target sweep reads them back through the product's own ``history:`` reader
(:func:`tasks.history.prior_for`), so the bench measures what a user gets. A target's history never holds its own
task: the H tasks are drawn, with a seed of their own, from the 33 other LCBench tasks.

Arms, on the same histories: cold BOHB (ours, no history); ours with history, as the product runs it by default (the
portfolio beside the searcher's first draws, the history's model as BOHB's proposal density); ours with a misleading
history (the same run directories with every score turned upside down, 100 − score); each of ours with one part
taken away (``portfolio only``: ``history.model_prior: off``; ``model only``: ``history.portfolio: 0``); Syne Tune 0.16's transfer-learning
schedulers (``ZeroShotTransfer``, ``BoundingBox`` around random search, ``QuantileBasedSurrogateSearcher``), given the
same sweeps as ``TransferLearningTaskEvaluations`` (each trial at the highest budget it reached) and run as they
are built, one full-budget trial at a time on the same surrogate curves; and the same three on the misleading
history. Not run by default: a random portfolio of as many configurations (a control), and the history's portfolio
alone, trained at full budget one configuration after another (a bound on what the portfolio can give).

Measured per run: GPU-hours until the sweep's full-budget incumbent first reaches E[B] − 0.5, as a fraction of E[G]
(E[B], E[G]: random-128's expected best and GPU-hours over a 4,096-configuration pool, :func:`search_sim.reference`);
"-" where it never did within E[G].
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import fmt, median, write_json

__all__ = ["DEV", "HELDOUT", "history_tasks", "history_run", "read_prior", "run_ours", "run_peer", "portfolio_alone", "run",
           "main"]

DEV = ("3945", "7593", "34539", "126025", "126026")
# Ten of the 29 other LCBench tasks, drawn once (sorted(default_rng(2027).choice(29, 10, replace=False))) and kept
# from every choice made here.
HELDOUT = ("126029", "167104", "167149", "167168", "167184", "167201", "168329", "189905", "189908", "189909")
MARGIN = 0.5
FLIP = 100.0  # misleading history: score → FLIP − score
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lcbench.yaml"
HISTORY_SEED = 100  # each history sweep's search seed (plus its task's position)
PORTFOLIO = 4  # the product's default ``history.portfolio``
PEERS = ("zero-shot", "bounding-box", "quantile")
ARMS = ("cold", "history", "misleading", *PEERS, *(f"{p} misleading" for p in PEERS))
# A control, not run by default: a "portfolio" of as many random configurations, drawn with a seed of its own. What
# it costs against cold is what any first-bracket proposals that are not the searcher's own cost, history or not.
CONTROL = "random portfolio"
# A bound, not a method: the history's portfolio alone, each configuration trained at full budget one after another
# until one reaches the target. No sweep whose first bracket holds that portfolio gets there sooner through it.
ALONE = "portfolio alone"
# Misleading all through, not run by default: each earlier sweep run on its task with the score upside down (its
# search and gates minimised accuracy, so they promoted the worst), then read with the scores flipped, as a history
# of a task ranked the other way round would be. "misleading" flips the scores only, so its sweeps' promotions still
# follow the true scores.
INVERTED = "inverted"
# "history" and "misleading" run what the product runs by default: the portfolio beside the searcher's first draws
# and the history's model as BOHB's proposal density (budgets/transfer_prior.py). These take one of the two away:
# "portfolio only" is history.model_prior: off (the product before the model), "model only" history.portfolio: 0.
MODEL_ARMS = ("portfolio only", "portfolio only misleading", "model only", "model only misleading")
# The model prior's starting share (--model-share); None: the product's default, transfer_prior.INITIAL_SHARE.
MODEL_SHARE: float | None = None


def _instances() -> tuple[str, ...]:
    from rungflow.tasks.trainables.yahpo_lcbench import INSTANCES

    return INSTANCES


def history_tasks(target: str, h: int, seed: int = 0) -> list[str]:
    """H tasks other than ``target``, drawn with a seed of their own (the same H for every seed of a target)."""
    others = [i for i in _instances() if i != str(target)]
    rng = np.random.default_rng([seed, int(target), h])
    return [others[i] for i in rng.choice(len(others), size=h, replace=False)]


def _config(instance: str, seed: int, iterations: int | None = None, history: Mapping[str, Any] | None = None,
            max_gpu_hours: float | None = None) -> Any:
    import yaml

    from rungflow.config import SweepConfig

    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["name"] = f"lcbench-{instance}"
    raw["trainable"]["options"]["instance"] = str(instance)
    raw["search"]["seed"] = seed
    raw["runtime"] = {"kind": "thread", "max_concurrent": 1}
    if iterations is not None:
        raw["scheduler"]["iterations"] = iterations
    if max_gpu_hours is not None:
        raw["budget"]["max_gpu_hours"] = max_gpu_hours
    if history is not None:
        raw["history"] = dict(history)
    return SweepConfig.model_validate(raw)


def _simulate(config: Any, ledger_path: Path | None, warm_start: Mapping[str, Any] | None,
              transfer: Sequence[Mapping[str, Any]] | None = None) -> tuple[Any, Any]:
    """The sweep's own driver, searcher, scheduler and controller on one simulated GPU; scores and seconds from
    the surrogate's whole curves (:class:`search_sim.Curves`), the same numbers the trainable answers."""
    import dataclasses

    from bench.search_sim import curves
    from rungflow.budgets.controller import BudgetController
    from rungflow.budgets.driver import SweepDriver
    from rungflow.budgets.ledger import Ledger
    from rungflow.budgets.prior_guard import PriorGuardSearcher
    from rungflow.budgets.schedulers import make_scheduler
    from rungflow.budgets.search_registry import make_searcher
    from rungflow.budgets.searchers import Observation
    from rungflow.budgets.simulate import SimulatedExecutor, VirtualClock

    c = curves(config.trainable.options["instance"])
    lo, hi = config.budget_range()
    mode = config.mode()
    clock = VirtualClock()
    settings = config.budget.settings()
    ledger = Ledger(ledger_path, price_per_gpu_hour=settings.price_per_gpu_hour, clock=clock)
    scheduler = make_scheduler(config.scheduler.kind, min_budget=lo, max_budget=hi, eta=config.scheduler.eta,
                               integer=True, iterations=config.scheduler.iterations, num_trials=config.search.num_trials, mode=mode,
                               **config.scheduler_options())
    settings = dataclasses.replace(settings, brackets_per_iteration=scheduler.brackets_per_iteration)
    controller = BudgetController(settings, mode=mode, clock=clock, started_at=0.0, full_budget=hi)
    searcher = make_searcher(config.search.algorithm, config.search_space(), seed=config.search.seed, mode=mode,
                             max_budget=hi, min_points_in_model=config.search.min_points_in_model,
                             random_fraction=config.search.random_fraction)
    if transfer:
        from rungflow.budgets.transfer_prior import TransferModel, TransferPriorSearcher

        options = {} if MODEL_SHARE is None else {"initial_share": MODEL_SHARE}
        searcher = TransferPriorSearcher(searcher, TransferModel(searcher.space, transfer),
                                         portfolio=(warm_start or {}).get("enqueue", []), **options)
    if warm_start and warm_start.get("enqueue"):
        # As the flow does: the prior is judged on the sweep's own first rung and dropped where it misleads.
        searcher = PriorGuardSearcher(searcher, warm_start["enqueue"],
                                      [o["trial_id"] for o in warm_start.get("observations", [])])
    if warm_start:
        searcher.warm_start([Observation(o["trial_id"], o["config"], float(o["budget"]), o["score"])
                             for o in warm_start.get("observations", [])], enqueue=warm_start.get("enqueue", []))
    driver = SweepDriver(searcher, scheduler, ledger, controller, mode, lo, hi, seed=config.search.seed, clock=clock)

    def seconds(cfg: Mapping[str, Any], start: float, stop: float) -> float:
        sec = c.curve(cfg)[1]
        return float(sec[int(round(stop)) - 1] - (sec[int(round(start)) - 1] if start >= 1 else 0.0))

    def score(cfg: Mapping[str, Any], budget: float) -> float:
        return float(c.curve(cfg)[0][int(round(budget)) - 1])

    executor = SimulatedExecutor(1, clock, seconds, score, ledger)
    driver.run(executor)
    return driver, ledger


def history_run(instance: str, out: Path, *, seed: int = HISTORY_SEED, mode: str | None = None) -> Path:
    """One earlier default sweep on ``instance``, run to its end and written as a run directory (cached);
    ``mode="min"``: the sweep minimises the score, so its search and gates chase the worst configurations."""
    run_dir = out / f"lcbench-{instance}"
    if (run_dir / "result.json").is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    config = _config(instance, seed)
    if mode is not None:
        config = config.model_copy(update={"metric": config.metric.model_copy(update={"mode": mode})})
    (run_dir / "ledger.jsonl").unlink(missing_ok=True)
    driver, ledger = _simulate(config, run_dir / "ledger.jsonl", None)
    (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=1), encoding="utf-8")
    result = {"metric": {"name": config.metric_name(), "mode": config.mode()}, "trials": driver.trials,
              "stop_reason": driver.stop_reason, "gpu_hours": ledger.gpu_hours}
    (run_dir / "result.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return run_dir


def flipped(run_dir: Path, out: Path) -> Path:
    """A copy of ``run_dir`` whose every score is ``FLIP − score``: the worst configurations look best."""
    dest = out / run_dir.name
    if (dest / "result.json").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "result.json"):
        (dest / name).write_text((run_dir / name).read_text(encoding="utf-8"), encoding="utf-8")
    lines = []
    for line in (run_dir / "ledger.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        record = entry.get("record") or {}
        if entry.get("type") == "spend" and record.get("score") is not None:
            record["score"] = FLIP - float(record["score"])
        lines.append(json.dumps(entry))
    (dest / "ledger.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def inverted(run_dir: Path, out: Path) -> Path:
    """A minimising sweep's run directory read as maximising ``FLIP − score``: every score and the mode flipped,
    so its gates' promotions of the worst configurations are promotions of the best-looking ones."""
    dest = flipped(run_dir, out)
    for name in ("config.json", "result.json"):
        data = json.loads((dest / name).read_text(encoding="utf-8"))
        data["metric"]["mode"] = "max"
        (dest / name).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return dest


def read_prior(target: str, runs: Sequence[Path], scratch: Path, portfolio: int = PORTFOLIO) -> dict[str, Any]:
    """The prior a target sweep starts from, read through ``history: {runs: ...}`` as the flow reads it."""
    from rungflow.tasks.history import prior_for

    config = _config(target, 0, history={"runs": [str(r) for r in runs], "portfolio": portfolio})
    scratch.mkdir(parents=True, exist_ok=True)
    prior = prior_for(config, scratch)
    assert prior is not None
    return prior


def _reach(steps: Sequence[tuple[float, float]], target: float, eg: float) -> float | None:
    """The first GPU-hours (÷ E[G]) at which the incumbent's accuracy reaches ``target``, within E[G]."""
    for gpu_hours, accuracy in steps:
        if gpu_hours > eg:
            return None
        if accuracy >= target:
            return gpu_hours / eg
    return None


def run_ours(target: str, seed: int, iterations: int, warm_start: Mapping[str, Any] | None, goal: float,
             eg: float, verdicts: dict[str, str] | None = None, arm: str = "",
             transfer: Sequence[Mapping[str, Any]] | None = None, shares: dict[str, Any] | None = None) -> float | None:
    """GPU-hours (÷ E[G]) to ``goal``; ``verdicts[arm]``: the prior's verdict, where there was a portfolio;
    ``shares[arm]``: the model prior's report (its trials, its last share), where there was one."""
    # Capped at E[G], the horizon measured, not at the example's 8 GPU-hours (0.10·E[G] on 7593).
    driver, ledger = _simulate(_config(target, seed, iterations, max_gpu_hours=eg), None, warm_start, transfer)
    searcher = driver.searcher
    while searcher is not None and not hasattr(searcher, "report"):
        searcher = getattr(searcher, "inner", None)
    if shares is not None and searcher is not None:
        shares[arm] = searcher.report()
    decision = getattr(driver.searcher, "prior_decision", None)
    if verdicts is not None and decision is not None:
        verdicts[arm] = str(decision.verdict)
    hi = float(driver.max_budget)
    spent, best, steps = 0.0, -math.inf, []
    for r in sorted(ledger.records, key=lambda r: r.finished_at):
        spent += r.gpu_hours
        if r.ok and float(r.budget) >= hi and r.score is not None and r.score > best:
            best = float(r.score)
            steps.append((spent, best))
    return _reach(steps, goal, eg)


def portfolio_alone(target: str, portfolio: Sequence[Mapping[str, Any]], goal: float, eg: float) -> float | None:
    """GPU-hours (÷ E[G]) until one of ``portfolio``, trained at full budget in order, reaches ``goal``."""
    from bench.search_sim import curves

    c = curves(target)
    spent = 0.0
    for config in portfolio:
        accuracy, seconds = c.curve(config)
        spent += float(seconds[-1]) / 3600.0
        if float(accuracy[-1]) >= goal:
            return _reach([(spent, float(accuracy[-1]))], goal, eg)
    return None


def _evaluations(sweeps: Sequence[Any], space: Any, sign: float = 1.0) -> dict[str, Any]:
    """Each earlier sweep as Syne Tune's ``TransferLearningTaskEvaluations``: a trial at the highest budget it
    reached (Syne Tune's transfer schedulers rank configurations by one value each), times ``sign``."""
    import pandas as pd
    from syne_tune.optimizer.schedulers.transfer_learning.transfer_learning_mixin import (
        TransferLearningTaskEvaluations,
    )

    from bench.peer_synetune import ACC, synetune_space

    out = {}
    for sweep in sweeps:
        last: dict[str, Any] = {}
        for o in sweep.observations:
            if o.score is not None and (o.trial_id not in last or o.budget >= last[o.trial_id].budget):
                last[o.trial_id] = o
        rows = list(last.values())
        frame = pd.DataFrame([{p.name: o.config[p.name] for p in space.params} for o in rows])
        values = sign * np.array([float(o.score) for o in rows]).reshape(-1, 1, 1, 1)
        out[sweep.name] = TransferLearningTaskEvaluations(synetune_space(space), frame, [ACC], values)
    return out


def run_peer(method: str, target: str, seed: int, sweeps: Sequence[Any], goal: float, eg: float) -> float | None:
    """A Syne Tune transfer scheduler, one 52-epoch trial at a time (its schedulers are full-fidelity), until the
    incumbent reaches ``goal`` or its trials have trained E[G]."""
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.schedulers.single_objective_scheduler import SingleObjectiveScheduler
    from syne_tune.optimizer.schedulers.transfer_learning.bounding_box import BoundingBox
    from syne_tune.optimizer.schedulers.transfer_learning.quantile_based.quantile_based_searcher import (
        QuantileBasedSurrogateSearcher,
    )
    from syne_tune.optimizer.schedulers.transfer_learning.zero_shot import ZeroShotTransfer

    from bench.peer_synetune import ACC, synetune_space
    from bench.search_sim import curves

    for name in ("syne_tune", "syne_tune.optimizer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    c = curves(target)
    space = synetune_space(c.space)
    evaluations = _evaluations(sweeps, c.space)
    np.random.seed(seed)  # BoundingBox's random search draws from numpy's global generator too
    with contextlib.redirect_stdout(io.StringIO()):  # BoundingBox prints its box
        if method == "zero-shot":
            class _ZeroShot(ZeroShotTransfer):
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    # 0.16 samples its surrogate candidates before it sets the generator they are drawn from.
                    self.random_state = np.random.RandomState(seed)
                    super().__init__(*args, **kwargs)

            scheduler = _ZeroShot(space, ACC, evaluations, do_minimize=False, use_surrogates=True, random_seed=seed)
        elif method == "bounding-box":
            scheduler = BoundingBox(lambda cs, metric, do_minimize, rs: SingleObjectiveScheduler(
                cs, metric, do_minimize=do_minimize, searcher="random_search", random_seed=rs),
                space, ACC, evaluations, do_minimize=False, random_seed=seed)
        else:
            # Its searcher takes the argmin of its samples (the scheduler's minimisation convention): accuracy is
            # given negated, as the scheduler negates the target's own results.
            searcher = QuantileBasedSurrogateSearcher(space, _evaluations(sweeps, c.space, -1.0), random_seed=seed)
            scheduler = SingleObjectiveScheduler(space, ACC, do_minimize=False, searcher=searcher, random_seed=seed)
    spent, best = 0.0, -math.inf
    for trial_id in range(100_000):
        # ZeroShotTransfer 0.16 proposes its portfolio in get_config(), which its suggest() (inherited, random
        # search) never calls: asked directly, it runs as the paper's method, then random search once exhausted.
        config = scheduler.get_config() if isinstance(scheduler, ZeroShotTransfer) else None
        if config is None:
            suggestion = scheduler.suggest()
            config = suggestion.config if suggestion is not None else None
        if config is None:
            return None
        config = {p.name: (int(round(config[p.name])) if type(p).__name__ == "IntParam" else float(config[p.name]))
                  for p in c.space.params}
        acc, sec = c.curve(config)
        spent += float(sec[-1]) / 3600.0
        if spent > eg:
            return None
        best = max(best, float(acc[-1]))
        if best >= goal:
            return spent / eg
        trial = Trial(trial_id=trial_id, config=config, creation_time=None)
        result = {ACC: float(acc[-1]), "epoch": len(acc)}
        scheduler.on_trial_complete(trial, result)
    return None


def run(instances: Sequence[str], seeds: Sequence[int], hs: Sequence[int], out: Path, *, iterations: int = 40,
        arms: Sequence[str] = ARMS, pool: int = 4096, portfolio: int = PORTFOLIO,
        report: Any = print) -> list[dict[str, Any]]:
    """One row per (H, instance, seed): each arm's GPU-hours to E[B] − 0.5 (÷ E[G]) and what the history held."""
    from bench.search_sim import curves, reference
    from rungflow.tasks.history import load_history

    rows = []
    for h in hs:
        for target in instances:
            tasks = history_tasks(target, h)
            runs = [history_run(t, out / "history") for t in tasks]
            mislead = [flipped(r, out / "history-flipped") for r in runs]
            prior = read_prior(target, runs, out / "scratch" / f"h{h}-{target}", portfolio)
            misprior = read_prior(target, mislead, out / "scratch" / f"h{h}-{target}-flipped", portfolio)
            if INVERTED in arms:
                inverse = [inverted(history_run(t, out / "history-min", mode="min"), out / "history-inverted")
                           for t in tasks]
                invprior = read_prior(target, inverse, out / "scratch" / f"h{h}-{target}-inverted", portfolio)
            ref = reference(target, pool=pool)
            goal, eg = ref.expected_best - MARGIN, ref.expected_gpu_hours
            sweeps = {}
            if any(a in PEERS or a.endswith("misleading") and a not in ("misleading", *MODEL_ARMS) for a in arms):
                for label, dirs in (("", runs), (" misleading", mislead)):
                    config = _config(target, 0, history={"runs": [str(r) for r in dirs]})
                    history = load_history(config)
                    assert history is not None
                    sweeps[label] = history.sweeps
            for seed in seeds:
                t0 = time.perf_counter()
                cell: dict[str, Any] = {"h": h, "instance": target, "seed": seed, "history_tasks": tasks,
                                        "sources": [s["source"] for s in prior["summary"]["sources"]],
                                        "same_task": prior["summary"]["same_task"],
                                        "portfolio": len(prior["portfolio"]), "portfolio_configs": prior["portfolio"],
                                        "goal": goal, "expected_gpu_hours": eg,
                                        "verdicts": {}, "shares": {}}
                for arm in arms:
                    if arm == "cold":
                        cell[arm] = run_ours(target, seed, iterations, None, goal, eg)
                    elif arm in ("history", "misleading", INVERTED, *MODEL_ARMS):
                        chosen = invprior if arm == INVERTED else misprior if arm.endswith("misleading") else prior
                        warm = None if arm.startswith("model only") else chosen["warm_start"]
                        model = None if arm.startswith("portfolio only") else chosen["transfer"]
                        cell[arm] = run_ours(target, seed, iterations, warm, goal, eg, cell["verdicts"], arm, model,
                                             cell["shares"])
                    elif arm == ALONE:
                        cell[arm] = portfolio_alone(target, prior["portfolio"], goal, eg)
                    elif arm == CONTROL:
                        rng = np.random.default_rng([seed, 99])
                        randoms = [curves(target).space.sample(rng) for _ in range(len(misprior["portfolio"]))]
                        cell[arm] = run_ours(target, seed, iterations, {"enqueue": randoms}, goal, eg, cell["verdicts"], arm)
                    else:
                        method, _, misleading = arm.partition(" ")
                        cell[arm] = run_peer(method, target, seed, sweeps[" misleading" if misleading else ""], goal, eg)
                cell["seconds"] = time.perf_counter() - t0
                rows.append(cell)
                report("  ".join([f"H={h} {target} seed {seed}"] + [f"{a} {fmt(cell[a], '.3f')}" for a in arms]))
    return rows


def summary(rows: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> list[dict[str, Any]]:
    """Per arm: runs, reached within 0.35·E[G] and within E[G], median (an unreached run counts as never), and in
    how many runs the prior was kept (None: the arm has no portfolio)."""
    out = []
    for arm in arms:
        values = [r[arm] for r in rows if arm in r]
        verdicts = [r.get("verdicts", {}).get(arm) for r in rows if arm in r]
        out.append({"arm": arm, "runs": len(values), "within_035": sum(v is not None and v <= 0.35 for v in values),
                    "within_1": sum(v is not None for v in values),
                    "median": median([math.inf if v is None else v for v in values]),
                    "kept": sum(v == "kept" for v in verdicts) if any(verdicts) else None,
                    "share": median([r["shares"][arm]["share"] for r in rows if arm in r.get("shares", {})] or [None]),
                    "paired": _paired(rows, arm)})
    return out


def _paired(rows: Sequence[Mapping[str, Any]], arm: str) -> float | None:
    """The median over runs of (arm − cold), each run against its cold twin (same target, seed and history); a run
    that never reached the target counts as E[G]. Two medians of ten chaotic runs can differ by 0.03·E[G] by chance
    alone, and pairing removes what the target and seed decide."""
    pairs = [(1.0 if r[arm] is None else r[arm]) - (1.0 if r["cold"] is None else r["cold"])
             for r in rows if arm in r and "cold" in r]
    return median(pairs) if pairs and arm != "cold" else None


def markdown(rows: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> str:
    lines = []
    for h in sorted({r["h"] for r in rows}):
        for label, group in (("dev", DEV), ("held out", None)):
            part = [r for r in rows if r["h"] == h and ((r["instance"] in DEV) == (group is not None))]
            if not part:
                continue
            lines += [f"**H = {h}, {label}** ({len(part)} runs)", "",
                      "| arm | within 0.35·E[G] | within E[G] | median (·E[G]) | run − its cold twin, median | "
                      "model prior's last share, median | prior kept |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for s in summary(part, arms):
                kept = "" if s["kept"] is None else f"{s['kept']}/{s['runs']}"
                paired = "" if s["paired"] is None else f"{s['paired']:+.3f}"
                share = "" if s["share"] is None else f"{s['share']:.2f}"
                lines.append(f"| {s['arm']} | {s['within_035']}/{s['runs']} | {s['within_1']}/{s['runs']} | "
                             f"{'∞' if s['median'] == math.inf else fmt(s['median'], '.3f')} | {paired} | {share} | {kept} |")
            lines.append("")
    lines += ["| H | instance | seed | " + " | ".join(arms) + " |", "|---:|---|---:|" + "---:|" * len(arms)]
    for r in rows:
        lines.append(f"| {r['h']} | {r['instance']} | {r['seed']} | " + " | ".join(fmt(r[a], ".3f") for a in arms) + " |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instances", nargs="+", default=list(DEV), help="targets (dev: %(default)s)")
    p.add_argument("--heldout", action="store_true", help=f"the held-out targets instead: {' '.join(HELDOUT)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--history", nargs="+", type=int, default=[3, 10], metavar="H", help="earlier sweeps per target")
    p.add_argument("--iterations", type=int, default=40,
                   help="the target sweep's Hyperband iterations (it stops at E[G] first)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=(*ARMS, CONTROL, ALONE, INVERTED, *MODEL_ARMS))
    p.add_argument("--portfolio", type=int, default=PORTFOLIO, help="history.portfolio (the product's default: %(default)s)")
    p.add_argument("--model-share", type=float, default=None,
                   help="the model prior's starting share (default: the product's, budgets/transfer_prior.py)")
    p.add_argument("--out", type=Path, default=Path("bench/out/transfer"))


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    global MODEL_SHARE
    t0 = time.perf_counter()
    MODEL_SHARE = args.model_share
    instances = list(HELDOUT) if args.heldout else args.instances
    rows = run(instances, args.seeds, args.history, args.out, iterations=args.iterations, arms=args.arms,
               portfolio=args.portfolio)
    text = markdown(rows, args.arms)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "heldout" if args.heldout else "dev"
    write_json(args.out / f"{name}.json", {"rows": rows, "arms": args.arms, "seconds": time.perf_counter() - t0})
    (args.out / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
