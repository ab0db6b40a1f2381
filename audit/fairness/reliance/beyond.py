"""A concept's effect beyond stronger ones: its ΔWGA with the edits of the concepts ranked above
it already applied.

**Why.** Once a strong shortcut makes one group fragile (the unmarked circles of a world whose
label leaks through a marker sit near the boundary), *any* edit that nudges margins the right
way repairs that group most, because that is where the borderline samples are. A colour that
pushes a few circles towards "square" then shows ΔWGA ≈ 0.02 with a small p-value although
nothing about it depends on the groups; and a concept whose latents partly encode the marker's
absence repeats a little of the marker's own effect. Both vanish once the marker is removed.
So a concept below a flagged one is also tested **beyond** it: the base state is ``x + e_F``
(``e_F`` the edits of the flagged concepts ranked above it), the effect is
``WGA(x + e_F + e_C) − WGA(x + e_F)`` and its p-value comes from the same relocation null drawn
on that base. Its reported p is the larger of the two (alone and beyond), so the flag needs
both; the concept's ΔWGA and interval stay those of ablating it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.fairness.reliance.columns import RowData
from audit.fairness.reliance.effects import (
    EditSetting,
    ablation_coefficients,
    row_margins,
)
from audit.fairness.reliance.rows import ConceptRow
from audit.fairness.result import BeyondEffect
from audit.fairness.stats import pair_counts


@dataclass(frozen=True)
class Given:
    """Edits applied before the tested concept's: the stronger flagged concepts'."""

    names: tuple[str, ...]
    row: ConceptRow  # their latents together
    data: RowData
    coeff: np.ndarray  # [N, |F|] their edits
    margin: np.ndarray  # [N] margins of x + their edits


@dataclass(frozen=True)
class Beyond:
    """A concept's effect beyond the stronger flagged concepts."""

    given: tuple[str, ...]  # the concepts whose edits were applied first
    delta_wga: float  # WGA(x + e_F + e_C) − WGA(x + e_F)
    wga_after: float
    p: float


def beyond_record(beyond: Beyond | None) -> BeyondEffect | None:
    """The result record (rounded as the rest of the result is, by the serializer)."""
    if beyond is None:
        return None
    return BeyondEffect(beyond.given, beyond.delta_wga, beyond.wga_after, beyond.p)


def _joined(rows: list[ConceptRow], data: list[RowData]) -> tuple[ConceptRow, RowData]:
    """Disjoint concepts as one row (their latents in order) and their columns side by side."""
    joint = ConceptRow(
        tuple(j for r in rows for j in r.latents), None, " + ".join(r.label for r in rows),
        False, "", 0.0,
    )  # fmt: skip
    xu = [d.x_dot_u for d in data]
    return joint, RowData(
        np.concatenate([d.z for d in data], axis=1),
        None if any(x is None for x in xu) else np.concatenate(xu, axis=1),  # type: ignore[arg-type]
    )


def given_edits(s: EditSetting, rows: list[ConceptRow], data: list[RowData]) -> Given:
    """The joint edit of ``rows`` (disjoint concepts) and the margins it leaves."""
    joint, joint_data = _joined(rows, data)
    coeff = ablation_coefficients(s.values, joint, joint_data)
    return Given(
        tuple(r.name or r.label for r in rows), joint, joint_data, coeff,
        row_margins(s, joint, joint_data, coeff),
    )  # fmt: skip


def with_given(given: Given, row: ConceptRow, data: RowData) -> tuple[ConceptRow, RowData]:
    """The given concepts and ``row`` as one row (their latents first)."""
    return _joined([given.row, row], [given.data, data])


def pairs_beyond(s: EditSetting, given: Given, row: ConceptRow, data: RowData) -> np.ndarray:
    """Pair counts (✓✓, ✓✗, ✗✓, ✗✗ per cell) of ``row``'s edit on top of the given edits."""
    joint, joint_data = with_given(given, row, data)
    coeff = np.concatenate([given.coeff, ablation_coefficients(s.values, row, data)], axis=1)
    after = row_margins(s, joint, joint_data, coeff)
    y = s.cells.y
    before_ok = (given.margin > 0) == (y == 1)
    after_ok = (after > 0) == (y == 1)
    return pair_counts(before_ok, after_ok, s.cells.cell, s.cells.n_cells)
