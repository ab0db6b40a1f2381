"""Group metrics over the target × attribute cells.

Everything here works on integer-coded arrays:

* ``y`` — the target as 0/1 (1 = the positive class),
* ``pred`` — the classifier's 0/1 predictions,
* ``attribute`` — the spurious attribute's value index ``0 … A−1``,
* ``cell`` — the group cell index ``y · A + attribute`` (cells ordered by target, then attribute).

The semantics match fairlearn (``MetricFrame`` with both columns as sensitive features for the
per-cell accuracies; ``equalized_odds_difference`` and ``demographic_parity_difference`` with the
attribute as the sensitive feature; ``method="between_groups"``, ``agg="worst_case"``); a test
checks the agreement. One difference: where a value of the attribute has rows of one class only,
its FPR (or TPR) is undefined and left out of that gap, whereas fairlearn counts it as 0. That
happens only when a cell is empty, and then every gated group check is skipped anyway.
fairlearn itself is only a test dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from audit.fairness.result import AttributeGroup, Group, GroupMetrics
from audit.intervals import Z_95 as Z_95  # re-exported: the group metrics' intervals
from audit.intervals import wilson_interval as wilson_interval


def cell_counts(
    cell: np.ndarray, correct: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, correct)`` per cell.

    >>> cell_counts(np.array([0, 0, 1, 2]), np.array([1, 0, 1, 1]), 3)
    (array([2, 1, 1]), array([1, 1, 1]))
    """
    n = np.bincount(cell, minlength=n_cells)
    k = np.bincount(cell, weights=correct.astype(np.float64), minlength=n_cells)
    return n.astype(np.int64), np.rint(k).astype(np.int64)


def worst_group_accuracy(accuracy: np.ndarray) -> float:
    """WGA: the lowest cell accuracy (empty cells, NaN, are ignored).

    >>> worst_group_accuracy(np.array([0.9, 0.6, np.nan, 0.8]))
    0.6
    """
    return float(np.nanmin(accuracy))


def accuracy_gap(accuracy: np.ndarray) -> float:
    """Highest minus lowest cell accuracy (fairlearn: ``MetricFrame.difference()``).

    >>> round(accuracy_gap(np.array([0.9, 0.6, 0.8])), 6)
    0.3
    """
    return float(np.nanmax(accuracy) - np.nanmin(accuracy))


def rates_by_attribute(
    y: np.ndarray, pred: np.ndarray, attribute: np.ndarray, n_values: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(TPR, FPR, selection rate)`` per attribute value; NaN where undefined.

    TPR = P(ŷ=1 | y=1, A=a), FPR = P(ŷ=1 | y=0, A=a), selection rate = P(ŷ=1 | A=a).

    >>> tpr, fpr, sel = rates_by_attribute(
    ...     np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 1, 0, 1, 0]),
    ...     np.array([0, 0, 0, 0, 1, 1]), 2)
    >>> tpr.tolist(), fpr.tolist(), sel.tolist()
    ([0.5, 1.0], [0.5, 0.0], [0.5, 0.5])
    """
    out = []
    for mask_y in (y == 1, y == 0, np.ones_like(y, dtype=bool)):
        n = np.bincount(attribute[mask_y], minlength=n_values).astype(np.float64)
        k = np.bincount(
            attribute[mask_y], weights=pred[mask_y].astype(np.float64), minlength=n_values
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(n > 0, k / np.maximum(n, 1), np.nan))
    return out[0], out[1], out[2]


def _spread(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) if finite.size else 0.0


def equalized_odds_difference(tpr: np.ndarray, fpr: np.ndarray) -> float:
    """max(TPR gap, FPR gap) across the attribute's values (the target is the label).

    fairlearn's ``equalized_odds_difference(..., method="between_groups", agg="worst_case")``,
    except that an undefined rate (NaN: no row of that class has that value) is left out of its
    gap rather than counted as 0.

    >>> equalized_odds_difference(np.array([0.5, 1.0]), np.array([0.5, 0.0]))
    0.5
    """
    return max(_spread(tpr), _spread(fpr))


def demographic_parity_difference(selection_rate: np.ndarray) -> float:
    """Largest minus smallest selection rate P(ŷ=1 | A=a) (informational).

    >>> demographic_parity_difference(np.array([0.25, 0.75]))
    0.5
    """
    return _spread(selection_rate)


@dataclass(frozen=True)
class Cells:
    """The target × attribute cells of an audit and the coded labels of its rows."""

    y: np.ndarray  # [N] int8, 0/1
    attribute: np.ndarray  # [N] int16, 0 … A−1
    target_name: str
    attribute_name: str
    target_values: tuple[str, str]  # (negative, positive) as shown to users
    attribute_values: tuple[str, ...]
    spurious_present: int | None  # the attribute value meaning "has the spurious attribute"
    attribute_spec: str | None = None  # the attribute as resolved (concept:red>0.41), if resolved
    # A concept attribute's summed activation while its cut is still to be chosen on the
    # audited rows (audit.fairness.attributes.cut_on_audited_rows); None otherwise.
    attribute_scores: np.ndarray | None = None

    @property
    def n_values(self) -> int:
        return len(self.attribute_values)

    @property
    def n_cells(self) -> int:
        return 2 * self.n_values

    @property
    def cell(self) -> np.ndarray:
        return self.y.astype(np.int64) * self.n_values + self.attribute.astype(np.int64)

    def cell_target(self, c: int) -> int:
        return c // self.n_values

    def cell_attribute(self, c: int) -> int:
        return c % self.n_values

    def cell_name(self, c: int) -> str:
        return (
            f"{self.target_name}={self.target_values[self.cell_target(c)]}, "
            f"{self.attribute_name}={self.attribute_values[self.cell_attribute(c)]}"
        )

    def value_keys(self) -> tuple[str, ...]:
        """Every ``COLUMN=VALUE`` a group name is made of (what ``--class-names`` may name)."""
        return tuple(f"{self.target_name}={v}" for v in self.target_values) + tuple(
            f"{self.attribute_name}={v}" for v in self.attribute_values
        )

    def cell_labels(self) -> np.ndarray:
        """The target (0/1) of each cell."""
        return np.arange(self.n_cells) // self.n_values

    def subset(self, rows: np.ndarray) -> Cells:
        """The same cells for some of the rows."""
        scores = None if self.attribute_scores is None else self.attribute_scores[rows]
        return replace(
            self, y=self.y[rows], attribute=self.attribute[rows], attribute_scores=scores
        )


def group_report(cells: Cells, pred: np.ndarray) -> GroupMetrics:
    """Per-cell and per-attribute-value rates and the headline metrics of 0/1 predictions."""
    correct = pred == cells.y
    n, k = cell_counts(cells.cell, correct, cells.n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    tpr, fpr, sel = rates_by_attribute(cells.y, pred, cells.attribute, cells.n_values)
    worst = int(np.nanargmin(acc))
    return GroupMetrics(
        groups=_cell_groups(cells, pred, n, k, acc),
        # Cells with no rows (e.g. no blond men in the audited split): not listed in ``groups``;
        # every check that depends on all cells is skipped rather than passed.
        empty_groups=tuple(cells.cell_name(c) for c in range(cells.n_cells) if n[c] == 0),
        attribute_groups=_attribute_groups(cells, tpr, fpr, sel),
        accuracy=float(correct.mean()) if correct.size else 0.0,
        worst_group=cells.cell_name(worst),
        worst_group_accuracy=worst_group_accuracy(acc),
        accuracy_gap=accuracy_gap(acc),
        equalized_odds_difference=equalized_odds_difference(tpr, fpr),
        demographic_parity_difference=demographic_parity_difference(sel),
    )


def _cell_groups(
    cells: Cells, pred: np.ndarray, n: np.ndarray, k: np.ndarray, acc: np.ndarray
) -> tuple[Group, ...]:
    selected = np.bincount(cells.cell, weights=pred.astype(np.float64), minlength=cells.n_cells)
    groups = []
    for c in range(cells.n_cells):
        if n[c] == 0:
            continue
        positive = cells.cell_target(c) == 1
        groups.append(
            Group(
                name=cells.cell_name(c),
                cell=c,
                target=cells.target_values[cells.cell_target(c)],
                attribute=cells.attribute_values[cells.cell_attribute(c)],
                n=int(n[c]),
                correct=int(k[c]),
                accuracy=float(acc[c]),
                ci=wilson_interval(int(k[c]), int(n[c])),
                selection_rate=float(selected[c] / n[c]),
                # Within a cell the label is constant: TPR is defined for positive cells only,
                # FPR for negative ones (fairlearn returns NaN for the other; we write null).
                tpr=float(acc[c]) if positive else None,
                fpr=None if positive else float(1 - acc[c]),
            )
        )
    return tuple(groups)


def _attribute_groups(
    cells: Cells, tpr: np.ndarray, fpr: np.ndarray, sel: np.ndarray
) -> tuple[AttributeGroup, ...]:
    def rate(values: np.ndarray, a: int) -> float | None:
        return None if np.isnan(values[a]) else float(values[a])

    counts = np.bincount(cells.attribute, minlength=cells.n_values)
    return tuple(
        AttributeGroup(
            name=f"{cells.attribute_name}={cells.attribute_values[a]}",
            value=cells.attribute_values[a],
            n=int(counts[a]),
            tpr=rate(tpr, a),
            fpr=rate(fpr, a),
            selection_rate=rate(sel, a),
        )
        for a in range(cells.n_values)
        if counts[a] > 0
    )
