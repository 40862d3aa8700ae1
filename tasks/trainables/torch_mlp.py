"""A PyTorch MLP on any table (classification or regression): a real, seconds-scale trainable that resumes from checkpoints."""

from __future__ import annotations

import functools
import hashlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from rungflow.budgets.space import FloatParam, IntParam, SearchSpace
from rungflow.tasks.data import Dataset, DataSpec
from rungflow.tasks.models import FittedModel, ModelError, _kwargs_of, score_predictions
from rungflow.tasks.trainables.base import TrainableError, TrainableOptions, TrainOutcome, TrainRequest, register
from rungflow.tasks.trainables.tabular import FamilyFit, TabularTrainable

__all__ = ["TorchMLPOptions", "TorchMLPTrainable", "TorchMLPModel"]

# Bumped when the checkpoint layout changes, so an old checkpoint fails loudly instead of half-loading.
_CHECKPOINT_FORMAT = 1


class TorchMLPOptions(TrainableOptions):
    """The table to fit: ``data`` (any table, see :class:`tasks.data.DataSpec`), or the older shorthand
    ``dataset`` + ``val_fraction`` + ``data_seed`` for a bundled scikit-learn dataset (digits by default)."""

    data: DataSpec | None = None
    dataset: Literal["digits", "breast_cancer", "wine", "iris"] | None = None
    val_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    data_seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> TorchMLPOptions:
        if self.data is not None and self.dataset is not None:
            raise ValueError("give either data (any table) or dataset (a bundled one), not both")
        return self

    def spec(self) -> DataSpec:
        if self.data is not None:
            return self.data
        return DataSpec(source=f"sklearn:{self.dataset or 'digits'}", validation_fraction=self.val_fraction, seed=self.data_seed)


@dataclass(frozen=True)
class _Prepared:
    """Normalised CPU tensors and the statistics a saved model needs to normalise new rows the same way."""

    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_va: torch.Tensor
    y_va: torch.Tensor
    n_out: int
    stats: dict[str, torch.Tensor]


def normalise(x: np.ndarray, median: Any, mean: Any, std: Any) -> torch.Tensor:
    """Missing values to the train median, then standardised with train statistics (float32)."""
    median, mean, std = (np.asarray(v, dtype=np.float64) for v in (median, mean, std))
    x = np.where(np.isnan(x), median, x)
    return torch.from_numpy(((x - mean) / std).astype(np.float32))


@functools.lru_cache(maxsize=8)
def _prepare(dataset: Dataset) -> _Prepared:
    """Cached per dataset so a worker's later trials skip the work."""
    x_tr = np.asarray(dataset.X_train, dtype=np.float64)
    # Statistics from the train part only, so validation stays unseen.
    median = np.nan_to_num(np.nanmedian(x_tr, axis=0)) if np.isnan(x_tr).any() else np.zeros(x_tr.shape[1])
    filled = np.where(np.isnan(x_tr), median, x_tr)
    mean = filled.mean(axis=0)
    std = filled.std(axis=0)
    std[std == 0] = 1.0  # constant pixels in digits
    if dataset.task == "classification":
        y_tr, y_va = torch.from_numpy(dataset.y_train.astype(np.int64)), torch.from_numpy(dataset.y_valid.astype(np.int64))
        y_mean, y_std, n_out = 0.0, 1.0, dataset.n_classes
    else:
        y_mean, y_std = float(dataset.y_train.mean()), float(dataset.y_train.std() or 1.0)
        y_tr = torch.from_numpy(((dataset.y_train - y_mean) / y_std).astype(np.float32))
        y_va = torch.from_numpy(dataset.y_valid.astype(np.float64))
        n_out = 1
    stats = {
        "median": torch.from_numpy(median), "mean": torch.from_numpy(mean), "std": torch.from_numpy(std),
        "y_mean": torch.tensor(y_mean, dtype=torch.float64), "y_std": torch.tensor(y_std, dtype=torch.float64),
    }
    return _Prepared(normalise(dataset.X_train, median, mean, std), y_tr, normalise(dataset.X_valid, median, mean, std), y_va, n_out, stats)


def _derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from the parts (Python's hash() is salted per process, so not usable)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class _MLP(nn.Module):
    """ReLU MLP whose init and dropout draw only from explicit generators, never torch's global RNG.

    Trials may share a process (thread task runners), so global RNG state would make results depend on
    what ran next to them.
    """

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int, dropout: float, init_gen: torch.Generator) -> None:
        super().__init__()
        sizes = [n_in] + [hidden] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], n_out)
        self.dropout = dropout
        with torch.no_grad():
            for lin in [*self.hidden, self.head]:
                # Same scheme as nn.Linear's default reset_parameters, but on our generator.
                nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=init_gen)
                bound = 1.0 / math.sqrt(lin.in_features)
                nn.init.uniform_(lin.bias, -bound, bound, generator=init_gen)

    def forward(self, x: torch.Tensor, drop_gen: torch.Generator | None = None) -> torch.Tensor:
        for lin in self.hidden:
            x = torch.relu(lin(x))
            if drop_gen is not None and self.dropout > 0:
                keep = torch.rand(x.shape, generator=drop_gen, device=x.device) >= self.dropout
                x = x * keep / (1.0 - self.dropout)
        return self.head(x)


class TorchMLPModel(FittedModel):
    """The tabular MLP: architecture, weights and the input/label normalisation it was trained with.

    Beside the network it rebuilds, so the model module knows no family; importing this module
    registers the ``torch`` backend with :func:`tasks.models.load_model`.
    """

    backend = "torch"

    def __init__(self, state: Mapping[str, Any], arch: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = dict(state)  # tensors: median, mean, std, (y_mean, y_std), and the module's state_dict under "model"
        self.arch = dict(arch)
        self._module: _MLP | None = None

    def _network(self) -> _MLP:
        if self._module is None:
            gen = torch.Generator().manual_seed(0)
            module = _MLP(self.arch["n_in"], self.arch["n_out"], self.arch["hidden_units"], self.arch["num_layers"],
                          self.arch["dropout"], gen)
            module.load_state_dict(self.state["model"])
            module.eval()
            self._module = module
        return self._module

    def _scores(self, x: np.ndarray) -> np.ndarray:
        xt = normalise(x, self.state["median"], self.state["mean"], self.state["std"])
        with torch.no_grad():
            out = self._network()(xt.to(torch.float32))
        if self.task == "classification":
            return torch.softmax(out, dim=1).double().numpy()
        return (out[:, 0].double() * self.state["y_std"] + self.state["y_mean"]).numpy()

    def _extra(self) -> dict[str, Any]:
        return {"arch": self.arch}

    def _save_files(self, directory: Path) -> None:
        torch.save({k: v for k, v in self.state.items()}, directory / "weights.pt")

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> TorchMLPModel:
        try:
            state = torch.load(directory / "weights.pt", weights_only=True, map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{directory / 'weights.pt'}: cannot load weights ({type(exc).__name__}: {exc})") from None
        return cls(state, manifest["extra"]["arch"], **_kwargs_of(manifest))


@register
class TorchMLPTrainable(TabularTrainable):
    """MLP trained with AdamW for ``budget`` epochs; the score is validation accuracy in [0, 1] (R² for regression)."""

    kind: ClassVar[str] = "torch_mlp"
    metric: ClassVar[str] = "val_accuracy"
    Options: ClassVar[type[TrainableOptions]] = TorchMLPOptions
    resumable: ClassVar[bool] = True
    # What may change on resume: the optimiser's rates and the dropout rate; the layer sizes and the batch
    # size are the checkpoint's shape (or its data order), so they may not.
    mutable_params: ClassVar[frozenset[str] | None] = frozenset({"lr", "weight_decay", "dropout"})
    options: TorchMLPOptions

    def data_spec(self) -> DataSpec:
        return self.options.spec()

    def default_space(self) -> SearchSpace:
        return SearchSpace(
            (
                FloatParam("lr", 1e-4, 1e-1, log=True),
                IntParam("hidden_units", 16, 256, log=True),
                IntParam("num_layers", 1, 3),
                FloatParam("dropout", 0.0, 0.5),
                IntParam("batch_size", 16, 256, log=True),
                FloatParam("weight_decay", 1e-6, 1e-2, log=True),
            )
        )

    def train(self, request: TrainRequest) -> TrainOutcome:
        """Train from the checkpoint's epoch (or scratch) up to ``round(request.budget)`` epochs."""
        dataset = self.dataset()
        run = self._run(request.config, request.budget, dataset, request.device,
                        self.seed_for(request.seed, request.trial_id), request.checkpoint)
        return run.outcome({**run.metrics, "epochs_trained_total": float(run.budget_reached)})

    def seed_for(self, seed: int, trial_id: str) -> int:
        return _derive_seed(seed, trial_id)

    def fit_to_budget(self, config, budget, dataset, *, device, seed, checkpoint=None) -> FamilyFit:
        run = self._run(config, budget, dataset, device, seed, checkpoint)
        if not math.isfinite(run.metrics["val_score"]):
            raise TrainableError(f"torch_mlp: training diverged (loss {run.metrics['train_loss']}); lower lr")
        return FamilyFit(run.model, run.budget_reached, run.budget_trained, run.checkpoint, {"train_loss": run.metrics["train_loss"]})

    def _run(self, config: Mapping[str, Any], budget: float, dataset: Dataset, device_name: str, base_seed: int,
             checkpoint: bytes | None) -> FamilyFit:
        # Many trials share a couple of cores; intra-op threads would only oversubscribe them.
        torch.set_num_threads(1)
        device = torch.device(device_name if device_name.startswith("cuda") and torch.cuda.is_available() else "cpu")
        cfg = _read_config(config)
        classify = dataset.task == "classification"
        prepared = _prepare(dataset)
        # Cached tensors are shared by every trial in the process: read them, never write in place.
        x_tr, y_tr, x_va = prepared.x_tr.to(device), prepared.y_tr.to(device), prepared.x_va.to(device)

        init_gen = torch.Generator().manual_seed(base_seed)
        model = _MLP(x_tr.shape[1], prepared.n_out, cfg["hidden_units"], cfg["num_layers"], cfg["dropout"], init_gen).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

        epoch, train_loss = 0, float("nan")
        if checkpoint is not None:
            epoch, train_loss = _restore(checkpoint, model, optimizer, device)
            # The optimiser's saved state carries the rates it ran with; a resumed trial (a PBT clone with a
            # mutated config) trains on with its own.
            for group in optimizer.param_groups:
                group["lr"], group["weight_decay"] = cfg["lr"], cfg["weight_decay"]

        target = max(int(round(budget)), 0)
        start = epoch
        perm_gen = torch.Generator()
        drop_gen = torch.Generator(device=device)
        batch, n = cfg["batch_size"], x_tr.shape[0]
        diverged = False
        while epoch < target and not diverged:
            # Reseeding per epoch from (trial, epoch) makes a resumed run draw exactly what an unbroken one
            # would, with no RNG state to carry across devices in the checkpoint.
            perm_gen.manual_seed(_derive_seed(base_seed, epoch, "perm"))
            drop_gen.manual_seed(_derive_seed(base_seed, epoch, "drop"))
            order = torch.randperm(n, generator=perm_gen).to(device)
            model.train()
            total = torch.zeros((), device=device)
            for i in range(0, n, batch):
                idx = order[i : i + batch]
                out = model(x_tr[idx], drop_gen)
                if classify:
                    loss = nn.functional.cross_entropy(out, y_tr[idx])
                else:
                    loss = nn.functional.mse_loss(out[:, 0], y_tr[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * idx.numel()
            train_loss = float(total) / n  # one sync per epoch, not per step
            diverged = not math.isfinite(train_loss)
            epoch += 1

        metrics: dict[str, float] = {"train_loss": train_loss}
        if diverged:
            metrics["val_score"] = float("nan")  # the caller records a non-finite score as a failed trial
        else:
            model.eval()
            with torch.no_grad():
                out = model(x_va)
            if classify:
                # float64 so the score equals the exact fraction a saved model's evaluate() reports.
                score = float((out.argmax(dim=1).cpu() == prepared.y_va).double().mean())
                metrics.update(val_score=score, val_accuracy=score)
            else:
                pred = out[:, 0].double().cpu() * prepared.stats["y_std"] + prepared.stats["y_mean"]
                metrics.update(score_predictions("regression", dataset.y_valid, pred.numpy()))
        arch = {"n_in": int(x_tr.shape[1]), "n_out": prepared.n_out, "hidden_units": cfg["hidden_units"],
                "num_layers": cfg["num_layers"], "dropout": cfg["dropout"]}
        state = {**prepared.stats, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
        fitted = TorchMLPModel(state, arch, family=self.kind, encoding=dataset.encoding(), config=dict(config), budget=float(epoch))
        return FamilyFit(
            fitted, float(epoch), float(epoch - start),
            None if diverged else _save(model, optimizer, epoch, train_loss), metrics,
        )


def _read_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults for parameters a user space left out, coerced to the types the model needs."""
    merged = {"lr": 1e-3, "hidden_units": 64, "num_layers": 2, "dropout": 0.0, "batch_size": 64, "weight_decay": 1e-4, **config}
    try:
        out = {
            "lr": float(merged["lr"]),
            "hidden_units": int(round(merged["hidden_units"])),
            "num_layers": int(round(merged["num_layers"])),
            "dropout": float(merged["dropout"]),
            "batch_size": int(round(merged["batch_size"])),
            "weight_decay": float(merged["weight_decay"]),
        }
    except (TypeError, ValueError) as exc:
        raise TrainableError(f"torch_mlp: config values must be numbers, got {dict(config)!r}: {exc}") from exc
    if not 0.0 <= out["dropout"] < 1.0 or out["hidden_units"] < 1 or out["num_layers"] < 1 or out["batch_size"] < 1 or out["lr"] <= 0:
        raise TrainableError(f"torch_mlp: config out of range {out}: need lr > 0, dropout in [0, 1), units/layers/batch_size >= 1")
    return out


def _save(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, train_loss: float) -> bytes:
    """Checkpoint as tensors and primitives only, so it loads with ``weights_only=True``."""
    buf = io.BytesIO()
    torch.save(
        {
            "format": _CHECKPOINT_FORMAT,
            "epoch": int(epoch),
            "train_loss": float(train_loss),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        },
        buf,
    )
    return buf.getvalue()


def _restore(checkpoint: bytes, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> tuple[int, float]:
    """Load model and optimizer state in place; returns (epoch reached, last train loss)."""
    try:
        state = torch.load(io.BytesIO(checkpoint), weights_only=True, map_location=device)
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r}, expected {_CHECKPOINT_FORMAT}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except Exception as exc:  # a checkpoint from another config or version: say so rather than train on garbage
        raise TrainableError(f"torch_mlp: cannot resume from checkpoint ({type(exc).__name__}: {exc})") from exc
    return int(state["epoch"]), float(state["train_loss"])
