"""Credentials never leave the process in what rungflow writes or prints: one place that scrubs them.

Secrets are whatever the environment holds under credential-like names (S3 keys, Prefect API keys
and auth strings, tokens, passwords) plus passwords embedded in URLs (``scheme://user:pw@host``).
Everything rungflow persists or shows passes through here: ``result.json`` and ``config.json``
(:func:`rungflow.results.write_json_atomic`), ledger error strings (``Sweep.charge``), Prefect
artifacts (built from the redacted result), log records (:func:`install_log_redaction`) and CLI
error lines. Values shorter than 6 characters are not treated as secrets: scrubbing "1" or "true"
everywhere would mangle numbers and words, and such values protect nothing.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

__all__ = ["MASK", "is_secret_name", "secret_values", "redact", "redact_json", "RedactingFilter", "install_log_redaction",
           "add_secret"]

MASK = "***"
# Names of environment variables that hold credentials; matched case-insensitively.
_SECRET_NAME = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|API_KEY|AUTH_STRING|ACCESS_KEY|PRIVATE_KEY|SESSION_KEY)", re.I
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s:/@]+:)(?P<pw>[^\s@/]+)(?=@)", re.I)
_MIN_LEN = 6
# Values read at run time from a secret store (Prefect blocks), which no environment variable names.
_added: set[str] = set()


def add_secret(value: str) -> None:
    """Mask ``value`` from now on, in this process, as if an environment variable with a secret's name held it."""
    if value and len(value) >= _MIN_LEN:
        _added.add(value)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable of this name holds a credential."""
    return bool(_SECRET_NAME.search(name))


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Credential values in the environment, longest first (so a secret containing another is masked whole)."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k) and v and len(v) >= _MIN_LEN} | _added
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every credential value and URL password replaced by ``***``."""
    if not text:
        return text
    for value in secrets if secrets is not None else secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def redact_json(data: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like structure with every string (keys included) redacted."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return {redact(str(k), secrets) if isinstance(k, str) else k: redact_json(v, secrets) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_json(v, secrets) for v in data]
    return data


class RedactingFilter(logging.Filter):
    """Scrubs a log record's final message (arguments merged in) before any handler formats or ships it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks print the exception's message; format it now, redacted, and drop the raw one.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(formatted), None
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Attach the filter to every handler that exists now (root, Prefect's console and API handlers, ...)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
