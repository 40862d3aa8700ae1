"""Credentials a config may name but never hold: a Prefect ``Secret`` block for a URL, a prefect-aws block for S3.

A URL field written ``{secret: NAME}`` validates to the secret's value, so the code that opens the database reads a
plain string, while the config dumps back to ``{secret: NAME}``: config.json, the flow run's parameters and
``result.json`` carry the block's name, never its value. A resumed sweep reads the block again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import PlainSerializer, ValidationError, WrapValidator

__all__ = ["SecretValue", "OptionalSecretURL", "resolve_secret_field", "dump_secret_field", "check_s3_block"]


class SecretValue(str):
    """A string read from Prefect ``Secret`` block ``block``; its repr shows the block, never the value."""

    block: str = ""

    def __repr__(self) -> str:
        return f"{{secret: {self.block}}}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_secret_value, (str(self), self.block))


def _secret_value(value: str, block: str) -> SecretValue:
    out = SecretValue(value)
    out.block = block
    return out


def _secret_name(value: Mapping[str, Any]) -> str:
    if set(value) != {"secret"} or not isinstance(value["secret"], str) or not value["secret"].strip():
        raise ValueError(f"write a URL, or {{secret: NAME}} to read it from the Prefect Secret block NAME "
                         f"(got the keys {', '.join(map(str, value)) or 'none'})")
    return value["secret"].strip()


def resolve_secret_field(value: Any, handler: Callable[[Any], Any]) -> Any:
    """``value`` validated by ``handler``; ``{secret: NAME}`` is first replaced by the Secret block's value."""
    if isinstance(value, SecretValue):  # validated before (assignment, a config validated again)
        value = {"secret": value.block}
    if not isinstance(value, Mapping):
        return handler(value)
    name = _secret_name(value)
    from rungflow.tasks.prefect_blocks import BlockError, read_secret

    try:
        plain = read_secret(name)
    except BlockError as exc:
        raise ValueError(str(exc)) from None
    try:
        checked = handler(plain)
    except ValidationError as exc:
        # The message only: the input the validator saw is the secret itself.
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"the value of Prefect Secret block {name!r} is not usable here: {reasons}") from None
    return _secret_value(checked, name)


def dump_secret_field(value: Any) -> Any:
    """What a config dumps for a field: the block reference where the value came from a Secret block."""
    return {"secret": value.block} if isinstance(value, SecretValue) else value


# A URL field that may be given as {secret: NAME}: read from the Prefect Secret block when validated, dumped as the
# reference (config.json, flow parameters), never as the value.
OptionalSecretURL = Annotated[str | None, WrapValidator(resolve_secret_field), PlainSerializer(dump_secret_field)]


def check_s3_block(name: str) -> Any:
    """The credentials of prefect-aws block ``name``; a block that is missing or of another type is a ValueError."""
    from rungflow.tasks.prefect_blocks import BlockError, s3_credentials

    try:
        return s3_credentials(name)
    except BlockError as exc:
        raise ValueError(str(exc)) from None
