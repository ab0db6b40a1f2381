"""Which rows are audited, and which a probe is fit on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.fairness.config import SPLITS
from audit.fairness.groups import Cells

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
}
#: Fraction of each cell held out for the audit when a probe is fit on data without a split.
SEEDED_TEST_FRACTION = 0.3


def split_column(labels: pd.DataFrame) -> np.ndarray | None:
    """Normalised split names (train/valid/test) from a ``split`` column, or CelebA's
    ``partition`` (0/1/2); None if neither exists."""
    if "split" in labels.columns:
        raw = labels["split"].astype(str).str.strip().str.lower()
        mapped = raw.map(SPLIT_ALIASES)
        if mapped.isna().any():
            bad = raw[mapped.isna()].iloc[0]
            raise InputError(f"'split' column: unknown value {bad!r} (use train, valid or test)")
        return mapped.to_numpy()
    if "partition" in labels.columns:
        parts = labels["partition"]
        if not parts.isin([0, 1, 2]).all():
            raise InputError("'partition' column: values must be 0, 1 or 2")
        return parts.map({0: "train", 1: "valid", 2: "test"}).to_numpy()
    return None


@dataclass(frozen=True)
class RowSelection:
    audit: np.ndarray  # store rows audited (sorted)
    train: np.ndarray | None  # store rows the probe is fit on
    source: str  # how the split was chosen (reported)


def _seeded_split(cells: Cells, n: int, seed: int) -> RowSelection:
    """Without a split column a probe gets a seeded split stratified by cell."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    test = []
    for c in range(cells.n_cells):
        idx = np.nonzero(cells.cell == c)[0]
        if idx.size:
            shuffled = rng.permutation(idx)
            test.append(shuffled[: int(np.ceil(SEEDED_TEST_FRACTION * idx.size))])
    audit = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(n), audit)
    source = f"seeded split (seed {seed}): {SEEDED_TEST_FRACTION:.0%} of each cell audited"
    return RowSelection(audit, train, source)


def select_rows(
    labels: pd.DataFrame, cells: Cells, split: str, probe: bool, seed: int
) -> RowSelection:
    """Which rows are audited (and, for a probe, trained on).

    ``auto``: with a split column, the test split (the probe trains on the train split);
    without one, a probe gets a seeded split stratified by cell (30 % audited, 70 % train) and a
    given classifier is audited on every row.
    """
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    n = len(labels)
    column = split_column(labels)
    if split == "all":
        if probe:
            raise InputError(
                "--split all cannot be used with --classifier probe (it would audit its training data)"
            )
        return RowSelection(np.arange(n), None, "all rows")
    if column is None:
        if split != "auto":
            raise InputError(
                f"--split {split} needs a 'split' column (train/valid/test) in the labels"
            )
        if not probe:
            return RowSelection(np.arange(n), None, "all rows (no split column)")
        return _seeded_split(cells, n, seed)
    chosen = "test" if split == "auto" else split
    audit = np.nonzero(column == chosen)[0]
    if audit.size == 0:
        raise InputError(f"the {chosen} split is empty")
    train = None
    if probe:
        train = np.nonzero(column == "train")[0]
        if train.size == 0:
            raise InputError("--classifier probe needs rows in the train split")
        if chosen == "train":
            raise InputError("--classifier probe is fit on the train split; audit another split")
    return RowSelection(audit, train, f"{chosen} split")
