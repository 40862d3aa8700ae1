"""A PyTorch MLP on a scikit-learn bundled dataset: a real, seconds-scale trainable that resumes from checkpoints."""

from __future__ import annotations

import functools
import hashlib
import io
import math
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
import torch
from pydantic import Field
from torch import nn

from budgets.space import FloatParam, IntParam, SearchSpace
from tasks.trainables.base import Trainable, TrainableError, TrainableOptions, TrainOutcome, TrainRequest, register

__all__ = ["TorchMLPOptions", "TorchMLPTrainable"]

# Bumped when the checkpoint layout changes, so an old checkpoint fails loudly instead of half-loading.
_CHECKPOINT_FORMAT = 1


class TorchMLPOptions(TrainableOptions):
    """Which bundled dataset to fit and how to split it."""

    dataset: Literal["digits", "breast_cancer", "wine", "iris"] = "digits"
    val_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    data_seed: int = 0


@functools.lru_cache(maxsize=8)
def _load_split(dataset: str, val_fraction: float, data_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Standardised CPU tensors (x_train, y_train, x_val, y_val, n_classes), cached so a worker's later trials skip the load."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loaders = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    x, y = loaders[dataset](return_X_y=True)
    try:
        x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=data_seed)
    except ValueError as exc:
        raise TrainableError(f"trainable.options.val_fraction={val_fraction} cannot split {dataset!r} stratified: {exc}") from exc
    # Statistics from the train part only, so validation stays unseen.
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0  # constant pixels in digits
    return (
        torch.from_numpy(((x_tr - mean) / std).astype(np.float32)),
        torch.from_numpy(y_tr.astype(np.int64)),
        torch.from_numpy(((x_va - mean) / std).astype(np.float32)),
        torch.from_numpy(y_va.astype(np.int64)),
        int(y.max()) + 1,
    )


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


@register
class TorchMLPTrainable(Trainable):
    """MLP classifier trained with AdamW for ``budget`` epochs; the score is validation accuracy in [0, 1]."""

    kind: ClassVar[str] = "torch_mlp"
    metric: ClassVar[str] = "val_accuracy"
    mode: ClassVar[Literal["max", "min"]] = "max"
    budget_unit: ClassVar[str] = "epochs"
    integer_budget: ClassVar[bool] = True
    default_budget: ClassVar[tuple[float, float]] = (1, 27)
    Options: ClassVar[type[TrainableOptions]] = TorchMLPOptions
    options: TorchMLPOptions

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
        # Many trials share a couple of cores; intra-op threads would only oversubscribe them.
        torch.set_num_threads(1)
        device = torch.device(request.device if request.device.startswith("cuda") and torch.cuda.is_available() else "cpu")
        cfg = _read_config(request.config)
        opts = self.options
        # Cached tensors are shared by every trial in the process: read them, never write in place.
        x_tr, y_tr, x_va, y_va, n_classes = _load_split(opts.dataset, opts.val_fraction, opts.data_seed)
        x_tr, y_tr, x_va, y_va = x_tr.to(device), y_tr.to(device), x_va.to(device), y_va.to(device)

        base_seed = _derive_seed(request.seed, request.trial_id)
        init_gen = torch.Generator().manual_seed(base_seed)
        model = _MLP(x_tr.shape[1], n_classes, cfg["hidden_units"], cfg["num_layers"], cfg["dropout"], init_gen).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

        epoch, train_loss = 0, float("nan")
        if request.checkpoint is not None:
            epoch, train_loss = _restore(request.checkpoint, model, optimizer, device)

        target = max(int(round(request.budget)), 0)
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
                loss = nn.functional.cross_entropy(model(x_tr[idx], drop_gen), y_tr[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * idx.numel()
            train_loss = float(total) / n  # one sync per epoch, not per step
            diverged = not math.isfinite(train_loss)
            epoch += 1

        if diverged:
            score = float("nan")  # the caller records a non-finite score as a failed trial
        else:
            model.eval()
            with torch.no_grad():
                score = float((model(x_va).argmax(dim=1) == y_va).float().mean())
        return TrainOutcome(
            score=score,
            budget_reached=float(epoch),
            budget_trained=float(epoch - start),
            checkpoint=None if diverged else _save(model, optimizer, epoch, train_loss),
            metrics={"val_accuracy": score, "train_loss": train_loss, "epochs_trained_total": float(epoch)},
            gpu_seconds=None,
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
