"""Credentials read from Prefect blocks: a ``Secret`` for a database URL, prefect-aws blocks for S3.

A block is read from the Prefect server that ``PREFECT_API_URL`` names, by the process that needs the value (the
flow for the Optuna and MLflow URLs, each Ray worker for its S3 client), so the value never travels in a config,
a flow run's parameters or Ray's ``runtime_env``. Every value read is handed to :mod:`rungflow.redact`, which masks
it in whatever rungflow writes or logs from then on. Errors are one line naming the block and the fix, and never
the value.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["BlockError", "BLOCK_NAME", "S3_BLOCK_TYPES", "S3Credentials", "check_block", "read_secret", "s3_credentials"]

# Prefect's own rule for block document names.
BLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# prefect-aws's block types a storage.s3.block may name: credentials alone, or a bucket that holds them.
S3_BLOCK_TYPES = ("aws-credentials", "s3-bucket")
SECRET_BLOCK_TYPE = "secret"

# A value read stays fresh this long: one sweep validates its config more than once (the CLI, then the flow), and
# every S3 client of a worker would otherwise ask the API again; a rotated credential is picked up after it.
_TTL_SECONDS = 300.0
_cache: dict[tuple[str, str], tuple[float, Any]] = {}
_lock = threading.Lock()


class BlockError(ValueError):
    """A block that cannot be used; ``str()`` is one line naming the block and the fix, never its value."""


@dataclass(frozen=True)
class S3Credentials:
    """What an S3 client takes from a block; ``repr`` shows no secret."""

    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile_name: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    bucket: str | None = None

    def __repr__(self) -> str:
        return (f"S3Credentials(keys={'set' if self.access_key_id else 'none'}, profile={self.profile_name!r}, "
                f"region={self.region!r}, endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r})")


def _api_url(name: str) -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        # Without it Prefect would start a throwaway server of its own, which holds no blocks.
        raise BlockError(f"reading Prefect block {name!r} needs the Prefect server that holds it; set PREFECT_API_URL "
                         "(e.g. http://127.0.0.1:4200/api)")
    return url


def _block_type_of(name: str) -> list[str]:
    """The types of every block document called ``name`` (a name is unique only within its type)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        documents = client.read_block_documents(include_secrets=False)
    return sorted({d.block_type.slug for d in documents if d.name == name and d.block_type is not None})


def check_block(name: str, types: tuple[str, ...]) -> str:
    """The type of block ``name`` if it is one of ``types``; else a :class:`BlockError` saying what to do."""
    if not BLOCK_NAME.match(name):
        raise BlockError(f"{name!r} is not a Prefect block name; use lowercase letters, digits and dashes")
    url = _api_url(name)
    try:
        found = _block_type_of(name)
    except Exception as exc:
        raise BlockError(f"cannot read Prefect blocks from {url} ({type(exc).__name__}); check the server is up") from None
    for kind in types:
        if kind in found:
            return kind
    wanted = " or ".join(repr(t) for t in types)
    if found:
        raise BlockError(f"Prefect block {name!r} is of type {', '.join(repr(t) for t in found)}, not {wanted}; "
                         f"name a {wanted} block")
    raise BlockError(f"no Prefect block named {name!r} on {url}; create a {wanted} block of that name "
                     "(Prefect UI > Blocks, or Block.save) or fix the name")


def _cached(key: tuple[str, str], load: Any) -> Any:
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < _TTL_SECONDS:
            return hit[1]
    value = load()
    with _lock:
        _cache[key] = (now, value)
    return value


def _remember(*values: str | None) -> None:
    from urllib.parse import urlsplit

    from rungflow.redact import add_secret

    for value in values:
        if value:
            add_secret(value)
            try:  # a driver's error may quote the password alone
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                add_secret(password)


def read_secret(name: str) -> str:
    """The value of Prefect ``Secret`` block ``name`` (a string)."""
    def load() -> str:
        check_block(name, (SECRET_BLOCK_TYPE,))
        from prefect.blocks.system import Secret

        value = Secret.load(name).get()
        if not isinstance(value, str) or not value:
            raise BlockError(f"Prefect Secret block {name!r} holds a {type(value).__name__}, not a URL string; "
                             "save the URL itself as the secret's value")
        return value

    value = _cached((SECRET_BLOCK_TYPE, name), load)
    _remember(value)
    return value


def _from_credentials_block(block: Any) -> S3Credentials:
    secret = getattr(block, "aws_secret_access_key", None) or getattr(block, "minio_root_password", None)
    params = getattr(block, "aws_client_parameters", None)
    token = getattr(block, "aws_session_token", None)
    return S3Credentials(
        access_key_id=getattr(block, "aws_access_key_id", None) or getattr(block, "minio_root_user", None),
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        session_token=token.get_secret_value() if hasattr(token, "get_secret_value") else token,
        profile_name=getattr(block, "profile_name", None),
        region=getattr(block, "region_name", None),
        endpoint_url=getattr(params, "endpoint_url", None) if params is not None else None,
    )


def s3_credentials(name: str) -> S3Credentials:
    """Credentials (and endpoint, region, bucket where the block sets them) from a prefect-aws block."""
    def load() -> S3Credentials:
        kind = check_block(name, S3_BLOCK_TYPES)
        try:
            from prefect_aws import AwsCredentials, S3Bucket
        except ImportError:
            raise BlockError(f"Prefect block {name!r} is a prefect-aws {kind!r} block; pip install 'rungflow[s3]' "
                             "(it brings prefect-aws)") from None
        block = (S3Bucket if kind == "s3-bucket" else AwsCredentials).load(name)
        if kind == "s3-bucket":
            creds = _from_credentials_block(block.credentials)
            return S3Credentials(**{**creds.__dict__, "bucket": block.bucket_name})
        return _from_credentials_block(block)

    creds = _cached(("s3", name), load)
    _remember(creds.secret_access_key, creds.session_token)
    return creds
