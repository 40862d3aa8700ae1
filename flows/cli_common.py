"""What every ``rungflow`` command shares: the consoles, the one-line user error, loading a config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class APILostError(CLIError):
    """The Prefect API died mid-sweep: one line, then exit without waiting on Prefect's event queue.

    At exit Prefect would try to ship each queued event to the dead API, ~7 s apiece (minutes in all);
    everything worth keeping is already fsynced in the run directory.
    """


def packaged_example(path: str) -> Path | None:
    """The example config shipped inside the package for ``examples/NAME.yaml`` (or ``NAME``), where no such file is
    here: after ``pip install rungflow`` the README's ``rungflow sweep examples/digits.yaml`` still works."""
    if Path(path).exists():
        return None
    from importlib.resources import files

    name = Path(path).name if Path(path).suffix else f"{Path(path).name}.yaml"
    parts = Path(path).parts
    relative = Path(*parts[parts.index("examples") + 1:]) if "examples" in parts else Path(name)
    candidate = Path(str(files("rungflow.examples"))) / relative
    return candidate if candidate.is_file() else None


def load_cli_config(path: str, overrides: Sequence[str]):
    from rungflow.config import ConfigError, load_config

    example = packaged_example(path)
    if example is not None:
        err_console.print(f"{path} is not here: using the example shipped with rungflow, {example}", highlight=False)
        path = str(example)
    try:
        return load_config(path, list(overrides))
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}") from None


def preflight(config) -> None:
    """The trainable's data is there: a missing dataset fails now, in one line, not as a sweep of failed trials."""
    from rungflow.tasks.trainables import TrainableError

    try:
        config.trainable_class()(config.trainable.options).check()
    except TrainableError as exc:
        raise CLIError(str(exc) if config.trainable.kind == "function" else f"data error: {exc}") from None

