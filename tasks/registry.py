"""The model registry: versioned model artifacts and an atomically switched ``production`` pointer.

Layout under the registry's root (a local directory, the default, or ``s3://bucket/prefix``)::

    models/<name>/v0001/files/...        what tasks.models.save_model wrote (model.json, weights, ...)
    models/<name>/v0001/version.json     files with SHA-256 and size, config, metrics, cost, data fingerprint, created_at
    models/<name>/production.json        {"version": "v0001", "version_sha256": ...}: the pointer
    models/<name>/runs/<run_id>.json     what each retrain run spent, found and decided
    models/<name>/studies/<run_id>.json  the run's observations, the next run's warm start

A version's files go first and its ``version.json`` last, so a listed version is complete; the
pointer is one small object written last (S3: a single PUT, atomic; local: temp file +
``os.replace``), so a failure at any step leaves the old pointer in force. Every artifact's
checksum is verified on load, and a mismatch is refused with :class:`CorruptArtifact`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rungflow.tasks.checkpoints import atomic_write

__all__ = ["ModelRegistry", "RegistryError", "CorruptArtifact", "load_model", "default_registry"]

_VERSION = re.compile(r"^v(\d{4,})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(RuntimeError):
    """A registry operation that cannot succeed; ``str()`` is one line naming the model and the fix."""


class CorruptArtifact(RegistryError):
    """A stored artifact whose bytes do not match the checksum recorded for it."""


class _Backend(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def list(self, prefix: str) -> list[str]: ...

    def describe(self, name: str) -> str: ...


class _LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, data: bytes) -> None:
        atomic_write(self.root / name, data)  # readers see the old file or the new one

    def get(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))

    def describe(self, name: str) -> str:
        return str(self.root / name)


class _S3Backend:
    def __init__(self, location: str) -> None:
        from rungflow.tasks.s3 import S3Store

        self.store = S3Store.from_url(location)
        self._bucket_checked = False

    def put(self, name: str, data: bytes) -> None:
        if not self._bucket_checked:
            self.store.ensure_bucket()
            self._bucket_checked = True
        self.store.put(name, data)

    def get(self, name: str) -> bytes | None:
        from rungflow.tasks.s3 import S3NotFound

        try:
            return self.store.get(name)[0]
        except S3NotFound:
            return None

    def list(self, prefix: str) -> list[str]:
        from rungflow.tasks.s3 import S3NotFound

        try:
            return self.store.list(prefix)
        except S3NotFound:  # no bucket yet: an empty registry
            return []

    def describe(self, name: str) -> str:
        return self.store.where(name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:
        pass
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def default_registry() -> str:
    """``$RUNGFLOW_REGISTRY`` or ``./registry``."""
    return os.environ.get("RUNGFLOW_REGISTRY") or "registry"


@dataclass
class ModelRegistry:
    """Versioned models under ``location``: a directory or ``s3://bucket/prefix[?endpoint_url=...]``.

    One writer per model name at a time (a weekly retrain is one flow run); readers may run any time.
    """

    location: str

    def __post_init__(self) -> None:
        self.location = str(self.location)
        self._backend: _Backend = (_S3Backend(self.location) if self.location.startswith("s3://")
                                   else _LocalBackend(Path(self.location).expanduser().resolve()))

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    # --- names ------------------------------------------------------------------------------------
    @staticmethod
    def _check_name(name: str) -> str:
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (e.g. churn-weekly)")
        return name

    def _base(self, name: str) -> str:
        return f"models/{self._check_name(name)}"

    # --- versions ---------------------------------------------------------------------------------
    def versions(self, name: str) -> list[str]:
        """Complete versions (their version.json exists), oldest first."""
        found = set()
        for key in self._backend.list(self._base(name)):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == "version.json" and _VERSION.match(parts[2]):
                found.add(parts[2])
        return sorted(found, key=lambda v: int(v[1:]))

    def register(self, name: str, model_dir: str | Path, *, config: Mapping[str, Any], metrics: Mapping[str, Any],
                 cost: Mapping[str, Any], data_fingerprint: str, extra: Mapping[str, Any] | None = None) -> str:
        """Store ``model_dir`` (what ``save_model`` wrote) as the next version; returns e.g. ``"v0003"``.

        Not promoted: call :meth:`promote` for that.
        """
        model_dir = Path(model_dir)
        files = sorted(p for p in model_dir.rglob("*") if p.is_file())
        if not files:
            raise RegistryError(f"register {name}: {model_dir} holds no files; pass the directory save_model wrote")
        existing = self.versions(name)
        version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
        base = f"{self._base(name)}/{version}"
        listing = {}
        for path in files:
            rel = path.relative_to(model_dir).as_posix()
            data = path.read_bytes()
            self._backend.put(f"{base}/files/{rel}", data)
            listing[rel] = {"sha256": _sha256(data), "bytes": len(data)}
        manifest = {
            "name": name, "version": version, "created_at": time.time(), "files": listing,
            "config": dict(config), "metrics": dict(metrics), "cost": dict(cost), "data_fingerprint": data_fingerprint,
            **({"extra": dict(extra)} if extra else {}),
        }
        # Last: a version without version.json is invisible, so a crash mid-upload leaves no half version.
        self._backend.put(f"{base}/version.json", _json_bytes(manifest))
        return version

    def version_info(self, name: str, version: str = "production") -> dict[str, Any]:
        """The version's manifest (``version.json``), checked against the pointer when read through it."""
        version, expected = self._resolve(name, version)
        raw = self._backend.get(f"{self._base(name)}/{version}/version.json")
        if raw is None:
            raise RegistryError(f"model {name} {version} does not exist in {self.location_safe}; versions: "
                                f"{', '.join(self.versions(name)) or 'none'}")
        if expected is not None and _sha256(raw) != expected:
            raise CorruptArtifact(f"model {name} {version}: version.json does not match the checksum in production.json; "
                                  "the registry was modified outside rungflow: promote a known-good version again")
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise CorruptArtifact(f"model {name} {version}: version.json is not valid JSON; promote another version") from None

    @property
    def location_safe(self) -> str:
        """The location without its query (no settings noise in messages)."""
        return self.location.split("?", 1)[0]

    # --- the production pointer -------------------------------------------------------------------
    def production(self, name: str) -> str | None:
        pointer = self._pointer(name)
        return None if pointer is None else pointer["version"]

    def _pointer(self, name: str) -> dict[str, Any] | None:
        raw = self._backend.get(f"{self._base(name)}/production.json")
        if raw is None:
            return None
        try:
            pointer = json.loads(raw)
            assert _VERSION.match(pointer["version"])
            return pointer
        except Exception:
            raise CorruptArtifact(f"model {name}: production.json is unreadable; promote a version again "
                                  f"(registry.promote({name!r}, VERSION))") from None

    def _resolve(self, name: str, version: str) -> tuple[str, str | None]:
        if version != "production":
            if not _VERSION.match(version):
                raise RegistryError(f"version {version!r}: use 'production' or a version like v0001")
            return version, None
        pointer = self._pointer(name)
        if pointer is None:
            raise RegistryError(f"model {name} has no production version in {self.location_safe}; promote one first")
        return pointer["version"], pointer.get("version_sha256")

    def promote(self, name: str, version: str, *, reason: str = "") -> None:
        """Point ``production`` at ``version``: one small object replaced in one atomic write."""
        raw = self._backend.get(f"{self._base(name)}/{version}/version.json")
        if raw is None:
            raise RegistryError(f"promote {name} {version}: no such complete version; versions: {', '.join(self.versions(name)) or 'none'}")
        pointer = {"version": version, "version_sha256": _sha256(raw), "promoted_at": time.time(), "reason": reason}
        self._backend.put(f"{self._base(name)}/production.json", _json_bytes(pointer))

    # --- loading ----------------------------------------------------------------------------------
    def fetch(self, name: str, version: str = "production", dest: str | Path | None = None) -> Path:
        """A local directory holding the version's files, every checksum verified."""
        info = self.version_info(name, version)
        version = info["version"]
        base = f"{self._base(name)}/{version}/files"
        dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix=f"rungflow-{name}-{version}-"))
        for rel, meta in info["files"].items():
            data = self._backend.get(f"{base}/{rel}")
            if data is None:
                raise CorruptArtifact(f"model {name} {version}: artifact {rel} is missing from {self._backend.describe(base)}; "
                                      "the version is incomplete: promote another version")
            if _sha256(data) != meta["sha256"]:
                raise CorruptArtifact(f"model {name} {version}: artifact {rel} does not match its SHA-256 "
                                      f"(expected {meta['sha256'][:12]}..., got {_sha256(data)[:12]}...); refusing to load "
                                      "a corrupt model: promote another version or register it again")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return dest

    def load_model(self, name: str, version: str = "production") -> Any:
        """The :class:`tasks.models.FittedModel` of ``name`` at ``version`` (default: production)."""
        from rungflow.tasks.models import load_model as load_model_dir

        return load_model_dir(self.fetch(name, version))

    # --- run records and studies ------------------------------------------------------------------
    def put_json(self, name: str, kind: str, key: str, data: Mapping[str, Any]) -> str:
        """Write ``models/<name>/<kind>/<key>.json`` (kind: runs or studies); returns where."""
        path = f"{self._base(name)}/{kind}/{key}.json"
        self._backend.put(path, _json_bytes(data))
        return self._backend.describe(path)

    def get_json(self, name: str, kind: str, key: str) -> dict[str, Any] | None:
        raw = self._backend.get(f"{self._base(name)}/{kind}/{key}.json")
        return None if raw is None else json.loads(raw)

    def keys(self, name: str, kind: str) -> list[str]:
        """Keys under ``kind`` in order (run ids sort by time)."""
        prefix = f"{self._base(name)}/{kind}"
        return [k.rsplit("/", 1)[1].removesuffix(".json") for k in self._backend.list(prefix) if k.endswith(".json")]


def load_model(name: str, version: str = "production", *, registry: str | None = None) -> Any:
    """One call: the model ``name`` at ``version`` from ``registry`` (default ``$RUNGFLOW_REGISTRY`` or ./registry)."""
    return ModelRegistry(registry or default_registry()).load_model(name, version)
