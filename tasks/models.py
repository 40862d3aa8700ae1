"""Fitted models of every family behind one interface, saved and loaded without unpickling arbitrary objects.

A model directory holds ``model.json`` (family, backend, the data encoding, the config and budget it was
fitted at, its validation metrics) and the backend's own files:

- scikit-learn: ``model.skops``, read with ``skops.io`` against :data:`SKOPS_TRUSTED` (an explicit list;
  anything else in the file is refused);
- torch: ``weights.pt`` (tensors and primitives only), read with ``torch.load(weights_only=True)``;
- AutoGluon: ``predictor/``, AutoGluon's own directory. AutoGluon pickles internally, so load it only
  from a directory your own sweep wrote (a run's ``best_model/`` or your registry), never from elsewhere;
- an ensemble of trials: ``member-N/``, each a model directory of the above, weighted in ``model.json``;
- auto-sklearn: ``autosklearn.pkl``, a pickle read only inside the separate auto-sklearn interpreter
  (:mod:`tasks.trainables.autosklearn_worker`) and only from your own runs, for the same reason.
"""

from __future__ import annotations

import json
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rungflow.tasks.data import Dataset, encode_frame

__all__ = [
    "FittedModel", "SklearnModel", "ModelError", "fit_model", "save_model", "load_model", "BACKENDS",
    "SKOPS_TRUSTED", "MODEL_FORMAT", "score_predictions", "EnsembleModel",
]

MODEL_FORMAT = 1
_MEMBER_DIR = re.compile(r"member-\d+")
MANIFEST = "model.json"
# Types scikit-learn estimators of our families hold that skops does not trust by default: the
# tree structures of forests and gradient boosting and the validation helper HGB keeps a partial of.
SKOPS_TRUSTED: tuple[str, ...] = (
    "functools.partial",
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.utils.validation.check_array",
)


# Every FittedModel subclass by its backend name, filled as the modules defining them are imported: each
# family's module brings its own backend (the MLP's is in tasks/trainables/torch_mlp.py), so this module
# names none of them and the trainables can build on it without the two importing each other.
BACKENDS: dict[str, type[FittedModel]] = {}


class ModelError(ValueError):
    """A model directory that cannot be loaded or an input it cannot predict on; one line naming the fix."""


def score_predictions(task: str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Validation metrics from class probabilities (classification) or predictions (regression).

    ``val_score`` is the one a sweep maximises: accuracy for classification, R² for regression.
    """
    if task == "classification":
        pred = np.asarray(scores).argmax(axis=1)
        acc = float((pred == y_true).mean())
        eps = 1e-15
        p = np.clip(np.asarray(scores, dtype=np.float64)[np.arange(len(y_true)), y_true], eps, 1.0)
        return {"val_score": acc, "val_accuracy": acc, "val_log_loss": float(-np.log(p).mean())}
    pred = np.asarray(scores, dtype=np.float64).reshape(-1)
    resid = float(((y_true - pred) ** 2).sum())
    total = float(((y_true - y_true.mean()) ** 2).sum())
    r2 = 1.0 - resid / total if total > 0 else 0.0
    return {"val_score": r2, "val_r2": r2, "val_rmse": float(np.sqrt(resid / len(y_true)))}


class FittedModel(ABC):
    """A trained model of any family: ``predict``/``predict_proba`` on a DataFrame of raw columns or an encoded matrix.

    ``predict`` returns the original class labels (classification) or numbers (regression);
    ``predict_proba`` columns follow ``classes``.
    """

    backend: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.backend:
            BACKENDS[cls.backend] = cls

    def __init__(self, *, family: str, encoding: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                 budget: float | None = None, metrics: Mapping[str, float] | None = None) -> None:
        self.family = family
        self.encoding = dict(encoding)
        self.task: str = encoding["task"]
        self.feature_names: list[str] = list(encoding["feature_names"])
        self.classes: list[Any] | None = None if encoding.get("classes") is None else list(encoding["classes"])
        self.config = dict(config or {})
        self.budget = budget
        self.metrics = dict(metrics or {})

    # -- prediction --------------------------------------------------------------------------
    def matrix(self, X: Any) -> np.ndarray:
        """``X`` encoded as at training time (a DataFrame is encoded; an array must already be)."""
        if isinstance(X, pd.DataFrame):
            return encode_frame(X, self.feature_names, {k: tuple(v) for k, v in self.encoding.get("categories", {}).items()})
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise ModelError(f"X has shape {arr.shape}; this model takes {len(self.feature_names)} feature columns "
                             f"({', '.join(self.feature_names[:5])}...): pass a DataFrame or an encoded 2-D array")
        return arr

    @abstractmethod
    def _scores(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, k) for classification, predictions (n,) for regression."""

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task != "classification":
            raise ModelError(f"predict_proba: this {self.family} model does regression; use predict")
        return np.asarray(self._scores(self.matrix(X)), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        scores = self._scores(self.matrix(X))
        if self.task == "classification":
            assert self.classes is not None
            return np.asarray(self.classes, dtype=object)[np.asarray(scores).argmax(axis=1)]
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    def validation_scores(self, dataset: Dataset) -> np.ndarray:
        """Class probabilities or predictions on ``dataset``'s validation split (same encoding assumed)."""
        return np.asarray(self._scores(np.asarray(dataset.X_valid)), dtype=np.float64)

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Metrics on ``dataset``'s validation split (same encoding assumed)."""
        return score_predictions(self.task, dataset.y_valid, self.validation_scores(dataset))

    # -- persistence -------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT, "backend": self.backend, "family": self.family, "encoding": self.encoding,
            "config": self.config, "budget": self.budget, "metrics": self.metrics, "extra": self._extra(),
        }

    def _extra(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def _save_files(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> FittedModel: ...

    def _kwargs(self) -> dict[str, Any]:
        return {"family": self.family, "encoding": self.encoding, "config": self.config, "budget": self.budget, "metrics": self.metrics}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} family={self.family} task={self.task} features={len(self.feature_names)}>"


class SklearnModel(FittedModel):
    backend = "sklearn"

    def __init__(self, estimator: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.estimator = estimator

    def _scores(self, x: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return self.estimator.predict_proba(x)
        return self.estimator.predict(x)

    def _save_files(self, directory: Path) -> None:
        import skops.io as sio

        (directory / "model.skops").write_bytes(sio.dumps(self.estimator))

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> SklearnModel:
        data = (directory / "model.skops").read_bytes()
        return cls(skops_loads(data, where=str(directory / "model.skops")), **_kwargs_of(manifest))


class EnsembleModel(FittedModel):
    """The weighted average of its members' class probabilities (classification) or predictions (regression)."""

    backend = "ensemble"

    def __init__(self, members: Sequence[FittedModel], weights: Sequence[float], *, details: Sequence[Mapping[str, Any]] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(members) != len(weights) or not members:
            raise ModelError(f"an ensemble needs one weight per member; got {len(members)} members, {len(weights)} weights")
        total = float(sum(weights))
        self.members = list(members)
        self.weights = [float(w) / total for w in weights]
        self.details = [dict(d) for d in details] or [{} for _ in members]

    def _scores(self, x: np.ndarray) -> np.ndarray:
        return sum(w * np.asarray(m._scores(x), dtype=np.float64) for m, w in zip(self.members, self.weights))

    def _extra(self) -> dict[str, Any]:
        return {"members": [{**detail, "dir": f"member-{i}", "weight": w, "family": m.family}
                            for i, (m, w, detail) in enumerate(zip(self.members, self.weights, self.details))]}

    def _save_files(self, directory: Path) -> None:
        for i, member in enumerate(self.members):
            save_model(member, directory / f"member-{i}")

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any]) -> EnsembleModel:
        entries = (manifest.get("extra") or {}).get("members") or []
        names = [str(e.get("dir", "")) for e in entries]
        bad = [n for n in names if not _MEMBER_DIR.fullmatch(n)]
        if not entries or bad:
            raise ModelError(f"{directory / 'model.json'}: ensemble members {bad or '[]'} are not member-N folders; "
                             "the model directory is damaged, save it again")
        members = [load_model(directory / name) for name in names]
        return cls(members, [float(e["weight"]) for e in entries],
                   details=[{k: v for k, v in e.items() if k not in ("dir", "weight", "family")} for e in entries],
                   **_kwargs_of(manifest))



def skops_loads(data: bytes, where: str = "checkpoint") -> Any:
    """A scikit-learn object from skops bytes, refusing any type outside the default and :data:`SKOPS_TRUSTED` lists."""
    import skops.io as sio

    try:
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(SKOPS_TRUSTED))
    except Exception as exc:
        raise ModelError(f"{where}: not a skops file ({type(exc).__name__}: {exc}); save it with rungflow.save_model") from None
    if untrusted:
        raise ModelError(f"{where}: holds types outside the trusted list {untrusted}; refusing to load it")
    return sio.loads(data, trusted=list(SKOPS_TRUSTED))


def _kwargs_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {k: manifest.get(k) for k in ("family", "encoding", "config", "budget", "metrics")}


def _backend(backend: Any, family: Any, path: Path) -> type[FittedModel]:
    """The class that loads ``backend``: registered already, or by importing the family that saved it.

    The family is looked up among the trainables by name (built in or installed), never imported from
    a string in the file, so a model directory cannot make rungflow import code that is not installed.
    """
    if backend not in BACKENDS:
        from rungflow.tasks.trainables import TrainableError, get_trainable_class

        try:
            get_trainable_class(str(family))
        except KeyError:
            pass
        except (ImportError, TrainableError) as exc:
            raise ModelError(f"{path}: backend {backend!r} of family {family!r} is not available here ({exc}); "
                             "install its extra") from None
    if backend not in BACKENDS:
        raise ModelError(f"{path}: backend {backend!r} is not available here ({', '.join(sorted(BACKENDS))}); "
                         "install its extra")
    return BACKENDS[backend]


def save_model(model: FittedModel, directory: str | Path) -> Path:
    """Write ``model`` to ``directory`` (replaced if it exists); returns the directory."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model._save_files(tmp)
    (tmp / MANIFEST).write_text(json.dumps(model.manifest(), indent=2, default=_json_default))
    # Swap in whole, so a reader never sees half a model.
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_model(directory: str | Path) -> FittedModel:
    """The model saved in ``directory`` (or in ``directory/best_model`` for a sweep's run directory)."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file() and (directory / "best_model" / MANIFEST).is_file():
        directory = directory / "best_model"
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelError(f"{str(directory)!r} holds no saved model ({MANIFEST} missing); pass a directory written by save_model or a run directory with best_model/")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc}); the model directory is damaged, save it again") from None
    if manifest.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path}: model format {manifest.get('format')!r}, this rungflow reads {MODEL_FORMAT}; re-save the model")
    return _backend(manifest.get("backend"), manifest.get("family"), path)._load(directory, manifest)


def fit_model(trainable_kind: str, options: Mapping[str, Any], config: Mapping[str, Any], budget: float,
              dataset: Dataset | None = None, *, device: str = "cpu", seed: int = 0) -> FittedModel:
    """Train one configuration of ``trainable_kind`` from scratch at ``budget`` on ``dataset``.

    ``dataset`` defaults to the one ``options["data"]`` names. The model's ``metrics`` are its
    validation metrics on ``dataset``.
    """
    from rungflow.tasks.trainables import get_trainable_class

    cls = get_trainable_class(trainable_kind)
    trainable = cls(dict(options))
    # Every tabular family has fit(); asked by duck type so this module needs no trainable's class.
    if not hasattr(trainable, "fit"):
        raise ModelError(f"trainable {trainable_kind!r} does not produce a model; use a tabular family")
    if dataset is None:
        dataset = trainable.dataset()  # type: ignore[attr-defined]
    return trainable.fit(dict(config), float(budget), dataset, device=device, seed=seed)  # type: ignore[attr-defined]

