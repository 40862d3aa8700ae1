"""Tabular data in: a table from a bundled scikit-learn dataset, a local CSV/Parquet file or S3, split once.

Every tabular trainable reads its data through :func:`load_dataset`, so all families of a sweep see
the same encoded features and the same seeded validation split, and a saved model knows how to
encode new rows (:meth:`Dataset.encode`). Errors are :class:`DataError`: one line naming the
``data.*`` field and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["DataSpec", "DataError", "Dataset", "read_table", "load_dataset", "BUNDLED", "SKLEARN_LABEL"]

# Datasets shipped inside the scikit-learn wheel (no download); california_housing is fetched from
# the internet on first use, so it is not offered.
BUNDLED: dict[str, str] = {
    "breast_cancer": "load_breast_cancer",
    "wine": "load_wine",
    "iris": "load_iris",
    "digits": "load_digits",
    "diabetes": "load_diabetes",
}
SKLEARN_LABEL = "target"
_SUFFIXES = (".csv", ".parquet", ".pq")
# An integer or integral-float label with at most this many distinct values is read as classes.
_MAX_CLASSES_INFERRED = 20

Task = Literal["classification", "regression"]


class DataError(ValueError):
    """Data that cannot be used; ``str()`` is one line naming the ``data.*`` field and the fix."""


class DataSpec(BaseModel):
    """Where a table comes from, which column is the label, and how it is split.

    ``source``: ``sklearn:NAME`` (one of :data:`BUNDLED`), a local ``.csv``/``.parquet`` path, or
    ``s3://bucket/key.csv|.parquet`` (endpoint from ``$AWS_ENDPOINT_URL``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    label: str | None = None
    task: Task | None = None
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0
    drop: tuple[str, ...] = Field(default=(), description="columns left out of the features (identifiers, free text)")

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.label is not None and self.label in self.drop:
            raise ValueError(f"data.drop names the label {self.label!r}; remove it from data.drop")
        src = self.source.strip()
        if not src:
            raise ValueError("data.source is empty; give sklearn:breast_cancer, a .csv/.parquet path or s3://bucket/key.csv")
        if src.startswith("sklearn:"):
            name = src.removeprefix("sklearn:")
            if name not in BUNDLED:
                raise ValueError(f"data.source = {src!r}: unknown bundled dataset; use one of " + ", ".join(f"sklearn:{n}" for n in BUNDLED))
            if self.label not in (None, SKLEARN_LABEL):
                raise ValueError(f"data.label = {self.label!r}: bundled datasets have their label in {SKLEARN_LABEL!r}; leave data.label out")
            return self
        if not src.lower().endswith(_SUFFIXES):
            raise ValueError(f"data.source = {src!r}: unknown format; use a .csv or .parquet file (local or s3://)")
        if src.startswith("s3://") and len(src.removeprefix("s3://").split("/", 1)) != 2:
            raise ValueError(f"data.source = {src!r}: an S3 source needs a bucket and a key, e.g. s3://bucket/train.csv")
        if not self.label:
            raise ValueError(f"data.label is required for {src!r}; name the column to predict, e.g. label: target")
        return self

    @property
    def label_column(self) -> str:
        return self.label or SKLEARN_LABEL

    @classmethod
    def parse(cls, data: Any) -> DataSpec:
        """A spec from a mapping (or a spec), with pydantic errors turned into one-line :class:`DataError`."""
        if isinstance(data, DataSpec):
            return data
        if not isinstance(data, Mapping):
            raise DataError(f"data: expected a mapping like {{source: sklearn:breast_cancer}}, got {data!r}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise DataError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; allowed: source, label, task, validation_fraction, seed, drop"
        elif err["type"] == "missing":
            msg = "is required"
        parts.append(f"data.{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# --- reading -----------------------------------------------------------------------------------


def _s3_client():
    import boto3

    # boto3 reads AWS_ENDPOINT_URL itself from 1.28 on; passing it keeps older clients pointed the same way.
    # A fresh session, not boto3's default one: that caches the first credentials it resolved for the
    # life of the process, so rotated keys in the environment would never be seen.
    return boto3.session.Session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _split_s3(source: str) -> tuple[str, str]:
    bucket, key = source.removeprefix("s3://").split("/", 1)
    return bucket, key


def _read_bytes_s3(source: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(source)
    try:
        return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise DataError(f"data.source = {source!r}: no such object in bucket {bucket!r}; check the key") from None
        if code in ("NoSuchBucket",):
            raise DataError(f"data.source = {source!r}: bucket {bucket!r} does not exist; check the bucket name") from None
        raise DataError(f"data.source = {source!r}: S3 refused the read ({code or exc}); check credentials and $AWS_ENDPOINT_URL") from None
    except BotoCoreError as exc:
        raise DataError(f"data.source = {source!r}: cannot reach S3 ({exc}); set $AWS_ENDPOINT_URL and credentials") from None


def read_table(source: str) -> pd.DataFrame:
    """The table at ``source`` as a DataFrame (bundled datasets get their label as column ``target``)."""
    if source.startswith("sklearn:"):
        name = source.removeprefix("sklearn:")
        if name not in BUNDLED:
            raise DataError(f"data.source = {source!r}: unknown bundled dataset; use one of " + ", ".join(f"sklearn:{n}" for n in BUNDLED))
        from sklearn import datasets

        bunch = getattr(datasets, BUNDLED[name])(as_frame=True)
        frame = bunch.frame.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame
    lower = source.lower()
    if not lower.endswith(_SUFFIXES):
        raise DataError(f"data.source = {source!r}: unknown format; use a .csv or .parquet file (local or s3://)")
    if source.startswith("s3://"):
        handle: Any = io.BytesIO(_read_bytes_s3(source))
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"data.source = {source!r}: file does not exist; check the path (relative paths start at {os.getcwd()})")
        handle = path
    try:
        if lower.endswith(".csv"):
            frame = pd.read_csv(handle)
        else:
            frame = pd.read_parquet(handle)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.source = {source!r}: the file is empty; give a table with a header row and data rows") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "parse error"
        raise DataError(f"data.source = {source!r}: malformed CSV ({detail}); fix the rows or export the table again") from None
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "CSV" if lower.endswith(".csv") else "Parquet"
        raise DataError(f"data.source = {source!r}: not a readable {kind} file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check the file") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _source_stamp(source: str) -> str:
    """What changes when the data behind ``source`` changes: the cache key part that is not the spec."""
    if source.startswith("sklearn:"):
        return "bundled"
    if source.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = _split_s3(source)
        try:
            head = _s3_client().head_object(Bucket=bucket, Key=key)
            return f"{head.get('ETag')}:{head.get('ContentLength')}"
        except (ClientError, BotoCoreError):
            return "unreadable"  # read_table raises the precise error
    try:
        st = Path(source).expanduser().stat()
        return f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return "missing"


# --- the dataset ---------------------------------------------------------------------------------


# eq=False: hashed by identity, so per-dataset caches (lru_cache) key on the cached instance.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Encoded features and label, split once; read-only arrays shared by every trial in the process.

    ``X_*`` are float64 with NaN for missing values; categorical columns are ordinal codes in
    ``categories[column]`` order. Classification labels are indices into ``classes``; regression
    labels are floats. ``fingerprint`` is the sha256 of the table content and the label name.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    feature_names: tuple[str, ...]
    task: Task
    classes: tuple[Any, ...] | None
    fingerprint: str
    schema: Mapping[str, str]
    label: str
    categories: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    source: str = ""
    dropped: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    def encoding(self) -> dict[str, Any]:
        """What a saved model needs to encode new rows the same way (JSON-safe)."""
        return {
            "feature_names": list(self.feature_names),
            "categories": {k: [_json_value(v) for v in vals] for k, vals in self.categories.items()},
            "task": self.task,
            "classes": None if self.classes is None else [_json_value(c) for c in self.classes],
            "label": self.label,
            "fingerprint": self.fingerprint,
            "dropped": list(self.dropped),
        }

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        return encode_frame(frame, list(self.feature_names), self.categories)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Train and validation tables with the label column, categorical columns restored as strings (for AutoML libraries)."""
        def build(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
            frame = pd.DataFrame(x, columns=list(self.feature_names))
            for col, cats in self.categories.items():
                codes = frame[col]
                frame[col] = pd.Categorical.from_codes(np.where(np.isnan(codes), -1, codes).astype(int), categories=[str(c) for c in cats])
            frame[self.label] = y if self.task == "regression" else y.astype(int)
            return frame

        return build(self.X_train, self.y_train), build(self.X_valid, self.y_valid)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_frame(frame: pd.DataFrame, feature_names: list[str], categories: Mapping[str, Any]) -> np.ndarray:
    """Features of ``frame`` encoded as at training time: unknown categories and missing values become NaN."""
    missing = [c for c in feature_names if c not in frame.columns]
    if missing:
        raise DataError(f"input is missing feature columns {missing[:5]}{'...' if len(missing) > 5 else ''}; pass the columns the model was trained on")
    out = np.empty((len(frame), len(feature_names)), dtype=np.float64)
    for j, col in enumerate(feature_names):
        values = frame[col]
        if col in categories:
            lookup = {str(c): i for i, c in enumerate(categories[col])}
            out[:, j] = [lookup.get(str(v), np.nan) if not _isna(v) else np.nan for v in values]
        else:
            out[:, j] = pd.to_numeric(values, errors="coerce").astype(np.float64).to_numpy()
    return out


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# A level seen fewer times than this in the training rows is encoded as missing, as an unseen one is at predict
# time (AutoGluon's minimum_cat_count is the same 2). Otherwise no training row is ever missing there, the trees'
# missing branch is never fitted, and a new city or zip code lands wherever it happens to point: on a housing table
# the 5 % of test rows with a new city were mispriced by 194k against 45k for the rest.
MIN_LEVEL_ROWS = 2


def common_levels(column: pd.Series) -> tuple[str, ...]:
    """The levels of a categorical column seen at least :data:`MIN_LEVEL_ROWS` times, sorted; the rest read as missing."""
    counts = column.dropna().astype(str).value_counts()
    return tuple(sorted(str(v) for v, n in counts.items() if n >= MIN_LEVEL_ROWS))


def _is_categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)) or isinstance(series.dtype, pd.CategoricalDtype)


def infer_task(y: pd.Series) -> Task:
    """Classification for non-numeric labels, booleans and numbers with few distinct whole values; else regression."""
    if _is_categorical(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    distinct = y.dropna().unique()
    whole = bool(np.all(np.asarray(distinct, dtype=np.float64) == np.round(np.asarray(distinct, dtype=np.float64))))
    return "classification" if whole and len(distinct) <= _MAX_CLASSES_INFERRED else "regression"


def fingerprint(frame: pd.DataFrame, label: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"label": label, "columns": [[str(c), str(t)] for c, t in frame.dtypes.items()]}).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _build(spec: DataSpec) -> Dataset:
    from sklearn.model_selection import train_test_split

    frame = read_table(spec.source)
    label = spec.label_column
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError(f"data.source = {spec.source!r}: the table is empty ({len(frame)} rows, {frame.shape[1]} columns); give a table with data rows")
    if label not in frame.columns:
        cols = list(frame.columns)
        raise DataError(f"data.label = {label!r}: no such column in {spec.source!r}; columns are {cols[:12]}{'...' if len(cols) > 12 else ''}")
    digest = fingerprint(frame, label)
    schema = {str(c): str(t) for c, t in frame.dtypes.items()}
    frame = frame[frame[label].notna()].reset_index(drop=True)
    dropped = tuple(c for c in spec.drop if c in frame.columns)
    features = [c for c in frame.columns if c != label and c not in dropped]
    if not features:
        raise DataError(f"data.source = {spec.source!r}: only the label column {label!r}; the table needs feature columns too")
    if len(frame) < 4:
        raise DataError(f"data.source = {spec.source!r}: only {len(frame)} rows with a label; need at least 4 to train and validate")
    task: Task = spec.task or infer_task(frame[label])
    classes: tuple[Any, ...] | None
    if task == "classification":
        raw = frame[label]
        uniques = sorted(raw.unique(), key=lambda v: (str(type(v)), v))
        if len(uniques) < 2:
            raise DataError(f"data.label = {label!r}: only one class ({uniques[0]!r}); classification needs two or more, or set data.task: regression")
        classes = tuple(_json_value(u) for u in uniques)
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[_json_value(v)] for v in raw], dtype=np.int64)
        stratify = y
    else:
        try:
            y = pd.to_numeric(frame[label]).astype(np.float64).to_numpy()
        except (TypeError, ValueError):
            raise DataError(f"data.task = regression but label {label!r} is not numeric; set data.task: classification") from None
        classes, stratify = None, None
    try:
        # Split row indices (the same split as splitting the arrays), so the categories can be read off the training rows.
        train_rows, valid_rows = train_test_split(np.arange(len(frame)), test_size=spec.validation_fraction,
                                                  stratify=stratify, random_state=spec.seed)
    except ValueError as exc:
        raise DataError(
            f"data.validation_fraction = {spec.validation_fraction}: cannot split {len(frame)} rows"
            f"{' stratified by class' if stratify is not None else ''} ({exc}); change the fraction or add rows"
        ) from None
    categories = {col: common_levels(frame[col].iloc[train_rows]) for col in features if _is_categorical(frame[col])}
    x = encode_frame(frame, features, categories)
    x_tr, x_va, y_tr, y_va = x[train_rows], x[valid_rows], y[train_rows], y[valid_rows]
    for arr in (x_tr, x_va, y_tr, y_va):
        arr.setflags(write=False)
    return Dataset(
        X_train=x_tr, y_train=y_tr, X_valid=x_va, y_valid=y_va,
        feature_names=tuple(features), task=task, classes=classes, fingerprint=digest, schema=schema,
        label=label, categories=categories, source=spec.source, dropped=dropped,
    )


@functools.lru_cache(maxsize=8)
def _cached(spec_json: str, stamp: str) -> Dataset:
    return _build(DataSpec.model_validate_json(spec_json))


def load_dataset(spec: DataSpec | Mapping[str, Any]) -> Dataset:
    """The split dataset for ``spec``, cached per process and re-read when the file behind it changes."""
    spec = DataSpec.parse(spec)
    return _cached(spec.model_dump_json(), _source_stamp(spec.source))
