"""Turning a store and a labels table into the audit's coded cells and row selection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.fairness.groups import Cells

MAX_ATTRIBUTE_VALUES = 20
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
}
SPLIT_CHOICES = ("auto", "all", "train", "valid", "test")
#: Fraction of each cell held out for the audit when a probe is fit on data without a split.
SEEDED_TEST_FRACTION = 0.3


def _display(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _sorted_values(series: pd.Series) -> list:
    values = list(pd.unique(series))
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def build_cells(labels: pd.DataFrame, target: str, spurious: str) -> Cells:
    """Code the target (two values; the larger one is the positive class) and the attribute.

    The positive class is the larger of the two target values in sort order (1 over 0, True over
    False, "male" over "female"); a linear head's logit > 0, or output 1 > output 0, predicts it.
    """
    for col, flag in ((target, "--target"), (spurious, "--spurious")):
        if col not in labels.columns:
            cols = ", ".join(map(str, labels.columns[:20]))
            raise InputError(f"{flag} column '{col}' not found; available columns: {cols}")
    if target == spurious:
        raise InputError("--target and --spurious must be different columns")
    for col in (target, spurious):
        missing = int(labels[col].isna().sum())
        if missing:
            raise InputError(f"column '{col}' has {missing} missing values")
    target_values = _sorted_values(labels[target])
    if len(target_values) != 2:
        raise InputError(
            f"--target '{target}' must have exactly two values, found {len(target_values)}"
        )
    attr_values = _sorted_values(labels[spurious])
    if len(attr_values) < 2:
        raise InputError(f"--spurious '{spurious}' has a single value; nothing to compare")
    if len(attr_values) > MAX_ATTRIBUTE_VALUES:
        raise InputError(
            f"--spurious '{spurious}' has {len(attr_values)} values; use a categorical column "
            f"(at most {MAX_ATTRIBUTE_VALUES} values)"
        )
    y = (labels[target].to_numpy() == target_values[1]).astype(np.int8)
    index = {v: i for i, v in enumerate(attr_values)}
    attribute = np.array([index[v] for v in labels[spurious].to_numpy()], dtype=np.int16)
    return Cells(
        y=y,
        attribute=attribute,
        target_name=str(target),
        attribute_name=str(spurious),
        target_values=(_display(target_values[0]), _display(target_values[1])),
        attribute_values=tuple(_display(v) for v in attr_values),
        # For a binary attribute the larger value (1, True, "yes") means "has the attribute".
        spurious_present=1 if len(attr_values) == 2 else None,
    )


def subset_cells(cells: Cells, rows: np.ndarray) -> Cells:
    return Cells(
        y=cells.y[rows],
        attribute=cells.attribute[rows],
        target_name=cells.target_name,
        attribute_name=cells.attribute_name,
        target_values=cells.target_values,
        attribute_values=cells.attribute_values,
        spurious_present=cells.spurious_present,
    )


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


def select_rows(
    labels: pd.DataFrame, cells: Cells, split: str, probe: bool, seed: int
) -> RowSelection:
    """Which rows are audited (and, for a probe, trained on).

    ``auto``: with a split column, the test split (the probe trains on the train split);
    without one, a probe gets a seeded split stratified by cell (30 % audited, 70 % train) and a
    given classifier is audited on every row.
    """
    if split not in SPLIT_CHOICES:
        raise InputError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
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
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        test = []
        for c in range(cells.n_cells):
            idx = np.nonzero(cells.cell == c)[0]
            if idx.size:
                shuffled = rng.permutation(idx)
                test.append(shuffled[: int(np.ceil(SEEDED_TEST_FRACTION * idx.size))])
        audit = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
        train = np.setdiff1d(np.arange(n), audit)
        return RowSelection(
            audit,
            train,
            f"seeded split (seed {seed}): {SEEDED_TEST_FRACTION:.0%} of each cell audited",
        )
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
