"""The peers' own example programs, under their own library and under rungflow, with only the start line changed.

Each example in ``tests/examples/`` (sources and commits in ``tests/examples/SOURCES.md``) is imported as it is.
Its start line is either the peer's (``tune.Tuner(...).fit()`` / ``study.optimize(...)``) or rungflow's
(``rungflow.sweep(...)``), with the same trial count, the same seeds and the same schedule family. Reported per
example: the best score (mean and spread over seeds), CPU-hours (trial seconds x CPUs each trial held, as each
tool bills it) and wall-clock.

    python -m bench migrate [--seeds 3] [--trials 8] [--only NAME] [--out bench/results/migrate.json]
                            [--asha-type stopping|promotion]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "tests" / "examples"

__all__ = ["Example", "EXAMPLES", "load_example", "run_rungflow", "run_native", "start_cold", "main"]


@dataclass(frozen=True)
class Example:
    """One vendored example and the two start lines that run it.

    ``budget`` is the longest a trial runs (reported iterations or steps, Ray's ``max_t``); ``min_budget`` the
    first rung (Ray's ``grace_period``). ``scheduler`` is the family both tools use: ``asha``, ``hyperband``,
    ``median``, ``pbt`` or ``fifo``.
    """

    name: str
    library: str  # "raytune" or "optuna"
    file: str
    attr: str
    metric: str
    mode: str
    scheduler: str
    budget: int
    min_budget: int = 1
    param_space: Callable[[], dict[str, Any]] | None = None
    make: Callable[[Any], Any] | None = None  # builds the callable from the module (a class-based objective)
    rungflow_options: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / self.library / self.file


def _space_basic() -> dict[str, Any]:
    from ray import tune

    return {"steps": 100, "width": tune.uniform(0, 20), "height": tune.uniform(-100, 100),
            "activation": tune.grid_search(["relu", "tanh"])}


def _space_async() -> dict[str, Any]:
    from ray import tune

    return {"steps": 100, "width": tune.uniform(10, 100), "height": tune.uniform(0, 100)}


def _space_hyperband() -> dict[str, Any]:
    from ray import tune

    return {"height": tune.uniform(0, 100)}


def _space_checkpointing() -> dict[str, Any]:
    from ray import tune

    return {"steps": 10, "width": tune.randint(10, 100), "height": tune.loguniform(10, 100)}


def _space_pbt() -> dict[str, Any]:
    from ray import tune

    return {"lr": tune.uniform(0.0001, 0.02), "some_other_factor": 1, "checkpoint_interval": 5}


def _space_xgboost() -> dict[str, Any]:
    from ray import tune

    return {"objective": "binary:logistic", "eval_metric": ["logloss", "error"], "max_depth": tune.randint(1, 9),
            "min_child_weight": tune.choice([1, 2, 3]), "subsample": tune.uniform(0.5, 1.0),
            "eta": tune.loguniform(1e-4, 1e-1)}


def _space_lightgbm() -> dict[str, Any]:
    from ray import tune

    return {"objective": "binary", "metric": ["binary_error", "binary_logloss"], "verbose": -1,
            "boosting_type": tune.grid_search(["gbdt", "dart"]), "num_leaves": tune.randint(10, 1000),
            "learning_rate": tune.loguniform(1e-8, 1e-1)}


EXAMPLES: tuple[Example, ...] = (
    Example("tune_basic", "raytune", "tune_basic_example.py", "easy_objective", "mean_loss", "min", "fifo", 100,
            param_space=_space_basic),
    Example("async_hyperband", "raytune", "async_hyperband_example.py", "easy_objective", "mean_loss", "min", "asha", 100,
            min_budget=5, param_space=_space_async),
    Example("hyperband_function", "raytune", "hyperband_function_example.py", "train_func", "episode_reward_mean", "max",
            "hyperband", 81, param_space=_space_hyperband),
    Example("custom_func_checkpointing", "raytune", "custom_func_checkpointing.py", "train_func", "mean_loss", "min",
            "fifo", 10, param_space=_space_checkpointing),
    Example("pbt_function", "raytune", "pbt_function.py", "pbt_function", "mean_accuracy", "max", "pbt", 30,
            param_space=_space_pbt),
    Example("xgboost", "raytune", "xgboost_example.py", "train_breast_cancer", "test-logloss", "min", "asha", 10,
            param_space=_space_xgboost),
    Example("lightgbm", "raytune", "lightgbm_example.py", "train_breast_cancer", "binary_error", "min", "asha", 100,
            param_space=_space_lightgbm),
    Example("quadratic", "optuna", "quadratic.py", "objective", "value", "min", "fifo", 1),
    Example("pruning", "optuna", "pruning.py", "objective", "accuracy", "max", "median", 100, min_budget=1),
    Example("sklearn_simple", "optuna", "sklearn_simple.py", "objective", "accuracy", "max", "fifo", 1),
    Example("sklearn_additional_args", "optuna", "sklearn_additional_args.py", "Objective", "accuracy", "max", "fifo", 1,
            make=lambda module: module.Objective(__import__("sklearn.datasets").datasets.load_iris())),
    Example("lightgbm_simple", "optuna", "lightgbm_simple.py", "objective", "accuracy", "max", "fifo", 1),
    Example("lightgbm_integration", "optuna", "lightgbm_integration.py", "objective", "auc", "max", "median", 100,
            min_budget=10),
    Example("xgboost_simple", "optuna", "xgboost_simple.py", "objective", "accuracy", "max", "fifo", 1),
    Example("xgboost_integration", "optuna", "xgboost_integration.py", "objective", "accuracy", "max", "median", 10,
            min_budget=3),
)


def load_example(example: Example) -> Any:
    """The example's callable, its module imported from the vendored file as it is."""
    name = f"rungflow_example_{example.library}_{example.path.stem}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, example.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if example.library == "raytune":
            # Not importable on a Ray worker by name: its functions travel by value, as a user's script's do.
            import ray.cloudpickle

            ray.cloudpickle.register_pickle_by_value(module)
    return example.make(module) if example.make else getattr(module, example.attr)


def _rungflow_scheduler(example: Example, trials: int, asha_type: str = "stopping") -> dict[str, Any]:
    lo, hi = example.min_budget, example.budget
    if example.scheduler == "fifo":
        return {"kind": "fifo", "min_budget": hi, "max_budget": hi}
    if example.scheduler == "pbt":
        return {"kind": "pbt", "min_budget": 1, "max_budget": hi, "population": min(trials, 8), "perturbation_interval": 5,
                "mutations": ["lr"]}
    if example.scheduler == "median":
        return {"kind": "median", "min_budget": lo, "max_budget": hi, "grace_budget": lo}
    if example.scheduler == "hyperband":
        # Ray's HyperBandScheduler fills its brackets with the trials it is given; rungflow's Hyperband starts the
        # trials its brackets call for (many more). One successive-halving bracket keeps the trial count equal.
        return {"kind": "sha", "min_budget": lo, "max_budget": hi, "eta": 3}
    if example.scheduler == "asha" and example.library == "raytune":
        # Ray Tune's ASHAScheduler is ASHA's stopping variant: its rule, on its milestones.
        return {"kind": "asha", "asha_type": asha_type, "min_budget": lo, "max_budget": hi, "eta": 3}
    return {"kind": example.scheduler, "min_budget": lo, "max_budget": hi, "eta": 3}


def run_rungflow(example: Example, *, seed: int, trials: int, out: Path, runtime: dict[str, Any] | None = None,
                 budget: int | None = None, asha_type: str = "stopping") -> dict[str, Any]:
    """The rungflow start line: ``rungflow.sweep(fn, space=param_space, metric=..., mode=..., ...)``."""
    import rungflow

    if budget is not None:
        example = Example(**{**example.__dict__, "budget": budget, "min_budget": min(example.min_budget, max(1, budget // 3))})
    fn = load_example(example)
    space = example.param_space() if example.param_space else None
    t0 = time.perf_counter()
    result = rungflow.sweep(fn, space=space, metric=example.metric, mode=example.mode, out=out,
                            search={"algorithm": "random", "seed": seed, "num_trials": trials},
                            scheduler=_rungflow_scheduler(example, trials, asha_type), budget={"max_gpu_hours": 100},
                            runtime=runtime or {"kind": "thread", "max_concurrent": 1})
    wall = time.perf_counter() - t0
    events = result.raw.get("events") or []
    setup = result.raw["ledger"].get("setup") or []
    # The ledger's total: the trials and the setup spend (an Optuna objective's space probe) both.
    return {"best": result.raw["best"]["score"] if result.raw.get("best") else None,
            "cpu_hours": float(result.raw["ledger"]["cpu_hours"]), "setup_cpu_hours": sum(s["cpu_hours"] for s in setup),
            "setup_runs": sum(s["runs"] for s in setup), "wall_seconds": wall,
            "trials": len({e["trial_id"] for e in events}), "result": result}


def start_cold() -> None:
    """Each run starts as a fresh process would: no space learned by an earlier run, no joblib workers left running
    (scikit-learn's ``n_jobs=-1`` starts them in whichever run comes first, and they outlive it)."""
    from rungflow.tasks.trainables.optuna_objective import OptunaObjectiveTrainable

    OptunaObjectiveTrainable.forget_probes()
    if "joblib" in sys.modules:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def run_native(example: Example, *, seed: int, trials: int, out: Path, budget: int | None = None) -> dict[str, Any]:
    """The peer's own start line, with the same trial count, seed and schedule family."""
    fn = load_example(example)
    hi = budget or example.budget
    lo = min(example.min_budget, hi)
    t0 = time.perf_counter()
    if example.library == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (optuna.pruners.MedianPruner(n_warmup_steps=lo) if example.scheduler == "median"
                  else optuna.pruners.NopPruner())
        study = optuna.create_study(direction="maximize" if example.mode == "max" else "minimize",
                                    sampler=optuna.samplers.RandomSampler(seed=seed), pruner=pruner)
        study.optimize(fn, n_trials=trials)
        wall = time.perf_counter() - t0
        seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials
                      if t.datetime_complete and t.datetime_start)
        return {"best": study.best_value, "cpu_hours": seconds / 3600, "wall_seconds": wall, "trials": len(study.trials)}
    import ray
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler, PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator

    schedulers = {
        "fifo": lambda: FIFOScheduler(),
        "asha": lambda: AsyncHyperBandScheduler(max_t=hi, grace_period=lo, reduction_factor=3),
        "hyperband": lambda: HyperBandScheduler(max_t=hi, reduction_factor=3),
        "pbt": lambda: PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=5,
                                               hyperparam_mutations={"lr": tune.uniform(0.0001, 0.02)}),
    }
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    space = example.param_space() if example.param_space else {}
    grid = sum(1 for v in space.values() if isinstance(v, dict) and "grid_search" in v)
    samples = max(1, trials // (2 ** grid))  # a grid multiplies num_samples; keep the trial count equal
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(metric=example.metric, mode=example.mode, num_samples=samples,
                                    scheduler=schedulers[example.scheduler](),
                                    search_alg=BasicVariantGenerator(random_state=seed), max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(out), name="native", verbose=0,
                                  stop={"training_iteration": hi}),
        param_space=space,
    )
    results = tuner.fit()
    wall = time.perf_counter() - t0
    frame = results.get_dataframe()
    best = results.get_best_result(scope="all").metrics[example.metric]
    seconds = float(frame["time_total_s"].sum()) if "time_total_s" in frame else wall
    return {"best": best, "cpu_hours": seconds / 3600, "wall_seconds": wall, "trials": len(frame)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, the same for both tools")
    p.add_argument("--trials", type=int, default=8, help="trials per run, the same for both tools")
    p.add_argument("--only", action="append", default=None, help="example name (repeatable); default: all")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "migrate.json")
    p.add_argument("--asha-type", choices=("stopping", "promotion"), default="stopping",
                   help="rungflow's ASHA variant where the example runs Ray Tune's ASHAScheduler (stopping is Ray Tune's)")


def run(args: argparse.Namespace) -> int:
    from bench.common import prefect_api

    rows = []
    with prefect_api():
        for example in EXAMPLES:
            if args.only and example.name not in args.only:
                continue
            rows.append(_compare(example, args.seeds, args.trials, args.asha_type))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": args.seeds, "trials": args.trials, "asha_type": args.asha_type, "rows": rows},
                                   indent=2))
    return 0


def _compare(example: Example, seeds: int, trials: int, asha_type: str = "stopping") -> dict[str, Any]:
    per_tool: dict[str, list[dict[str, Any]]] = {"native": [], "rungflow": []}
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            start_cold()
            per_tool["native"].append(run_native(example, seed=seed, trials=trials, out=Path(tmp) / "native"))
            start_cold()
            ours = run_rungflow(example, seed=seed, trials=trials, out=Path(tmp) / "rungflow", asha_type=asha_type)
            ours.pop("result")
            per_tool["rungflow"].append(ours)
    row: dict[str, Any] = {"example": example.name, "library": example.library, "scheduler": example.scheduler,
                           "metric": example.metric, "mode": example.mode}
    for tool, runs in per_tool.items():
        bests = [r["best"] for r in runs if r["best"] is not None]
        row[tool] = {"best_mean": statistics.fmean(bests) if bests else None,
                     "best_std": statistics.pstdev(bests) if len(bests) > 1 else 0.0,
                     "best_range": [min(bests), max(bests)] if bests else None, "bests": [r["best"] for r in runs],
                     "cpu_hours": statistics.fmean(r["cpu_hours"] for r in runs),
                     "wall_seconds": statistics.fmean(r["wall_seconds"] for r in runs),
                     "trials": statistics.fmean(r["trials"] for r in runs)}
        if tool == "rungflow":
            row[tool]["setup_cpu_hours"] = statistics.fmean(r["setup_cpu_hours"] for r in runs)
            row[tool]["setup_runs"] = statistics.fmean(r["setup_runs"] for r in runs)
    n, o = row["native"], row["rungflow"]
    print(f"{example.name:26s} {example.library:8s} best {n['best_mean']:.4g}±{n['best_std']:.2g} vs "
          f"{o['best_mean']:.4g}±{o['best_std']:.2g}  cpu-h {n['cpu_hours']:.2e} vs {o['cpu_hours']:.2e} "
          f"(setup {o['setup_cpu_hours']:.2e}, {o['setup_runs']:g} runs)  "
          f"wall {n['wall_seconds']:.1f}s vs {o['wall_seconds']:.1f}s  trials {n['trials']:.0f} vs {o['trials']:.0f}",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench migrate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
