"""LCBench via the YAHPO Gym surrogate: learning curves of tabular MLPs answered in well under a millisecond.

The surrogate predicts what a real run would have scored and how long it would have trained, so a
sweep of thousands of trials finishes in seconds while its budget is billed as if they had run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from rungflow.budgets.space import FloatParam, IntParam, SearchSpace
from rungflow.tasks.trainables.base import Trainable, TrainableError, TrainableOptions, TrainOutcome, TrainRequest, register
from rungflow.tasks.trainables.lcbench_surrogate import LCBenchSurrogate, SurrogateError

__all__ = ["LCBenchOptions", "LCBenchTrainable", "INSTANCES", "resolve_data_path", "synthetic_noise"]

DATA_ENV = "RUNGFLOW_YAHPO_DATA"
MIN_EPOCH, MAX_EPOCH = 1, 52

# The OpenML_task_id choices of lcbench/config_space.json, copied so options validate without the data.
INSTANCES: tuple[str, ...] = (
    "3945", "7593", "34539", "126025", "126026", "126029", "146212", "167104", "167149", "167152",
    "167161", "167168", "167181", "167184", "167185", "167190", "167200", "167201", "168329", "168330",
    "168331", "168335", "168868", "168908", "168910", "189354", "189862", "189865", "189866", "189873",
    "189905", "189906", "189908", "189909",
)  # fmt: skip

# Bounds exactly as config_space.json has them: yahpo rejects a learning_rate of 1e-4, which lies
# just below its stored lower bound 1.0000000000000009e-4.
_FLOATS: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.00010000000000000009, 0.10000000000000002, True),
    "max_dropout": (0.0, 1.0, False),
    "momentum": (0.1, 0.99, False),
    "weight_decay": (1e-05, 0.1, False),
}
_INTS: dict[str, tuple[int, int, bool]] = {
    "batch_size": (16, 512, True),
    "max_units": (64, 1024, True),
    "num_layers": (1, 5, False),
}


class LCBenchOptions(TrainableOptions):
    """Which LCBench dataset the surrogate answers for, and where its files are."""

    instance: str = "3945"
    noisy: bool = False
    # Synthetic seed-to-seed noise: YAHPO's noisy model (model_noisy.onnx) is not in every copy of
    # its data, so benchmarks can add Gaussian noise to each reported accuracy instead, drawn
    # deterministically per (sweep seed, trial, epoch). Its std is ``noise_std`` points at 50 %
    # accuracy and shrinks toward 0 and 100 % as a binomial error does, std ∝ √(p(1 − p)): two
    # trainings of one configuration differ like two independent error draws on a fixed
    # validation set (Jordan, ICLR 2024), and a 99.6 % model cannot vary by ±0.5 points. The
    # noise-free score stays in the metrics as ``val_accuracy_clean``, so a benchmark can judge
    # regret on what the model is really worth.
    noise_std: float = 0.0
    data_path: str | None = None

    @field_validator("noise_std")
    @classmethod
    def _noise_std(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be zero or more accuracy points (0: no synthetic noise)")
        return value

    @model_validator(mode="after")
    def _one_kind_of_noise(self) -> LCBenchOptions:
        if self.noisy and self.noise_std > 0:
            raise ValueError("set either noisy (YAHPO's noisy surrogate) or noise_std (synthetic Gaussian noise), not both")
        return self

    @field_validator("instance", mode="before")
    @classmethod
    def _instance_known(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # YAML reads `instance: 3945` as an int
        if isinstance(value, str) and value not in INSTANCES:
            raise ValueError(f"unknown LCBench instance {value!r}; use an OpenML task id such as {', '.join(INSTANCES[:6])} ({len(INSTANCES)} in all)")
        return value


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def resolve_data_path(option: str | None) -> Path:
    """The YAHPO data folder (the one holding ``lcbench/``): the option, else $RUNGFLOW_YAHPO_DATA, else a shared checkout."""
    explicit = [(f"trainable.options.data_path={option!r}", option), (f"${DATA_ENV}={os.environ.get(DATA_ENV)!r}", os.environ.get(DATA_ENV))]
    for source, raw in explicit:
        if raw:
            path = Path(raw).expanduser().resolve()
            if path.name == "lcbench" and (path / "model.onnx").is_file():
                path = path.parent  # pointing at lcbench/ itself is an easy slip; accept it
            if not (path / "lcbench" / "model.onnx").is_file():
                # A path given explicitly but wrong is an error, not a cue to look elsewhere.
                raise TrainableError(f"yahpo_lcbench: {source} has no lcbench/model.onnx; point it at the folder that contains lcbench/")
            return path
    # A checkout beside the shared benchmark data (this project's own layout); installs set the env var.
    candidates = [_repo_root().parent / "shared" / "benchmarks" / "yahpo"]
    for path in candidates:
        if (path / "lcbench" / "model.onnx").is_file():
            return path.resolve()
    raise TrainableError(
        f"yahpo_lcbench: no YAHPO data found (looked in {', '.join(map(str, candidates))}); set ${DATA_ENV} or "
        "trainable.options.data_path to a folder containing lcbench/ (model.onnx, config_space.json, encoding.json)"
    )


_construct_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def _benchmark(instance: str, noisy: bool, data_path: str) -> LCBenchSurrogate:
    """One single-threaded ONNX session per (instance, noisy, data_path) per process."""
    with _construct_lock:
        try:
            return LCBenchSurrogate(Path(data_path) / "lcbench", instance, noisy=noisy)
        except FileNotFoundError as exc:
            raise TrainableError(f"yahpo_lcbench: noisy=true needs {exc}, which is missing; set trainable.options.noisy to false") from exc


def _yahpo_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config in yahpo's exact types (ints as int, floats as float), snapped onto bounds it misses by rounding."""
    missing = sorted((set(_FLOATS) | set(_INTS)) - set(config))
    unknown = sorted(set(config) - set(_FLOATS) - set(_INTS) - {"OpenML_task_id", "epoch"})
    if missing or unknown:
        # yahpo would silently fill a missing parameter with 0 and ignore an unknown one.
        raise TrainableError(f"yahpo_lcbench: config needs exactly {sorted(_FLOATS | _INTS)}; missing {missing}, unknown {unknown}")
    out: dict[str, Any] = {}
    for name, (low, high, _) in _FLOATS.items():
        value = float(config[name])
        if math.isclose(value, low, rel_tol=1e-9) or math.isclose(value, high, rel_tol=1e-9):
            value = min(max(value, low), high)
        out[name] = value
    for name in _INTS:
        value = config[name]
        out[name] = int(round(value)) if isinstance(value, float) else int(value)
    return out


def _seed(base: int, trial_id: str, epoch: int) -> int:
    """Per-(trial, epoch) seed for the noisy surrogate, so a resumed trial sees what an unbroken one would."""
    digest = hashlib.blake2b(repr((base, trial_id, epoch)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def synthetic_noise(accuracy: float, std: float, seed: int) -> float:
    """``accuracy`` (%) plus noise drawn from ``seed``: N(0, σ²) with σ = ``std`` · 2√(p(1 − p)), p = accuracy/100
    (``std`` at 50 %, a binomial error's shape), kept within [0, 100]."""
    import numpy as np

    p = min(max(accuracy / 100.0, 0.0), 1.0)
    sigma = std * 2.0 * math.sqrt(p * (1.0 - p))
    return float(min(100.0, max(0.0, accuracy + sigma * np.random.default_rng(seed).standard_normal())))


@register
class LCBenchTrainable(Trainable):
    """LCBench surrogate trained in epochs; the score is validation accuracy in percent, billed at predicted runtime."""

    kind: ClassVar[str] = "yahpo_lcbench"
    metric: ClassVar[str] = "val_accuracy"
    default_budget: ClassVar[tuple[float, float]] = (MIN_EPOCH, MAX_EPOCH)
    Options: ClassVar[type[TrainableOptions]] = LCBenchOptions
    options: LCBenchOptions
    resumable: ClassVar[bool] = True
    # The surrogate answers for one configuration's whole learning curve: a change mid-run has no answer.
    mutable_params: ClassVar[frozenset[str] | None] = frozenset()

    def default_space(self) -> SearchSpace:
        floats = [FloatParam(n, lo, hi, log) for n, (lo, hi, log) in _FLOATS.items()]
        ints = [IntParam(n, lo, hi, log) for n, (lo, hi, log) in _INTS.items()]
        return SearchSpace(tuple(sorted(floats + ints, key=lambda p: p.name)))

    def check(self) -> None:
        resolve_data_path(self.options.data_path)

    def _bset(self) -> Any:
        path = resolve_data_path(self.options.data_path)
        return _benchmark(self.options.instance, self.options.noisy, str(path))

    def _query(self, config: Mapping[str, Any], epoch: int, seed: int | None = None) -> dict[str, float]:
        query = {**_yahpo_config(config), "epoch": int(epoch)}
        try:
            return self._bset().query(query, seed=seed if self.options.noisy else None)
        except SurrogateError as exc:
            raise TrainableError(f"yahpo_lcbench: config rejected by the surrogate: {exc}") from exc

    def estimate_gpu_seconds(self, config: Mapping[str, Any], budget_from: float, budget_to: float) -> float | None:
        to = _clamp_epoch(budget_to)
        start = int(round(budget_from))
        if start >= to:
            return 0.0
        spent = self._query(config, start)["time"] if start >= MIN_EPOCH else 0.0
        return max(self._query(config, to)["time"] - spent, 0.0)

    def train(self, request: TrainRequest) -> TrainOutcome:
        """Answer the surrogate at ``budget`` epochs; bill the predicted time since the checkpoint's epoch."""
        epoch_from, time_from = 0, 0.0
        if request.checkpoint is not None:
            try:
                state = json.loads(request.checkpoint)
                epoch_from, time_from = int(state["epoch"]), float(state["time"])
            except (ValueError, KeyError, TypeError) as exc:
                raise TrainableError(f"yahpo_lcbench: cannot resume from checkpoint {request.checkpoint[:80]!r}: {exc}") from exc
        epoch = max(_clamp_epoch(request.budget), epoch_from)  # a promotion never un-trains
        result = self._query(request.config, epoch, seed=_seed(request.seed, request.trial_id, epoch))
        # Cumulative time never falls (a surrogate curve may wiggle), so a call is never billed negative,
        # and a trial already at its budget is billed nothing.
        elapsed = max(result["time"], time_from) if epoch > epoch_from else time_from
        score = result["val_accuracy"]
        metrics = {"val_accuracy": score, "time": elapsed}
        if self.options.noise_std > 0:
            metrics["val_accuracy_clean"] = score
            score = synthetic_noise(score, self.options.noise_std, _seed(request.seed, request.trial_id, epoch))
            metrics["val_accuracy"] = score
        if "val_cross_entropy" in result:
            metrics["val_cross_entropy"] = result["val_cross_entropy"]
        return TrainOutcome(
            score=score,
            budget_reached=float(epoch),
            budget_trained=float(epoch - epoch_from),
            checkpoint=json.dumps({"epoch": epoch, "time": elapsed}).encode(),
            metrics=metrics,
            gpu_seconds=elapsed - time_from,
        )


def _clamp_epoch(budget: float) -> int:
    return min(max(int(round(budget)), MIN_EPOCH), MAX_EPOCH)
