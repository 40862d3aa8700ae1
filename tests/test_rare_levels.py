"""A categorical level the training rows hardly hold reads as missing, so the missing branch is fitted.

Found on a housing table: with every training level coded, no training row was ever missing in the city column,
and a city first seen at predict time followed whatever branch the trees' missing direction happened to take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rungflow.tasks.data import MIN_LEVEL_ROWS, DataSpec, common_levels, load_dataset


def _table(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 400
    town = rng.choice(["north", "south", "east"], size=n).astype(object)
    town[:12] = [f"hamlet-{i}" for i in range(12)]  # twelve towns of one row each
    size = rng.uniform(50, 250, size=n)
    price = 1000 * size + np.where(town == "north", 50_000, 0) + rng.normal(0, 5_000, size=n)
    path = path / "houses.csv"
    pd.DataFrame({"town": town, "size": size, "price": price}).to_csv(path, index=False)
    return path


def test_levels_seen_once_in_the_training_rows_read_as_missing_there(tmp_path: Path) -> None:
    ds = load_dataset(DataSpec(source=str(_table(tmp_path)), label="price", validation_fraction=0.2, seed=0))
    assert ds.categories["town"] == ("east", "north", "south")
    town = ds.feature_names.index("town")
    # Some of the one-row towns fell in the training part: they are missing there, so a model learns where the
    # towns it has (nearly) never seen belong.
    assert np.isnan(ds.X_train[:, town]).sum() > 0
    assert np.isnan(ds.encode(pd.DataFrame({"town": ["hamlet-99"], "size": [100.0]}))[0, town])


def test_common_levels_counts_rows_not_spellings() -> None:
    column = pd.Series(["a", "a", "b", None, None, 3, 3, 3])
    assert MIN_LEVEL_ROWS == 2 and common_levels(column) == ("3", "a")
