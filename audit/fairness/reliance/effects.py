"""What one concept's edit does: margins after the edit, pair counts, ΔWGA and its bootstrap
interval, per-group effects, the steering curve and example rows.

**Which direction reveals a shortcut.** ΔWGA = WGA(after ablation) − WGA(before). If the
classifier uses a concept to push the worst group towards the wrong class (blond hair pushing
blond *men* towards "female"), removing the concept *raises* the worst group's accuracy:
ΔWGA > 0. A concept the worst group legitimately relies on (a beard for blond men) gives
ΔWGA < 0 when removed. Flags are therefore one-sided: ΔWGA ≥ min_dwga with a CI above 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audit.fairness.config import DOSE_ALPHAS
from audit.fairness.edits import Baseline, EditEffect, Workspace
from audit.fairness.groups import Cells
from audit.fairness.reliance.columns import RowData
from audit.fairness.reliance.rows import ConceptRow
from audit.fairness.result import DoseResponse
from audit.fairness.stats import (
    bootstrap_delta_wga,
    delta_wga_from_pairs,
    pair_counts,
    percentile_interval,
)


@dataclass(frozen=True)
class EditSetting:
    """Everything an edit of the audited rows needs: where the rows are, their groups, how the
    classifier responds and its margins before the edit."""

    space: Workspace
    cells: Cells
    effect: EditEffect
    base: Baseline
    values: torch.Tensor | None  # ablation values (None: zero)


@dataclass(frozen=True)
class PairSummary:
    """What a concept's pair counts say: ΔWGA and the per-group effects."""

    delta_wga: float
    wga_after: float
    delta_accuracy: dict[str, float]
    flip_rate_by_group: dict[str, float]
    flip_rate: float
    delta_accuracy_overall: float
    collateral_damage: float | None


def ablation_coefficients(
    values: torch.Tensor | None, row: ConceptRow, data: RowData
) -> np.ndarray:
    """``c = v − z`` for the row's latents."""
    if values is None:
        return -data.z
    v = values[list(row.latents)].cpu().numpy()
    return v[None, :] - data.z


def row_margins(s: EditSetting, row: ConceptRow, data: RowData, coeff: np.ndarray) -> np.ndarray:
    """Margins of every audited row after moving it by ``coeff`` along the row's directions."""
    positions = np.arange(s.space.rows.count)
    xu = None if data.x_dot_u is None else s.space.from_numpy(data.x_dot_u)
    with torch.no_grad():
        out = s.effect.margins(
            s.space, s.base, positions, row.latents, s.space.from_numpy(coeff), xu
        )
    return out.cpu().numpy().astype(np.float64)


def exact_pairs(s: EditSetting, row: ConceptRow, data: RowData) -> tuple[np.ndarray, np.ndarray]:
    """Pair counts and after-ablation margins by decode-and-rerun (or the closed form)."""
    after = row_margins(s, row, data, ablation_coefficients(s.values, row, data))
    y = s.cells.y
    before_ok = (s.base.margin > 0) == (y == 1)
    after_ok = (after > 0) == (y == 1)
    return pair_counts(before_ok, after_ok, s.cells.cell, s.cells.n_cells), after


def bootstrap_ci(pairs: np.ndarray, samples: int, rng: np.random.Generator) -> tuple[float, float]:
    if not (pairs[:, 1].any() or pairs[:, 2].any()):
        return (0.0, 0.0)  # nothing changes: every replicate is exactly 0
    return percentile_interval(bootstrap_delta_wga(pairs, samples, rng))


#: Random streams per concept: the bootstrap, the null, the null beyond stronger concepts.
BOOTSTRAP_STREAM, NULL_STREAM, BEYOND_STREAM = 1, 2, 3


def row_rng(seed: int, stream: int, row: ConceptRow) -> np.random.Generator:
    """A generator per (seed, purpose, concept), so a row's numbers never depend on other rows."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *row.latents]))


def row_interval(
    pairs: np.ndarray, samples: int, seed: int, row: ConceptRow
) -> tuple[float, float]:
    """A concept's ΔWGA interval from its own bootstrap stream: the same numbers wherever it is
    asked for (the flag, the test beyond stronger concepts, the report)."""
    return bootstrap_ci(pairs, samples, row_rng(seed, BOOTSTRAP_STREAM, row))


def pair_summary(pairs: np.ndarray, cells: Cells) -> PairSummary:
    """ΔWGA, WGA after, Δaccuracy and flip rates per cell, collateral damage from pair counts."""
    n = pairs.sum(1)
    keep = n > 0
    before = np.where(keep, (pairs[:, 0] + pairs[:, 1]) / np.maximum(n, 1), np.nan)
    after = np.where(keep, (pairs[:, 0] + pairs[:, 2]) / np.maximum(n, 1), np.nan)
    flips = pairs[:, 1] + pairs[:, 2]  # binary decision: correctness changes iff it flips
    names = [cells.cell_name(c) for c in range(cells.n_cells)]
    present = [c for c in range(cells.n_cells) if keep[c]]
    without = _without_spurious_cells(cells)
    m = n[without].sum()
    return PairSummary(
        delta_wga=delta_wga_from_pairs(pairs),
        wga_after=float(np.nanmin(after)),
        delta_accuracy={names[c]: float(after[c] - before[c]) for c in present},
        flip_rate_by_group={names[c]: float(flips[c] / n[c]) for c in present},
        flip_rate=float(flips.sum() / max(1, n.sum())),
        delta_accuracy_overall=float((pairs[:, 2].sum() - pairs[:, 1].sum()) / max(1, n.sum())),
        collateral_damage=(
            float((pairs[without, 1].sum() - pairs[without, 2].sum()) / m) if m else None
        ),
    )


def _without_spurious_cells(cells: Cells) -> np.ndarray:
    """Cells whose attribute value is not the spurious one (``cells.spurious_present``)."""
    attr = np.arange(cells.n_cells) % cells.n_values
    if cells.spurious_present is None:
        return np.zeros(cells.n_cells, dtype=bool)
    return attr != cells.spurious_present


def cell_accuracies(cells: Cells, pred: np.ndarray) -> np.ndarray:
    n = np.bincount(cells.cell, minlength=cells.n_cells)
    k = np.bincount(
        cells.cell, weights=(pred == cells.y).astype(np.float64), minlength=cells.n_cells
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / np.maximum(n, 1), np.nan)


def dose_response(
    s: EditSetting, row: ConceptRow, data: RowData, name: str | None, flagged: bool
) -> DoseResponse:
    """Steering ``z_j := α z_j`` for α = 0 … 3: WGA and every cell's accuracy per α."""
    wga, per_cell, overall = [], [], []
    for alpha in DOSE_ALPHAS:
        if alpha == 1.0:
            margins = s.base.margin
        else:
            margins = row_margins(s, row, data, (alpha - 1.0) * data.z)
        pred = (margins > 0).astype(np.int8)
        acc = cell_accuracies(s.cells, pred)
        wga.append(float(np.nanmin(acc)))
        per_cell.append(acc)
        overall.append(float((pred == s.cells.y).mean()))
    per_cell_arr = np.array(per_cell)
    return DoseResponse(
        label=row.label,
        latents=row.latents,
        name=name,
        flagged=flagged,
        alphas=tuple(float(a) for a in DOSE_ALPHAS),
        worst_group_accuracy=tuple(wga),
        accuracy=tuple(overall),
        accuracy_by_group={
            s.cells.cell_name(c): tuple(float(v) for v in per_cell_arr[:, c])
            for c in range(s.cells.n_cells)
            if np.isfinite(per_cell_arr[:, c]).all()
        },
    )


def most_activating(data: RowData, k: int) -> list[int]:
    """Positions of the ``k`` rows where the concept is most active (ties: first row first)."""
    total = data.z.sum(1)
    order = np.lexsort((np.arange(total.size), -total))
    return [int(i) for i in order[:k] if total[i] > 0]


def top_examples(
    base: Baseline, cells: Cells, data: RowData, after: np.ndarray, worst_cell: int, k: int = 6
) -> tuple[list[int], list[int]]:
    """Positions of the top-activating rows and of flipped rows (worst group first, largest
    margin change first)."""
    top = most_activating(data, k)
    flipped = np.nonzero((after > 0) != (base.margin > 0))[0]
    if flipped.size:
        change = np.abs(after[flipped] - base.margin[flipped])
        in_worst = cells.cell[flipped] == worst_cell
        order = np.lexsort((flipped, -change, ~in_worst))
        flipped = flipped[order]
    return top, [int(i) for i in flipped[:k]]
