"""The decode plan of the nested top-k loss: which pieces are decoded, and how.

:func:`plan_nested_step` reads a few integers of a batch (the largest number of positive
pre-activations in a row, and each level's number of entries) and writes
every level's reconstruction as a signed sum of *pieces* (segments and whole level codes,
see :mod:`audit.sae.nested`), each decoded densely or sparsely, whichever its estimated cost
makes cheaper. The costs differ by device (:func:`plan_costs`): on a CPU a sparse entry costs
about 10 dense elements; on a GPU about 300, and sparse pieces there come only from the sorted
top-k, whose fixed width per row needs no size read back from the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

# A sparse (CSR) decode costs about this many times a dense one per non-zero entry on a
# 2-core CPU (measured: 4096×4096×512 dense 57 ms; CSR with 1024 nnz/row 176 ms).
SPARSE_COST_FACTOR = 10.0
# On a GPU a dense decode runs on the tensor cores while a sparse one gathers a d-vector per
# entry from memory. Measured on an H200 (benchmarks/gpu_check.py's calibration, 2026-12-04):
# CSR costs 121× a dense entry at 64 entries per row, 85× at 256. With the paper's shapes the
# step was fastest at 100 among 300, 100 and 30 (init 23.7 ms against 25.7 ms at 300).
CUDA_SPARSE_COST_FACTOR = 100.0
# A dense segment needs two masks, a dense prefix (a level's whole code) one comparison (none
# for the last level, whose mask is ``pre > 0``): small extra costs, in units of dense decodes.
DENSE_SEGMENT_EXTRA = 0.1
PREFIX_MASK_EXTRA = 0.05


class Piece(NamedTuple):
    """A part of some levels' codes, decoded once and added into each of their reconstructions."""

    kind: str  # "prefix": the whole code of level `level`; "segment": segment `level` only
    level: int
    first: int  # the piece enters the reconstructions of levels first .. stop-1,
    stop: int
    sign: int  # with this sign
    nnz: int
    dense: bool


class Plan(NamedTuple):
    """Every level as a signed sum of pieces."""

    anchors: tuple[int, ...]  # levels whose whole code is decoded (their "prefix" piece)
    skips: tuple[int, ...]  # per anchor: the segment of the gap below it that is never decoded
    pieces: list[Piece]


def _piece_cost(
    nnz: int, numel: int, dense_extra: float, factor: float | None = None
) -> tuple[float, bool]:
    """Estimated decode cost (1 = a dense decode) and whether the piece is decoded densely."""
    if nnz == 0:
        return 0.0, False
    factor = SPARSE_COST_FACTOR if factor is None else factor
    sparse = factor * nnz / max(1, numel)
    return (sparse, False) if sparse < 1.0 else (1.0 + dense_extra, True)


def _prefix_cost(
    level: int, last: int, nnz: int, numel: int, strict: set[int], factor: float | None = None
) -> tuple[float, bool]:
    """Cost of decoding level ``level``'s whole code; only the last level's is ever listed
    sparsely, the others are dense."""
    extra = PREFIX_MASK_EXTRA if level in strict else 0.0
    if level == last:
        return _piece_cost(nnz, numel, extra, factor)
    return 1.0 + extra, True


def _plan_pieces(
    last: int,
    seg_nnz: list[int],
    level_nnz: list[int],
    numel: int,
    strict: set[int],
    factor: float | None = None,
    listed: bool = True,
) -> Plan:
    """Write levels ``0..last`` as signed sums of pieces, minimising the estimated decode cost.

    Some levels are *anchors*: their whole code is decoded (dense, or sparse for the last one).
    Between two anchors ``p < a`` one segment ``j`` is skipped: levels ``p+1 .. j-1`` are heads
    (anchor ``p`` plus segments), levels ``j .. a-1`` tails (anchor ``a`` minus segments); above
    the last anchor every level is a head. Dynamic programming over the anchor sets.

    ``listed=False`` allows sparse pieces only where they come from the sorted top-k (strict
    segments): their entries need no ``nonzero``, whose output size must be read by the host.
    """
    dense_only = float("inf")
    seg = [
        _piece_cost(c, numel, DENSE_SEGMENT_EXTRA, factor if listed or s in strict else dense_only)
        for s, c in enumerate(seg_nnz)
    ]

    def prefix(a: int) -> tuple[float, bool]:
        return _prefix_cost(a, last, level_nnz[a], numel, strict, factor if listed else dense_only)

    def gap(p: int, a: int) -> tuple[float, int]:
        costs = [seg[s][0] for s in range(p + 1, a + 1)]
        worst = max(range(len(costs)), key=costs.__getitem__)
        return sum(costs) - costs[worst], p + 1 + worst

    anchors, skips = _best_anchors(last, [c for c, _ in seg], lambda a: prefix(a)[0], gap)
    pieces: list[Piece] = []
    prev = -1
    stops = [*skips[1:], last + 1][: len(anchors)]  # anchor t feeds levels skips[t] .. stop-1
    for a, j, stop in zip(anchors, skips, stops, strict=True):
        pieces.append(Piece("prefix", a, j, stop, 1, level_nnz[a], prefix(a)[1]))
        for s in range(prev + 1, a + 1):
            if s < j:
                pieces.append(Piece("segment", s, s, j, 1, seg_nnz[s], seg[s][1]))
            elif s > j:
                pieces.append(Piece("segment", s, j, s, -1, seg_nnz[s], seg[s][1]))
        prev = a
    for s in range(prev + 1, last + 1):
        pieces.append(Piece("segment", s, s, last + 1, 1, seg_nnz[s], seg[s][1]))
    return Plan(tuple(anchors), tuple(skips), [p for p in pieces if p.nnz > 0])


def _best_anchors(
    last: int,
    seg_cost: list[float],
    prefix_cost: Callable[[int], float],
    gap: Callable[[int, int], tuple[float, int]],
) -> tuple[list[int], list[int]]:
    """The cheapest anchors of levels ``0..last`` and the segment skipped below each one
    (dynamic programming over the anchor sets, then the path read back)."""
    inf = float("inf")
    best = [0.0] + [inf] * (last + 1)  # best[a + 1]: levels 0..a with an anchor at a
    back: list[tuple[int, int]] = [(-1, -1)] * (last + 2)
    for a in range(last + 1):
        for p in range(-1, a):
            cost, skip = gap(p, a)
            total = best[p + 1] + cost + prefix_cost(a)
            if total < best[a + 1] - 1e-12:
                best[a + 1], back[a + 1] = total, (p, skip)
    final, anchor = inf, -1
    for p in range(-1, last + 1):
        total = best[p + 1] + sum(seg_cost[s] for s in range(p + 1, last + 1))
        if total < final - 1e-12:
            final, anchor = total, p
    anchors: list[int] = []
    skips: list[int] = []
    while anchor >= 0:
        anchors.insert(0, anchor)
        anchor, skip = back[anchor + 1]
        skips.insert(0, skip)
    return anchors, skips


class NestedStep(NamedTuple):
    """What the planner decided for one batch (see :func:`plan_nested_step`)."""

    k_eff: tuple[int, ...]  # the levels' k, capped at n
    last: int  # levels from `last` on share one code (their k covers every row's active count)
    strict: list[int]  # levels whose k is below some row's active count (they need a threshold)
    plan: Plan
    sparse_pieces: list[Piece]  # the plan's sparse pieces, in block order
    top: int  # segments 0..top of the sparse pieces come from one sorted top-k (-1: none)
    active: Tensor  # [B] positive pre-activations per row


def plan_costs(device: torch.device) -> tuple[float, bool]:
    """The planner's sparse cost factor on ``device``, and whether sparse pieces may list
    their entries with ``nonzero`` (on a CPU; elsewhere that would read its size back to the
    host, so only the fixed-width blocks of the sorted top-k are sparse)."""
    if device.type == "cpu":
        return SPARSE_COST_FACTOR, True
    return CUDA_SPARSE_COST_FACTOR, False


def plan_nested_step(pre: Tensor, positive: Tensor, k_list: Sequence[int]) -> NestedStep:
    """Plan the decode of one batch from its pre-activations and their 0/1 positive mask.

    The plan needs a few integers per batch (the largest active count and each level's number
    of entries); they are read from the device in one transfer, the step's only one.
    """
    batch, n = pre.shape
    k_eff = tuple(min(k, n) for k in k_list)
    active = positive.sum(1).long()
    # Entries per level follow from the active counts alone (ties aside): Σ_b min(active_b, k).
    if batch:
        stats = torch.stack([active.max(), *(active.clamp(max=k).sum() for k in k_eff)]).tolist()
    else:
        stats = [0] * (len(k_eff) + 1)
    active_max, level_counts = int(stats[0]), [int(c) for c in stats[1:]]
    last = next((i for i, k in enumerate(k_eff) if k >= active_max), len(k_eff) - 1)
    strict = [i for i in range(last + 1) if k_eff[i] < active_max]
    counts = level_counts[: last + 1]
    seg_nnz = [counts[0]] + [counts[i] - counts[i - 1] for i in range(1, last + 1)]
    factor, listed = plan_costs(pre.device)
    plan = _plan_pieces(last, seg_nnz, counts, pre.numel(), set(strict), factor, listed)
    sparse_pieces = [p for p in plan.pieces if not p.dense]
    sparse_segments = {p.level for p in sparse_pieces if p.kind == "segment"}
    top = -1
    if listed:
        # The first segments, when sparse, come straight from one sorted top-k.
        prefix_sparse = any(p.kind == "prefix" for p in sparse_pieces)
        while not prefix_sparse and top + 1 in sparse_segments and top + 1 in strict:
            top += 1
    elif sparse_segments:
        # Without listed entries every sparse piece is a strict segment: all from the top-k.
        top = max(sparse_segments)
    # Those come first in the sparse blocks, in level order (stable sort).
    sparse_pieces.sort(key=lambda p: not (p.kind == "segment" and p.level <= top))
    return NestedStep(k_eff, last, strict, plan, sparse_pieces, top, active)
