"""Checkpoint stores: bytes per (trial, rung), written atomically and verified by checksum on load.

A train task saves what the trainable returned and the next rung's task loads it, so a promoted
trial resumes where it stopped. A corrupt or missing checkpoint is reported (None plus a warning
from the caller), never a crash: the trial then restarts from scratch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = ["CheckpointStore", "LocalCheckpointStore", "CorruptCheckpoint", "open_store"]


class CorruptCheckpoint(RuntimeError):
    """The stored bytes do not match their checksum."""


class CheckpointStore(Protocol):
    def save(self, trial_id: str, rung: int, data: bytes) -> str: ...

    def load(self, trial_id: str, rung: int) -> bytes | None: ...


class LocalCheckpointStore:
    """``root/<trial_id>/rung-<k>.ckpt`` plus a ``.sha256`` sidecar, each written via temp file + rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, trial_id: str, rung: int) -> Path:
        return self.root / trial_id / f"rung-{rung}.ckpt"

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
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


def open_store(location: str) -> CheckpointStore:
    """The store at ``location``: a local directory (S3 URLs are handled by the S3 store when configured)."""
    if location.startswith("s3://"):
        raise ValueError("storage: s3:// checkpoint stores are not configured in this build; use a local directory")
    return LocalCheckpointStore(location)
