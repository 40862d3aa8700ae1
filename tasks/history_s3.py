"""Earlier sweeps' run directories on S3 (``history: {runs: [s3://bucket/runs/digits-*]}``), fetched as data.

A run directory synced to S3 (``aws s3 sync runs/ s3://team/runs/``) is a prefix holding ``config.json``,
``result.json`` and ``ledger.jsonl``. Only those three objects are fetched, into a local directory named like
the run, and read by the same code as a local run directory: no checkpoint, model or pickle is ever downloaded.
The client is the sweep's own (``storage.s3``: endpoint, region, timeouts, a Prefect block for credentials),
so credentials come from where every other S3 access of the sweep takes them, never from the history entry.
"""

from __future__ import annotations

import fnmatch
import glob
from dataclasses import replace
from pathlib import Path
from typing import Any

from rungflow.tasks.s3 import S3Error, S3Settings, S3Store, parse_s3_url

__all__ = ["RUN_FILES", "fetch_s3_runs"]

RUN_FILES = ("config.json", "result.json", "ledger.jsonl")


def _split(pattern: str) -> tuple[S3Settings, str]:
    """``s3://b/runs/digits-*`` -> (the store at ``s3://b/runs``, ``digits-*``): the prefix to list, the glob under it."""
    settings = parse_s3_url(pattern)
    segments = [s for s in settings.prefix.split("/") if s]
    fixed: list[str] = []
    for segment in segments:
        if glob.has_magic(segment):
            break
        fixed.append(segment)
    return replace(settings, prefix="/".join(fixed)), "/".join(segments[len(fixed):])


def fetch_s3_runs(pattern: str, where: str, s3_config: Any, into: Path) -> list[tuple[str, Path]]:
    """The run directories ``pattern`` names, each as (its S3 URL, a local copy of its three files).

    ``s3_config``: the sweep's ``storage.s3`` section. Raises ``ValueError`` (one line naming ``where`` and the
    fix) when S3 cannot be read or nothing matches; the caller turns it into a history error.
    """
    from rungflow.redact import redact

    try:
        base, rest = _split(pattern)
        store = S3Store.from_url(s3_config.url(base.url()))
        names = store.list()
    except S3Error as exc:
        raise ValueError(f"{where}: {redact(str(exc))}") from None
    runs: dict[str, set[str]] = {}
    for name in names:
        run, _, file = name.rpartition("/")
        if file in RUN_FILES:
            runs.setdefault(run, set()).add(file)
    # One segment per segment of the glob: fnmatch's * would cross a "/", and a run's attempts/ are not a run.
    wanted = sorted(run for run in runs if (fnmatch.fnmatchcase(run, rest) and run.count("/") == rest.count("/")
                                            if rest else run == ""))
    if not wanted:
        raise ValueError(f"{where}: no run directory there (no {RUN_FILES[0]} under it); fix the URL, or sync the runs "
                         "there first (aws s3 sync runs/ s3://BUCKET/PREFIX/)")
    out: list[tuple[str, Path]] = []
    for i, run in enumerate(wanted):
        url = "/".join(p for p in (f"s3://{base.bucket}", base.prefix, run) if p)
        local = into / f"{i:04d}" / url.rsplit("/", 1)[-1]
        local.mkdir(parents=True)
        for file in RUN_FILES:
            if file not in runs[run]:
                continue  # the local reader names the missing file and the fix
            try:
                data, _ = store.get(f"{run}/{file}" if run else file)
            except S3Error as exc:
                raise ValueError(f"{where} ({url}): {redact(str(exc))}") from None
            (local / file).write_bytes(data)
        out.append((url, local))
    return out
