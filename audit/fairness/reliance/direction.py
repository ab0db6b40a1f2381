"""The attribute itself, without the SAE: how much the worst group gains when the embeddings
lose their component along the attribute's direction.

Concept reliance asks which named concept carries a shortcut; this asks how large the
shortcut is at all. When it is large and no concept carries it, the bank does not name what
does (the shortcut sits in unnamed latents, or is spread over many) — a report that only
listed concepts would read as "no shortcut".

* **Directions** (cross-fitted): the audited rows are split into two seeded halves, each
  target × attribute cell in half. On one half, for each class ``t`` and each attribute value
  ``v`` after the first, ``δ_tv = mean(x | t, v) − mean(x | t, v₀)`` (classes with rows in
  both cells); ``d_v`` = the mean of ``δ_tv`` over those classes: the attribute's shift
  *within* a class, so the target's own direction is not removed with it. ``U``: an
  orthonormal basis of the ``d_v`` (one direction for a binary attribute). The span does not
  depend on which value is first.
* **Edit**: the rows of the other half become ``x' = x − ((x − m) U) Uᵀ`` with ``m`` the
  first half's mean embedding: their coordinates along ``U`` are set to the mean, as mean
  ablation sets a latent to its mean. The classifier reruns on ``x'``; each row's decision
  before and after gives the pair counts of the concept findings, and the same ΔWGA, paired
  bootstrap interval and per-cell figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audit.fairness.classifiers import Classifier
from audit.fairness.edits import Workspace
from audit.fairness.groups import Cells
from audit.fairness.stats import pair_counts

#: Random streams of the halves and of the interval (the concepts' bootstrap, null and beyond
#: streams are 1–3): distinct, so the split and the resampling never draw the same numbers.
HALVES_STREAM, DIRECTION_BOOTSTRAP_STREAM = 4, 5


@dataclass(frozen=True)
class DirectionEdit:
    """What removing the attribute's direction did to each audited row."""

    pairs: np.ndarray  # [cells, 4] (✓✓, ✓✗, ✗✓, ✗✗)
    directions: int  # dimensions removed (the smaller of the two halves' bases)


def halves(cell: np.ndarray, seed: int) -> np.ndarray:
    """``[rows]`` 0/1: a seeded split into two halves, stratified by ``cell``: every cell is
    split in half (an odd cell's extra row falls on a seeded side), so both halves estimate
    every cell's mean — a small cell is never left whole on one side. (Not scikit-learn's
    ``StratifiedKFold``, which the surrogate's cross-fit uses: it warns about one-row cells and
    refuses when every cell has one row, both normal here.)

    >>> half = halves(np.array([0, 0, 0, 0, 1, 1, 2]), seed=0)
    >>> [int(half[:4].sum()), int(half[4:6].sum())]  # two of each even cell on each side
    [2, 1]
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, HALVES_STREAM]))
    order = rng.permutation(len(cell))
    by_cell = order[np.argsort(cell[order], kind="stable")]  # each cell's rows, shuffled
    sorted_cells = cell[by_cell]
    first = np.searchsorted(sorted_cells, sorted_cells)  # where each row's cell starts
    side = rng.integers(0, 2, int(cell.max()) + 1 if len(cell) else 0)
    half = np.empty(len(cell), dtype=np.int64)
    half[by_cell] = (np.arange(len(cell)) - first + side[sorted_cells]) % 2
    return half


def attribute_basis(sums: np.ndarray, counts: np.ndarray, n_values: int) -> np.ndarray:
    """``[d, k]`` orthonormal basis of the attribute's within-class mean differences, from
    per-cell sums ``[2·A, d]`` and counts ``[2·A]`` (cell ``t·A + v``).

    >>> sums = np.array([[0.0, 1.0], [3.0, 1.0], [2.0, 2.0], [5.0, 2.0]])  # one row per cell
    >>> u = attribute_basis(sums, np.ones(4), n_values=2)  # in both classes v shifts x by +3 on axis 0
    >>> (u @ u.T).round(6).tolist()  # the projection onto that axis
    [[1.0, 0.0], [0.0, 0.0]]
    """
    means = sums / np.maximum(counts, 1)[:, None]
    shifts = []
    for value in range(1, n_values):
        per_class = [
            means[t * n_values + value] - means[t * n_values]
            for t in (0, 1)
            if counts[t * n_values + value] > 0 and counts[t * n_values] > 0
        ]
        if per_class:
            shifts.append(np.mean(per_class, axis=0))
    if not shifts:
        return np.zeros((sums.shape[1], 0))
    q, r = np.linalg.qr(np.stack(shifts, axis=1))
    scale = np.abs(np.diag(r))
    return q[:, scale > 1e-9 * max(float(scale.max()), 1e-30)]


def remove_attribute_direction(
    space: Workspace,
    classifier: Classifier,
    cells: Cells,
    base_margin: np.ndarray,
    seed: int,
) -> DirectionEdit | None:
    """Pair counts of each row's decision before (``base_margin``) and after its embedding
    loses the attribute's direction, estimated on the other half; None when no class has
    rows of two attribute values in both halves."""
    n, n_cells = space.rows.count, cells.n_cells
    cell = cells.cell
    half = halves(cell, seed)
    sums: np.ndarray | None = None  # [half, cell, d], sized by the first block
    counts = np.zeros((2, n_cells))
    for lo, block in space.rows.chunks(space.chunk):
        x = np.asarray(block, dtype=np.float64)
        if sums is None:
            sums = np.zeros((2, n_cells, x.shape[1]))
        key = half[lo : lo + len(x)] * n_cells + cell[lo : lo + len(x)]
        onehot = np.zeros((2 * n_cells, len(x)))
        onehot[key, np.arange(len(x))] = 1.0
        sums += (onehot @ x).reshape(2, n_cells, -1)
        counts += np.bincount(key, minlength=2 * n_cells).reshape(2, n_cells)
    if sums is None:
        return None
    bases = [attribute_basis(sums[h], counts[h], cells.n_values) for h in (0, 1)]
    if min(b.shape[1] for b in bases) == 0:
        return None
    # Rows of half h are edited with the other half's basis and mean.
    edits = [
        (
            space.from_numpy(bases[1 - h]),
            space.from_numpy(sums[1 - h].sum(0) / max(counts[1 - h].sum(), 1)),
        )
        for h in (0, 1)
    ]
    after = np.empty(n, dtype=np.float64)
    for lo, block in space.rows.chunks(space.chunk):
        x = space.tensor(block)
        rows_half = torch.from_numpy(half[lo : lo + len(block)]).to(x.device)
        edited = x.clone()
        for h, (basis, mean) in enumerate(edits):
            mask = rows_half == h
            part = x[mask]
            edited[mask] = part - ((part - mean) @ basis) @ basis.T
        with torch.no_grad():
            after[lo : lo + len(block)] = classifier.margin(edited).double().cpu().numpy()
    positive = cells.y == 1
    pairs = pair_counts((base_margin > 0) == positive, (after > 0) == positive, cell, n_cells)
    return DirectionEdit(pairs, int(min(b.shape[1] for b in bases)))
