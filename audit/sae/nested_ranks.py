"""Each row's level thresholds for the nested loss (a chain of shrinking top-k calls), and the
masks of the levels and segments they define.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from audit.sae.nested_plan import Piece


class Ranks:
    """Per-row value bounds of the levels, their masks, and the sorted top entries."""

    def __init__(
        self,
        pre: Tensor,
        lo: list[Tensor],
        strict: set[int],
        positive: Tensor,
        top_values: Tensor | None,
        top_indices: Tensor | None,
    ) -> None:
        # Level a's code holds pre >= lo[a] (ReLU folded in: lo >= the smallest positive float).
        self.pre, self.lo, self.strict, self.positive = pre, lo, strict, positive
        self.top_values, self.top_indices = top_values, top_indices  # [B, k_top], descending
        self._inside: dict[int, Tensor] = {}

    def inside_prefix(self, level: int) -> Tensor:
        """0/1 mask of the entries in level ``level``'s code (one comparison, cached)."""
        if level not in self._inside:
            self._inside[level] = (
                torch.ge(self.pre, self.lo[level][:, None], out=torch.empty_like(self.pre))
                if level in self.strict
                else self.positive
            )
        return self._inside[level]

    def inside_segment(self, s: int) -> Tensor:
        """0/1 mask of segment ``s``: in level ``s`` and not in level ``s-1``."""
        if s == 0:
            return self.inside_prefix(0)
        return self.inside_prefix(s) - self.inside_prefix(s - 1)

    def dense_code(self, piece: Piece) -> tuple[Tensor, Tensor]:
        """A piece's code as a dense ``[B, n]`` matrix, and its mask.

        Multiplying by the mask is branch-free; ``masked_fill``/``where`` mispredict on masks
        that are neither mostly true nor mostly false and cost several times as much on a CPU.
        """
        if piece.kind == "prefix":
            mask = self.inside_prefix(piece.level)
            if piece.level not in self.strict:
                return torch.relu(self.pre), mask
        else:
            mask = self.inside_segment(piece.level)
        return self.pre * mask, mask

    def label(self, values: Tensor, rows: Tensor, upto: int) -> Tensor:
        """Segment index of listed entries known to lie in segments ``0..upto``."""
        seg = torch.zeros(values.shape, dtype=torch.int64, device=values.device)
        for s in range(upto):
            seg += values < self.lo[s][rows]
        return seg


def rank_segments(
    pre: Tensor,
    k_eff: Sequence[int],
    strict: list[int],
    last: int,
    top: int,
    positive: Tensor,
) -> Ranks:
    """Thresholds (each row's ``k``-th largest value) for the strict levels.

    A chain of unsorted top-k calls, each inside the previous one's values, is far cheaper
    than one sorted top-k of the largest ``k``. The chain ends with a sorted top-``k_top``
    (with global column indices) when the first segments ``0..top`` are decoded sparsely.
    """
    batch = pre.shape[0]
    thresholds: dict[int, Tensor] = {}
    values, columns = pre, None
    top_values = top_indices = None
    for i in reversed(strict):
        k = k_eff[i]
        if i == top:
            v, j = torch.topk(values, k, dim=1, sorted=True)
            top_values, top_indices = v, (j if columns is None else columns.gather(1, j))
            for s in range(top + 1):
                thresholds[s] = v[:, k_eff[s] - 1]
            break
        v, j = torch.topk(values, k, dim=1, sorted=False)
        if top >= 0:
            columns = j if columns is None else columns.gather(1, j)
        values = v
        thresholds[i] = v.min(dim=1).values
    # Clamping at the smallest positive number folds the ReLU into every lower bound.
    floor = torch.nextafter(pre.new_zeros(()), pre.new_ones(()))
    lo = [
        thresholds[s].clamp_min(floor) if s in thresholds else floor.expand(batch)
        for s in range(last + 1)
    ]
    return Ranks(pre, lo, set(strict), positive, top_values, top_indices)
