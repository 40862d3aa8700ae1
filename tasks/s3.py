"""S3 access for checkpoints, the model registry and data: one boto3 client per store, retried.

Where to connect comes from an ``s3://bucket/prefix`` URL whose query may carry the client settings
(``?endpoint_url=http://127.0.0.1:8333&connect_timeout=2``), so a URL alone is enough for a Ray
worker to reach the store; nothing secret is ever in it. Credentials come from the standard AWS chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles), or, where the URL
names one (``?block=NAME``), from a prefect-aws ``AwsCredentials`` or ``S3Bucket`` block that each
process reads from the Prefect API itself (:mod:`tasks.prefect_blocks`). They are never read from
config files and never written to logs, artifacts or error messages.

Faults: botocore's standard retry mode rides out a blip (connection errors, timeouts, 5xx,
throttling, each with exponential backoff and jitter); :func:`S3Store.call` then keeps backing off
(``backoff_seconds`` doubling up to ``max_backoff_seconds``) until ``outage_seconds`` have passed,
so a store that is down for a while delays the sweep instead of failing it. After that it raises
:class:`S3Unavailable`, one line naming the endpoint, the bucket and what to check.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["S3Settings", "S3Store", "S3Error", "S3Unavailable", "S3NotFound", "parse_s3_url", "is_s3_url"]

log = logging.getLogger("rungflow.s3")

T = TypeVar("T")


class S3Error(RuntimeError):
    """An S3 operation that cannot succeed; ``str()`` is one line naming the endpoint and the fix."""


class S3Unavailable(S3Error):
    """The endpoint did not answer (or kept answering 5xx) for longer than ``outage_seconds``."""


class S3NotFound(S3Error):
    """The object does not exist."""


# Options a URL query or a config section may set; anything else is rejected by name.
_FLOAT_OPTIONS = ("connect_timeout", "read_timeout", "outage_seconds", "backoff_seconds", "max_backoff_seconds")
_INT_OPTIONS = ("max_attempts",)
_STR_OPTIONS = ("endpoint_url", "region", "block")


@dataclass(frozen=True)
class S3Settings:
    """Where the store is and how patiently to talk to it (no credentials: see the module docstring)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    outage_seconds: float = 300.0
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 20.0
    block: str | None = None  # a Prefect block's name: credentials from it instead of the AWS chain
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def endpoint(self) -> str:
        """The endpoint as shown in errors: the configured URL or the AWS default."""
        return (self.endpoint_url or (self.block and _block_credentials(self.block).endpoint_url)
                or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3 (default endpoint)")

    @property
    def credentials_source(self) -> str:
        """Where the credentials come from, as errors name it."""
        return f"Prefect block {self.block!r}" if self.block else "the AWS credentials in the environment or profile"

    def url(self, key: str = "") -> str:
        """``s3://bucket/prefix[/key]`` with the non-default client settings as the query."""
        path = "/".join(p for p in (self.prefix.strip("/"), key.strip("/")) if p)
        defaults = S3Settings(bucket=self.bucket)
        query = {name: getattr(self, name) for name in (*_STR_OPTIONS, *_FLOAT_OPTIONS, *_INT_OPTIONS)
                 if getattr(self, name) is not None and getattr(self, name) != getattr(defaults, name)}
        return f"s3://{self.bucket}/{path}" + (f"?{urlencode(query)}" if query else "")

    def child(self, key: str) -> S3Settings:
        """The same store one level down: ``prefix/key``."""
        return replace(self, prefix="/".join(p for p in (self.prefix.strip("/"), key.strip("/")) if p))


def is_s3_url(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith("s3://")


def parse_s3_url(url: str, **overrides: Any) -> S3Settings:
    """Settings from ``s3://bucket/prefix?option=value``; keyword ``overrides`` (not None) win over the query."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise S3Error(f"{url!r} is not an S3 URL; use s3://BUCKET/PREFIX")
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        try:
            if name in _FLOAT_OPTIONS:
                options[name] = float(value)
            elif name in _INT_OPTIONS:
                options[name] = int(value)
            elif name in _STR_OPTIONS:
                options[name] = value
            else:
                allowed = ", ".join((*_STR_OPTIONS, *_FLOAT_OPTIONS, *_INT_OPTIONS))
                raise S3Error(f"S3 URL option {name!r} is unknown; use one of {allowed} (credentials never go in URLs)")
        except ValueError:
            raise S3Error(f"S3 URL option {name}={value!r} is not a number") from None
    options.update({k: v for k, v in overrides.items() if v is not None})
    return S3Settings(bucket=parts.netloc, prefix=parts.path.strip("/"), **options)


# One botocore session per process: sessions are not thread-safe, clients are, and building a
# client from a shared session reuses the loaded service model (a fresh session costs ~100 ms).
_session_lock = threading.Lock()
_session: Any = None
_profile_sessions: dict[str, Any] = {}


def _block_credentials(name: str) -> Any:
    from rungflow.tasks.prefect_blocks import BlockError, s3_credentials

    try:
        return s3_credentials(name)
    except BlockError as exc:
        raise S3Error(f"S3 credentials block {name!r} (storage.s3.block, or ?block= in the URL): {exc}") from None


def _make_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    global _session
    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"mode": "standard", "total_max_attempts": max(1, settings.max_attempts)},
        s3={"addressing_style": "path"},  # S3-compatible servers rarely serve virtual-host buckets
        signature_version="s3v4",
    )
    endpoint_url, region, keys = settings.endpoint_url, settings.region, {}
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        session = _session
    if settings.block:
        creds = _block_credentials(settings.block)
        # What the URL (the config) sets wins over the block's client parameters, as it does over the environment.
        endpoint_url, region = endpoint_url or creds.endpoint_url, region or creds.region
        if creds.access_key_id:
            keys = {"aws_access_key_id": creds.access_key_id, "aws_secret_access_key": creds.secret_access_key,
                    "aws_session_token": creds.session_token}
        elif creds.profile_name:
            with _session_lock:
                session = _profile_sessions.setdefault(creds.profile_name, boto3.session.Session(profile_name=creds.profile_name))
    with _session_lock:
        return session.client("s3", endpoint_url=endpoint_url, region_name=region or session.region_name or "us-east-1",
                              config=config, **keys)


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "Throttling", "ThrottlingException")
    return False


def _is_not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NotFound", "404")


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    # botocore's connection errors name the URL and the cause, never credentials.
    return f"{type(exc).__name__}: {exc}"


class S3Store:
    """Bytes under ``s3://bucket/prefix``: put (one whole object), get, list, delete, each retried."""

    def __init__(self, settings: S3Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> S3Store:
        return cls(parse_s3_url(url, **overrides))

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _make_client(self.settings)
        return self._client

    def key(self, name: str) -> str:
        return "/".join(p for p in (self.settings.prefix.strip("/"), name.strip("/")) if p)

    def where(self, name: str = "") -> str:
        return f"s3://{self.settings.bucket}/{self.key(name)} at {self.settings.endpoint}"

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` retried through an outage of up to ``outage_seconds``; ``what`` names it in errors."""
        s = self.settings
        started = time.monotonic()
        delay = s.backoff_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                if _is_not_found(exc):
                    raise S3NotFound(f"{what}: not found ({self.where()})") from None
                if not _is_transient(exc):
                    raise S3Error(f"{what} failed at {s.endpoint} (bucket {s.bucket!r}): {_describe(exc)}; check the "
                                  f"bucket exists and {s.credentials_source} may use it") from None
                waited = time.monotonic() - started
                if waited >= s.outage_seconds:
                    raise S3Unavailable(
                        f"{what}: S3 endpoint {s.endpoint} unreachable for {waited:.0f} s ({attempt} tries; last: "
                        f"{_describe(exc)}); check the endpoint URL, that the server is up and reachable, and the network"
                    ) from None
                pause = min(delay, s.max_backoff_seconds, max(0.0, s.outage_seconds - waited)) * (0.5 + random.random() / 2)
                log.warning("%s: S3 endpoint %s not answering (%s); retry %d in %.1f s", what, s.endpoint,
                            _describe(exc), attempt, pause)
                self._sleep(pause)
                delay = min(delay * 2, s.max_backoff_seconds)

    # --- operations -------------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (registries and test servers start empty)."""
        from botocore.exceptions import ClientError

        def create() -> None:
            try:
                self.client.head_bucket(Bucket=self.settings.bucket)
            except ClientError as exc:
                if not _is_not_found(exc):
                    raise
                self.client.create_bucket(Bucket=self.settings.bucket)

        self.call(f"create bucket {self.settings.bucket!r}", create)

    def put(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """One PUT of the whole object: readers see the old object or the new one, never a mix."""
        self.call(f"put {self.where(name)}", lambda: self.client.put_object(
            Bucket=self.settings.bucket, Key=self.key(name), Body=data, Metadata=metadata or {}))

    def get(self, name: str) -> tuple[bytes, dict[str, str]]:
        """The object's bytes and user metadata; raises :class:`S3NotFound` if absent."""
        def fetch() -> tuple[bytes, dict[str, str]]:
            response = self.client.get_object(Bucket=self.settings.bucket, Key=self.key(name))
            return response["Body"].read(), dict(response.get("Metadata", {}))

        return self.call(f"get {self.where(name)}", fetch)

    def exists(self, name: str) -> bool:
        try:
            self.call(f"head {self.where(name)}", lambda: self.client.head_object(Bucket=self.settings.bucket, Key=self.key(name)))
            return True
        except S3NotFound:
            return False

    def list(self, prefix: str = "") -> list[str]:
        """Object names under ``prefix`` (relative to the store's prefix), sorted."""
        base = self.key(prefix)
        base = base + "/" if base and not base.endswith("/") else base
        strip = len(self.key("")) + (1 if self.key("") else 0)

        def listing() -> list[str]:
            names: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket, Prefix=base):
                names.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
            return sorted(names)

        return self.call(f"list {self.where(prefix)}", listing)

    def delete(self, name: str) -> None:
        self.call(f"delete {self.where(name)}", lambda: self.client.delete_object(Bucket=self.settings.bucket, Key=self.key(name)))
