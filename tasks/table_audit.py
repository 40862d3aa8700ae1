"""A table checked before an AutoML run spends anything: the label, its classes, enough rows, usable columns.

Each refusal is one :class:`~tasks.data.DataError` line naming the problem and the fix. Columns no model
family here can learn from are left out with a note rather than refused: all-empty columns, dates, free text and
identifier-like strings (AutoGluon likewise drops what it cannot use, and turns text and dates into features of
their own, which rungflow does not yet do).
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from rungflow.tasks.data import DataError, Task, infer_task

__all__ = ["TableAudit", "audit_table", "MIN_VALIDATION_ROWS"]

# Fewer validation rows than this make a score too coarse to rank trials by (one row is 10 accuracy points).
MIN_VALIDATION_ROWS = 10
# A string column with more distinct values than this share of its rows (and than _MIN_DISTINCT) names rows
# rather than groups them: an identifier, a free-form code.
_DISTINCT_SHARE = 0.5
_MIN_DISTINCT = 20
# Strings this long on average, of several words, are prose.
_TEXT_CHARACTERS = 30
_TEXT_WORDS = 4
_SAMPLE = 500


@dataclass(frozen=True)
class TableAudit:
    """What the run will learn from: the task, the rows with a label, and the columns left out with the reason."""

    label: str
    task: Task
    rows: int
    classes: int
    dropped: dict[str, str] = field(default_factory=dict)

    def notes(self) -> list[str]:
        return [f"left out column {name!r}: {reason}" for name, reason in self.dropped.items()]


def audit_table(frame: pd.DataFrame, label: str, *, source: str, validation_fraction: float = 0.2) -> TableAudit:
    """Check ``frame`` for an AutoML run on ``label``; raises :class:`DataError` naming the problem and the fix."""
    columns = [str(c) for c in frame.columns]
    if label not in columns:
        raise DataError(f"--label {label!r}: no such column in {source}; {_near(label, columns)}")
    labelled = frame[frame[label].notna()]
    if labelled.empty:
        raise DataError(f"--label {label!r}: the column is empty in every row of {source}; pick the column to predict")
    task = infer_task(labelled[label])
    classes = int(labelled[label].nunique()) if task == "classification" else 0
    if task == "classification" and classes < 2:
        raise DataError(f"--label {label!r}: one class ({labelled[label].iloc[0]!r}) in all {len(labelled)} labelled rows; "
                        "a classifier needs two or more: pick another label column, or add rows of the other classes")
    needed = max(math.ceil(MIN_VALIDATION_ROWS / validation_fraction), math.ceil(classes / validation_fraction))
    if len(labelled) < needed:
        raise DataError(f"{source}: {len(labelled)} labelled rows; the {validation_fraction:.0%} validation split needs at "
                        f"least {needed} (at least {max(MIN_VALIDATION_ROWS, classes)} validation rows); add rows")
    if task == "classification":
        counts = labelled[label].value_counts()
        rare = counts[counts < 2]
        if len(rare):
            names = ", ".join(repr(v) for v in rare.index[:5])
            raise DataError(f"--label {label!r}: class{'es' if len(rare) > 1 else ''} {names} "
                            f"{'have' if len(rare) > 1 else 'has'} one row; the stratified validation split needs at "
                            "least two rows of each class: add rows of it, or drop those rows")
    dropped = {}
    for name in columns:
        if name != label:
            reason = _unusable(frame[name])
            if reason:
                dropped[name] = reason
    if len(dropped) == len(columns) - 1:
        raise DataError(f"{source}: no column besides {label!r} can be learned from ({'; '.join(TableAudit(label, task, 0, 0, dropped).notes())}); "
                        "add numeric or categorical columns")
    return TableAudit(label=label, task=task, rows=len(labelled), classes=classes, dropped=dropped)


def _near(label: str, columns: list[str]) -> str:
    lowered = {c.lower(): c for c in columns}
    near = ([lowered[label.lower()]] if label.lower() in lowered else []) + difflib.get_close_matches(label, columns, n=3, cutoff=0.5)
    near = list(dict.fromkeys(near))
    shown = ", ".join(columns[:12]) + (f", ... ({len(columns)} in all)" if len(columns) > 12 else "")
    if near:
        return f"did you mean {' or '.join(repr(c) for c in near)}? (columns: {shown})"
    return f"pass one of the columns: {shown}"


def _unusable(series: pd.Series) -> str | None:
    """Why no family here can learn from ``series`` (None: it can)."""
    values = series.dropna()
    if values.empty:
        return "empty in every row"
    if pd.api.types.is_datetime64_any_dtype(series) or isinstance(series.dtype, pd.PeriodDtype):
        return "dates; to use them, add them as numbers (e.g. days since a start, month, weekday)"
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    strings = values.astype(str)
    sample = strings.sample(min(len(strings), _SAMPLE), random_state=0) if len(strings) > _SAMPLE else strings
    if _looks_like_dates(sample):
        return "dates; to use them, add them as numbers (e.g. days since a start, month, weekday)"
    if sample.str.len().mean() >= _TEXT_CHARACTERS and sample.str.split().str.len().mean() >= _TEXT_WORDS:
        return f"free text (about {sample.str.split().str.len().mean():.0f} words a row); rungflow does not featurise text"
    distinct = int(values.nunique())
    if distinct > _MIN_DISTINCT and distinct > _DISTINCT_SHARE * len(values):
        return (f"{distinct} distinct strings in {len(values)} rows: an identifier or free-form code, which names rows "
                "rather than groups them")
    return None


def _looks_like_dates(sample: pd.Series) -> bool:
    if pd.to_numeric(sample, errors="coerce").notna().mean() > 0.5 or sample.str.contains(r"\d").mean() < 0.9:
        return False  # numbers stored as text, or words ("Mon", "March") a date parser would also accept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed: Any = pd.to_datetime(sample, errors="coerce", format="mixed")
        except (ValueError, TypeError):
            return False
    return bool(parsed.notna().mean() >= 0.9)
