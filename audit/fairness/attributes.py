"""Group definitions: how the audited rows fall into target × attribute cells.

The target is a labelled column with two values. The *attribute* that splits each target class
into groups is behind a small interface, :class:`Attribute`: a labelled column
(:class:`ColumnAttribute`, ``--spurious Blond_Hair``) or a concept of the bank
(:class:`ConceptAttribute`, ``--spurious concept:NAME`` or ``concept:NAME>T``), whose
:meth:`Attribute.code` reads the SAE's activations through :class:`GroupingData` instead of a
column: a row has the attribute when the concept is active on it
(:mod:`audit.concepts.activity`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from audit.errors import InputError
from audit.fairness.groups import Cells

MAX_ATTRIBUTE_VALUES = 20
#: ``--spurious concept:NAME[>T]``: groups from a concept's activity.
CONCEPT_PREFIX = "concept:"
CONCEPT_VALUES = ("inactive", "active")


@dataclass(frozen=True)
class GroupingData:
    """What an attribute may read to code the rows: the labels table, and every loaded input
    (store, SAE, bank) for attributes computed from the embeddings."""

    labels: pd.DataFrame
    inputs: Any = None


@dataclass(frozen=True)
class GroupingInputs:
    """The loaded inputs an attribute computed from embeddings reads (every row of the store)."""

    store: Any
    sae: Any
    bank: Any
    device: Any = "cpu"
    chunk_rows: int = 4096


@dataclass(frozen=True)
class AttributeCodes:
    codes: np.ndarray  # [N] int16: each row's value index
    values: tuple[str, ...]  # value names in index order
    present: int | None  # the value meaning "has the attribute" (binary attributes), else None
    spec: str | None = None  # the definition as resolved, when it differs from what was asked
    # A concept without a fixed threshold: its summed activation on every row, so that the cut
    # can be chosen again on the audited rows once they are known (cut_on_audited_rows).
    scores: np.ndarray | None = None
    # How group names show the attribute, when it differs from what was asked (the bank's
    # spelling of a concept named case-insensitively: "concept:Red" groups read "red=active").
    name: str | None = None


class Attribute(ABC):
    """The attribute that splits each target class into groups."""

    name: str  # how group names and reports show it

    @abstractmethod
    def code(self, data: GroupingData, target: str) -> AttributeCodes:
        """Each row's value; :class:`InputError` when the attribute cannot split the rows."""


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


def _require_column(labels: pd.DataFrame, col: str, flag: str) -> None:
    if col not in labels.columns:
        cols = ", ".join(map(str, labels.columns[:20]))
        raise InputError(f"{flag} column '{col}' not found; available columns: {cols}")


def _require_complete(labels: pd.DataFrame, col: str) -> None:
    missing = int(labels[col].isna().sum())
    if missing:
        raise InputError(f"column '{col}' has {missing} missing values")


@dataclass(frozen=True)
class ColumnAttribute(Attribute):
    """A categorical label column (at most 20 values)."""

    name: str

    def code(self, data: GroupingData, target: str) -> AttributeCodes:
        labels, col = data.labels, self.name
        _require_column(labels, col, "--spurious")
        if target == col:
            raise InputError("--target and --spurious must be different columns")
        _require_complete(labels, col)
        values = _sorted_values(labels[col])
        if len(values) < 2:
            raise InputError(f"--spurious '{col}' has a single value; nothing to compare")
        if len(values) > MAX_ATTRIBUTE_VALUES:
            raise InputError(
                f"--spurious '{col}' has {len(values)} values; use a categorical column "
                f"(at most {MAX_ATTRIBUTE_VALUES} values)"
            )
        index = {v: i for i, v in enumerate(values)}
        codes = np.array([index[v] for v in labels[col].to_numpy()], dtype=np.int16)
        # For a binary attribute the larger value (1, True, "yes") means "has the attribute".
        present = 1 if len(values) == 2 else None
        return AttributeCodes(codes, tuple(_display(v) for v in values), present)


@dataclass(frozen=True)
class ConceptAttribute(Attribute):
    """A concept of the bank: "active" where its latents' summed activation exceeds
    ``threshold`` (None: Otsu's threshold over the audited rows, like every other use of
    "active" — first cut over every row, then again by :func:`cut_on_audited_rows`)."""

    concept: str
    threshold: float | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.concept

    def code(self, data: GroupingData, target: str) -> AttributeCodes:
        from audit.concepts.activity import concept_activity, find_concept

        inputs = data.inputs
        if not isinstance(inputs, GroupingInputs):
            raise InputError(
                f"--spurious {CONCEPT_PREFIX}{self.concept} needs the SAE and the bank"
            )
        group = find_concept(inputs.bank, self.concept, inputs.sae.n_latents)
        store = inputs.store
        chunks = (
            torch.from_numpy(np.ascontiguousarray(store.read(lo, lo + inputs.chunk_rows))).to(
                inputs.device, torch.float32
            )
            for lo in range(0, store.count, inputs.chunk_rows)
        )
        sae = inputs.sae.to(inputs.device).eval()
        activity = concept_activity(sae, chunks, [group.latents], [self.threshold])
        t, active = float(activity.thresholds[0]), activity.active[:, 0]
        _require_both_groups(str(group.name), active, t, "row")
        scores = activity.activation[:, 0] if self.threshold is None else None
        return AttributeCodes(
            active.astype(np.int16),
            CONCEPT_VALUES,
            1,
            concept_spec(str(group.name), t),
            scores,
            str(group.name),
        )


def cut_on_audited_rows(cells: Cells, rows: np.ndarray) -> Cells:
    """``cells`` with a concept attribute that has no fixed threshold cut again at Otsu's
    threshold over the audited ``rows``, so that its groups mean what "active" means in the
    concept-sliced errors and in ``discover`` (which cut over the audited rows too); any other
    attribute unchanged. (A probe's seeded split, stratified by cell, used the first cut.)"""
    from audit.concepts.activity import otsu_threshold

    if cells.attribute_scores is None:
        return cells
    scores = cells.attribute_scores
    t = otsu_threshold(scores[rows])
    active = scores > t
    name = str(cells.attribute_spec or "")[len(CONCEPT_PREFIX) :].rpartition(">")[0]
    _require_both_groups(name, active[rows], t, "audited row")
    return replace(
        cells, attribute=active.astype(np.int16), attribute_spec=concept_spec(name, t),
        attribute_scores=None,
    )  # fmt: skip


def _require_both_groups(name: str, active: np.ndarray, t: float, rows: str) -> None:
    """A concept attribute must be active on some ``rows`` and inactive on others."""
    if active.all() or not active.any():
        where = "every" if active.all() else "no"
        raise InputError(
            f"concept '{name}' is active on {where} {rows} (summed activation > {t:g}); "
            "its groups cannot be compared: choose another threshold with concept:NAME>T"
        )


def concept_spec(name: str, threshold: float) -> str:
    """``--spurious`` for a concept at a threshold: ``concept:NAME>T``, ``T`` written exactly
    (the shortest text that reads back as the same float)."""
    return f"{CONCEPT_PREFIX}{name}>{float(threshold)!r}"


def parse_attribute(spec: str) -> Attribute:
    """``--spurious``: a label column, or ``concept:NAME`` / ``concept:NAME>T``."""
    if not spec.startswith(CONCEPT_PREFIX):
        return ColumnAttribute(spec)
    body = spec[len(CONCEPT_PREFIX) :]
    name, sep, value = body.rpartition(">")
    if not sep:
        name, value = body, ""
    threshold = None
    if sep:
        try:
            threshold = float(value)
        except ValueError:
            raise InputError(f"--spurious {spec}: threshold {value!r} is not a number") from None
        if not np.isfinite(threshold):
            raise InputError(f"--spurious {spec}: the threshold must be finite")
    if not name.strip():
        raise InputError(f"--spurious {spec}: name a concept of the bank (concept:NAME)")
    return ConceptAttribute(name.strip(), threshold)


def build_cells(
    labels: pd.DataFrame, target: str, attribute: str | Attribute, inputs: Any = None
) -> Cells:
    """Code the target (two values; the larger one is the positive class) and the attribute.

    The positive class is the larger of the two target values in sort order (1 over 0, True over
    False, "male" over "female"); a linear head's logit > 0, or output 1 > output 0, predicts it.
    """
    attr = parse_attribute(attribute) if isinstance(attribute, str) else attribute
    _require_column(labels, target, "--target")
    _require_complete(labels, target)
    target_values = _sorted_values(labels[target])
    if len(target_values) != 2:
        raise InputError(
            f"--target '{target}' must have exactly two values, found {len(target_values)}"
        )
    coded = attr.code(GroupingData(labels, inputs), target)
    return Cells(
        y=(labels[target].to_numpy() == target_values[1]).astype(np.int8),
        attribute=coded.codes,
        target_name=str(target),
        attribute_name=str(coded.name or attr.name),
        target_values=(_display(target_values[0]), _display(target_values[1])),
        attribute_values=coded.values,
        spurious_present=coded.present,
        attribute_spec=coded.spec,
        attribute_scores=coded.scores,
    )
