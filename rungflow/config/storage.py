"""Where a sweep keeps what it writes: the run directory, the Optuna study, checkpoints, S3, MLflow."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_serializer, field_validator, model_validator

from rungflow.config.credentials import OptionalSecretURL, check_s3_block, dump_secret_field, resolve_secret_field
from rungflow.config.errors import _Strict

_CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key", "secret_key",
                    "access_key_id", "secret_access_key", "password", "token")


class S3Config(_Strict):
    """How to reach an S3-compatible store. Credentials are not accepted here: see :mod:`tasks.s3`."""

    endpoint_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8333; None: AWS_ENDPOINT_URL or AWS")
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    outage_seconds: float = 300.0
    block: str | None = Field(default=None, description="a prefect-aws AwsCredentials or S3Bucket block: credentials "
                                                        "(and endpoint, region) from it instead of the AWS chain")

    @field_validator("block")
    @classmethod
    def _block(cls, name: str | None) -> str | None:
        if name is not None:
            check_s3_block(name)
        return name

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in _CREDENTIAL_KEYS:
                    raise ValueError(
                        f"{key}: credentials never go in config files; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                        "in the environment, use an AWS profile (AWS_PROFILE), or name a prefect-aws block in "
                        "storage.s3.block"
                    )
        return data

    @field_validator("connect_timeout", "read_timeout", "outage_seconds")
    @classmethod
    def _positive_seconds(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("must be a positive number of seconds")
        return v

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1 (1 = no botocore retries)")
        return v

    def url(self, location: str) -> str:
        """``location`` (s3://bucket/prefix) with these settings in its query, for workers that get only a string."""
        from rungflow.tasks.s3 import parse_s3_url

        # Only values that differ from the defaults: options already in the URL's query must not be reset to them
        # (a config dumped and validated again has every field set, so exclude_unset is not enough).
        changed = {k: v for k, v in self.model_dump().items() if v != type(self).model_fields[k].default}
        return parse_s3_url(location, **changed).url()


class StorageConfig(_Strict):
    run_dir: str | None = None
    optuna_url: OptionalSecretURL = Field(default=None, description="Optuna storage; default sqlite in the run directory; "
                                                            "{secret: NAME} reads it from a Prefect Secret block")
    checkpoints: str | None = Field(default=None, description="checkpoint store: a directory or s3://bucket/prefix; "
                                                              "default RUN_DIR/checkpoints")
    s3: S3Config = Field(default_factory=S3Config)

    @model_validator(mode="after")
    def _bucket_of_the_block(self) -> StorageConfig:
        if self.s3.block and self.checkpoints and self.checkpoints.startswith("s3://"):
            bucket = check_s3_block(self.s3.block).bucket
            named = self.checkpoints.removeprefix("s3://").split("/", 1)[0].split("?", 1)[0]
            if bucket and named != bucket:
                raise ValueError(f"storage.checkpoints names bucket {named!r}, but storage.s3.block {self.s3.block!r} is "
                                 f"an S3Bucket block for bucket {bucket!r}; use s3://{bucket}/PREFIX or a block of that bucket")
        return self

    @field_validator("checkpoints")
    @classmethod
    def _location(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("s3://"):
            from rungflow.tasks.s3 import S3Error, parse_s3_url

            try:
                parse_s3_url(v)
            except S3Error as exc:
                raise ValueError(str(exc)) from None
        return v

    def checkpoint_location(self, run_dir: Path) -> str:
        """Where a sweep in ``run_dir`` keeps checkpoints; an S3 store gets one prefix per run directory."""
        if self.checkpoints is None:
            return str((run_dir / "checkpoints").resolve())
        if self.checkpoints.startswith("s3://"):
            base = self.s3.url(self.checkpoints)
            path, _, query = base.partition("?")
            return f"{path.rstrip('/')}/{slug(run_dir.resolve().name)}" + (f"?{query}" if query else "")
        return str(Path(self.checkpoints).resolve())


class MLflowConfig(_Strict):
    tracking_uri: str = Field(description="an MLflow tracking server (http://host:5000) or store URI; credentials "
                              "belong in MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, or the whole "
                              "URI in a Prefect Secret block: {secret: NAME}")
    experiment: str | None = Field(default=None, description="MLflow experiment; default: the sweep's name")

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not re.match(r"^(https?|file|sqlite|postgresql|mysql|databricks)(\+[a-z0-9]+)?:", value.strip()):
            raise ValueError("expected an MLflow tracking URI such as http://127.0.0.1:5000, sqlite:///mlflow.db or "
                             "file:///path/mlruns")
        return value.strip()

    @field_validator("tracking_uri", mode="wrap")
    @classmethod
    def _uri_secret(cls, value: Any, handler: Any) -> Any:
        return resolve_secret_field(value, handler)

    @field_serializer("tracking_uri")
    def _dump_tracking_uri(self, value: Any) -> Any:
        return dump_secret_field(value)


class TrackingConfig(_Strict):
    mlflow: MLflowConfig | None = None


SLUG_MAX = 48


def slug(text: str) -> str:
    """Lowercase letters, digits and dashes: safe as a directory name and as a Prefect artifact key.

    Accents are folded (``Café`` → ``cafe``). When folding loses the name (``实验``) or it is cut to
    ``SLUG_MAX`` characters, a hash of the original is appended so distinct names keep distinct keys.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    folded = decomposed.encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    if not base:
        return f"sweep-{digest}" if text.strip() else "sweep"
    lost = any(ch.isalnum() and not ch.isascii() for ch in decomposed)
    if lost or len(base) > SLUG_MAX:
        return f"{base[: SLUG_MAX - 9].rstrip('-')}-{digest}"
    return base

