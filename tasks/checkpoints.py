"""Checkpoint stores: bytes per (trial, rung), written atomically and verified by checksum on load.

A train task saves what the trainable returned and the next rung's task loads it, so a promoted
trial resumes where it stopped. A corrupt or missing checkpoint is reported (None plus a warning
from the caller), never a crash: the trial then restarts from scratch.

Two stores: a local directory (the default) and S3 (``s3://bucket/prefix``, see :mod:`tasks.s3`),
chosen by :func:`open_store` from the location string, so a Ray worker needs only that string.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CheckpointStore", "LocalCheckpointStore", "S3CheckpointStore", "CorruptCheckpoint", "open_store",
           "copy_checkpoint", "save_validation_predictions", "load_validation_predictions"]


class CorruptCheckpoint(RuntimeError):
    """The stored bytes do not match their checksum."""


class CheckpointStore(Protocol):
    def save(self, trial_id: str, rung: int, data: bytes) -> str: ...

    def load(self, trial_id: str, rung: int) -> bytes | None: ...


def copy_checkpoint(store: CheckpointStore, source: tuple[str, int], target: tuple[str, int]) -> bool:
    """Copy the checkpoint at ``source`` (trial, rung) to ``target`` in ``store``: a clone's starting point.

    Verified on both sides: the source must match its checksum (else :class:`CorruptCheckpoint`), and the
    copy is written atomically with its own and read back. False when the source does not exist.
    """
    data = store.load(*source)
    if data is None:
        return False
    store.save(target[0], target[1], data)
    if store.load(*target) != data:
        raise CorruptCheckpoint(f"the copy of {source[0]}'s rung-{source[1]} checkpoint for {target[0]} "
                                "does not read back as written")
    return True


def _predictions_key(trial_id: str) -> str:
    # Beside the trial's checkpoints (root/<trial>/validation/rung-k.ckpt), under the same checksum and atomicity.
    return f"{trial_id}/validation"


def save_validation_predictions(store: CheckpointStore, trial_id: str, rung: int, predictions: Any) -> None:
    """What the trial's model predicted on the validation rows at ``rung``, for the ensemble built after the sweep."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(predictions, dtype=np.float64), allow_pickle=False)
    store.save(_predictions_key(trial_id), rung, buffer.getvalue())


def load_validation_predictions(store: CheckpointStore, trial_id: str, rung: int) -> Any:
    """The array :func:`save_validation_predictions` kept, or None where the trial kept none."""
    import io

    import numpy as np

    data = store.load(_predictions_key(trial_id), rung)
    return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalCheckpointStore:
    """``root/<trial_id>/rung-<k>.ckpt`` plus a ``.sha256`` sidecar, each written via temp file + rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, trial_id: str, rung: int) -> Path:
        return self.root / trial_id / f"rung-{rung}.ckpt"

    _atomic_write = staticmethod(lambda path, data: atomic_write(path, data))

    def save(self, trial_id: str, rung: int, data: bytes) -> str:
        path = self._path(trial_id, rung)
        # Checksum first: a reader that finds the data without a matching sidecar treats it as corrupt.
        self._atomic_write(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
        self._atomic_write(path, data)
        return str(path)

    def load(self, trial_id: str, rung: int) -> bytes | None:
        path = self._path(trial_id, rung)
        if not path.exists():
            return None
        data = path.read_bytes()
        sidecar = path.with_suffix(".sha256")
        expected = sidecar.read_text().strip() if sidecar.exists() else None
        if expected != hashlib.sha256(data).hexdigest():
            raise CorruptCheckpoint(f"checkpoint {path} does not match its checksum")
        return data


class S3CheckpointStore:
    """``s3://bucket/prefix/<trial_id>/rung-<k>.ckpt``, one PUT per checkpoint with its SHA-256 in the metadata.

    A PUT is all-or-nothing, so a reader sees the previous checkpoint or the new one; the checksum
    travels with the object and is verified on every load. An unreachable endpoint is retried with
    backoff (:class:`tasks.s3.S3Store`) and then raises :class:`tasks.s3.S3Unavailable`.
    """

    def __init__(self, location: str) -> None:
        from rungflow.tasks.s3 import S3Store

        self.store = S3Store.from_url(location)
        self.root = location

    def _name(self, trial_id: str, rung: int) -> str:
        return f"{trial_id}/rung-{rung}.ckpt"

    def save(self, trial_id: str, rung: int, data: bytes) -> str:
        name = self._name(trial_id, rung)
        self.store.put(name, data, metadata={"sha256": hashlib.sha256(data).hexdigest()})
        return f"s3://{self.store.settings.bucket}/{self.store.key(name)}"

    def load(self, trial_id: str, rung: int) -> bytes | None:
        from rungflow.tasks.s3 import S3NotFound

        name = self._name(trial_id, rung)
        try:
            data, metadata = self.store.get(name)
        except S3NotFound:
            return None
        if metadata.get("sha256") != hashlib.sha256(data).hexdigest():
            raise CorruptCheckpoint(f"checkpoint {self.store.where(name)} does not match its checksum")
        return data


def open_store(location: str | Path) -> CheckpointStore:
    """The store at ``location``: ``s3://bucket/prefix[?endpoint_url=...]`` or a local directory."""
    if str(location).startswith("s3://"):
        return S3CheckpointStore(str(location))
    return LocalCheckpointStore(location)
