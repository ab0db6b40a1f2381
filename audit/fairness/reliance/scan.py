"""Pass 1 over the audited rows: base margins and, for every latent and every name group, how
many decisions its ablation flips in each stratum (cell × correct before).

For a binary decision a flip turns a correct prediction wrong or a wrong one right, so these
counts are the pair counts of the paired bootstrap: every latent's ΔWGA comes from one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.concepts.activity import group_sums
from audit.fairness.classifiers import Classifier
from audit.fairness.edits import Baseline, EditEffect, NameGroups, ScanChunk, Workspace
from audit.fairness.groups import Cells
from audit.fairness.reliance.codes import KEPT_CODES_BYTES, KeptCodes
from audit.fairness.reliance.rows import ConceptRow
from audit.sae import SparseAutoencoder

Tick = Callable[[int], None] | None


@dataclass(frozen=True)
class Scan:
    """Counts from the all-latent pass.

    ``flips[k, col]``: samples of stratum ``k = 2·cell + correct_before`` whose decision flips
    when column ``col`` is ablated (columns: the ``n`` latents, then the name groups).
    """

    base: Baseline
    flips: np.ndarray  # [2·cells, n + R] int64
    stratum_n: np.ndarray  # [2·cells]
    act_sum: np.ndarray  # [cells, n] float64
    act_count: np.ndarray  # [cells, n] int64
    groups: tuple[tuple[int, ...], ...]
    checked_fraction: float  # share of (sample, latent) pairs the exact pruning evaluated
    # The summed activation of each kept concept on every row, in row order (the same pass's
    # codes, so the concept activity need not encode these rows again).
    kept: tuple[tuple[int, ...], ...] = ()
    kept_sums: np.ndarray | None = None  # [N, len(kept)] float32

    def pairs(self, col: int) -> np.ndarray:
        """``[cells, 4]`` pair counts (✓✓, ✓✗, ✗✓, ✗✗) for one column."""
        flips = self.flips[:, col].reshape(-1, 2)
        n = self.stratum_n.reshape(-1, 2)
        n10 = flips[:, 1]  # correct before, flipped: wrong after
        n01 = flips[:, 0]  # wrong before, flipped: right after
        return np.stack([n[:, 1] - n10, n10, n01, n[:, 0] - n01], axis=1)

    def row_pairs(self, row: ConceptRow) -> np.ndarray:
        if len(row.latents) > 1:
            return self.pairs(self.act_sum.shape[1] + self.groups.index(row.latents))
        return self.pairs(row.latent)


def ablation_values(
    space: Workspace,
    sae: SparseAutoencoder,
    ablation: str,
    tick: Tick = None,
    keep_bytes: int = KEPT_CODES_BYTES,
) -> tuple[Tensor | None, KeptCodes | None]:
    """The value an ablated latent is set to: None for zero, E[z_j] over the audited rows for
    mean (one extra encoding pass). On a CPU that pass also keeps its codes (up to
    ``keep_bytes``) for the scan, which then need not encode the rows again; on an accelerator
    encoding again is cheaper than moving them."""
    if ablation != "mean":
        return None, None
    encoder = sae.column_encoder()
    layout = (space.rows.count, space.chunk)
    kept = KeptCodes(sae.n_latents, keep_bytes, layout) if space.device.type == "cpu" else None
    total = torch.zeros(sae.n_latents, dtype=torch.float64, device=space.device)
    for _, block in space.rows.chunks(space.chunk):
        with torch.no_grad():
            z = encoder(space.tensor(block))
        total += z.sum(0, dtype=torch.float64)
        if kept is not None and not kept.add(z):
            kept = None
        if tick:
            tick(len(block))
    return (total / max(1, space.rows.count)).to(space.dtype), kept


def _chunk(
    space: Workspace, classifier: Classifier, sae: SparseAutoencoder, cells: Cells,
    cell: np.ndarray, lo: int, block: np.ndarray, kept: Tensor | None,
) -> tuple[ScanChunk, np.ndarray]:  # fmt: skip
    """A chunk with its rows sorted by |margin| (the exact pruning needs it, the counts do not
    care); also the margins in row order. ``kept``: the chunk's codes, when already known."""
    x = space.tensor(block)
    with torch.no_grad():
        m = classifier.margin(x)
    m_np = m.cpu().numpy().astype(np.float64)
    order = np.argsort(np.abs(m_np), kind="stable")
    hi = lo + len(block)
    key = 2 * cell[lo:hi] + ((m_np > 0) == (cells.y[lo:hi] == 1))
    order_t = torch.from_numpy(order).to(space.device)
    x, m = x[order_t], m[order_t]
    strata = torch.from_numpy(key[order]).to(space.device)
    onehot = torch.zeros((2 * cells.n_cells, len(block)), device=space.device, dtype=space.dtype)
    onehot[strata, torch.arange(len(block), device=space.device)] = 1.0
    with torch.no_grad():
        z = sae.column_encoder()(x) if kept is None else kept[order_t]
    return ScanChunk(x, m, z, onehot, strata, order), m_np


def scan_latents(
    space: Workspace,
    classifier: Classifier,
    sae: SparseAutoencoder,
    cells: Cells,
    effect: EditEffect,
    values: Tensor | None,
    groups: list[tuple[int, ...]],
    tick: Tick = None,
    keep: tuple[tuple[int, ...], ...] = (),
    codes: KeptCodes | None = None,
) -> Scan:
    """Pass 1: base margins, activation statistics and every column's flip counts; also the
    summed activation of each concept in ``keep`` on every row. ``codes``: the rows' codes
    from the mean pass (same chunks), used instead of encoding the rows again."""
    n, n_strata = sae.n_latents, 2 * cells.n_cells
    dev = space.device
    layout = NameGroups.build(groups, n, dev, space.dtype)
    flips = torch.zeros((n_strata, n + len(groups)), device=dev, dtype=torch.float64)
    act_sum = torch.zeros((n_strata, n), device=dev, dtype=torch.float64)
    act_count = torch.zeros((n_strata, n), device=dev, dtype=torch.float64)
    margins = np.empty(space.rows.count, dtype=np.float64)
    states: dict[str, list[np.ndarray]] = {}
    checked = 0
    cell = cells.cell
    kept_sums = np.zeros((space.rows.count, len(keep)), dtype=np.float32)
    kept_cols = torch.tensor([j for g in keep for j in g], dtype=torch.long, device=dev)
    owner = torch.tensor([c for c, g in enumerate(keep) for _ in g], dtype=torch.long, device=dev)
    if codes is not None and codes.layout != (space.rows.count, space.chunk):
        codes = None  # kept from other chunks than this pass reads: encode
    for index, (lo, block) in enumerate(space.rows.chunks(space.chunk)):
        known = codes.chunk(index).to(space.dtype) if codes is not None else None
        chunk, margins[lo : lo + len(block)] = _chunk(
            space, classifier, sae, cells, cell, lo, block, known
        )
        with torch.no_grad():
            if keep:  # chunk row i is row lo + order[i]
                sums = group_sums(torch.index_select(chunk.z, 1, kept_cols), owner, len(keep))
                kept_sums[lo + chunk.order] = sums.cpu().numpy()
            act_sum += (chunk.onehot @ chunk.z).double()
            # Codes are non-negative for every architecture, so sign(z) is the 0/1 activity.
            act_count += (chunk.onehot @ torch.sign(chunk.z)).double()
            done = effect.scan(chunk, layout, values, flips)
        checked += done.checked
        for key, part in done.state.items():
            states.setdefault(key, []).append(part)
        if tick:
            tick(len(block))
    correct = (margins > 0) == (cells.y == 1)
    stratum_n = np.bincount(2 * cell + correct, minlength=n_strata).astype(np.int64)
    by_cell = (cells.n_cells, 2, n)
    return Scan(
        Baseline(margins, {k: np.concatenate(v) for k, v in states.items()}),
        np.rint(flips.cpu().numpy()).astype(np.int64),
        stratum_n,
        act_sum.cpu().numpy().reshape(by_cell).sum(1),
        np.rint(act_count.cpu().numpy().reshape(by_cell).sum(1)).astype(np.int64),
        tuple(groups),
        checked / max(1, space.rows.count * n),
        tuple(keep),
        kept_sums if keep else None,
    )
