"""The nested loss's sparse pieces as one block-CSR matrix, and the integer helpers it needs
(GPU-friendly counting, fast ``nonzero`` of 0/1 masks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from audit.sae.nested_plan import Piece
from audit.sae.nested_ranks import Ranks

_SAME_SIZE_INT = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def _count_values(values: Tensor, size: int) -> Tensor:
    """How often each of ``0..size-1`` occurs in ``values`` (int64). ``bincount`` on a GPU
    reads the largest value back to the host first; a scatter-add needs no such read."""
    if values.device.type == "cpu":
        return torch.bincount(values, minlength=size)
    return _scatter_count(values, size)


def _scatter_count(values: Tensor, size: int) -> Tensor:
    counts = torch.zeros(size, dtype=torch.int64, device=values.device)
    return counts.scatter_add_(0, values.long(), torch.ones_like(values, dtype=torch.int64))


def _flat_nonzero(mask: Tensor) -> Tensor:
    """Flat positions of the ones of a 0/1 float mask (read as integers: +0.0 is all zero bits,
    and integer ``nonzero`` is about twice as fast as a float one)."""
    return mask.view(_SAME_SIZE_INT[mask.dtype]).view(-1).nonzero().squeeze(1)


class SparseBlocks:
    """All sparse pieces as one CSR matrix whose row ``(slot, b)`` holds piece ``slot`` of row ``b``."""

    def __init__(
        self,
        csr: Tensor,
        pattern: Tensor,
        block_rows: Tensor,
        cols: Tensor,
        values: Tensor,
        top_blocks: list[tuple[Tensor, Tensor]],
        rest_positions: Tensor,
        n: int,
    ) -> None:
        self.csr, self.pattern = csr, pattern
        self.block_rows, self.cols, self.values = block_rows, cols, values
        # The leading slots from the sorted top-k: (columns [B, w], ReLU keep mask [B, w]) each;
        # the other entries by their position in the flattened [B, n] matrix.
        self.top_blocks, self.rest_positions = top_blocks, rest_positions
        self.n = n

    def add_to_rows(self, grad_pre: Tensor, entry_grads: Tensor) -> None:
        """Add per-entry gradients (in block order) into the dense ``[B, n]`` ``grad_pre``."""
        offset = 0
        for cols, keep in self.top_blocks:
            # Row-wise scatter_add is several times faster than a flat index_add on CPU.
            chunk = entry_grads[offset : offset + keep.numel()].view(keep.shape) * keep
            grad_pre.scatter_add_(1, cols, chunk)
            offset += keep.numel()
        if self.rest_positions.numel():
            grad_pre.view(-1).index_add_(0, self.rest_positions, entry_grads[offset:])

    @classmethod
    def build(
        cls,
        pieces: list[Piece],
        ranks: Ranks,
        last: int,
        top: int,
        k_eff: Sequence[int],
    ) -> SparseBlocks:
        pre = ranks.pre
        batch, n = pre.shape
        device = pre.device
        flat = pre.view(-1)
        cols_parts, values_parts, rows_parts, counts_parts, positions_parts = [], [], [], [], []
        top_blocks: list[tuple[Tensor, Tensor]] = []
        listed = labels = None
        if any(p.kind == "prefix" for p in pieces):
            # One list of every code entry, labelled by segment, feeds all the pieces.
            listed = _flat_nonzero(ranks.inside_prefix(last))
            labels = (
                ranks.label(flat.index_select(0, listed), listed // n, last) if last > 0 else None
            )
        for slot, p in enumerate(pieces):
            if listed is None and p.level <= top:
                # add_to_rows reads these blocks first, so they must lead the slots.
                assert slot == len(top_blocks), "sorted top-k pieces must come first"
                rows, cols, values, counts, block = _sorted_topk_block(ranks, p.level, k_eff)
                top_blocks.append(block)
            else:
                rows, cols, values, counts, positions = _listed_block(ranks, p, n, listed, labels)
                positions_parts.append(positions)
            cols_parts.append(cols)
            values_parts.append(values)
            rows_parts.append(rows + slot * batch)
            counts_parts.append(counts)
        values = torch.cat(values_parts)
        cols = torch.cat(cols_parts)
        n_rows = len(pieces) * batch
        crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
        torch.cumsum(torch.cat(counts_parts), 0, out=crow[1:])
        csr = torch.sparse_csr_tensor(crow, cols, values, size=(n_rows, n), check_invariants=False)
        pattern = torch.sparse_csr_tensor(
            crow, cols, torch.ones_like(values), size=(n_rows, n), check_invariants=False
        )
        return cls(
            csr,
            pattern,
            torch.cat(rows_parts),
            cols,
            values,
            top_blocks,
            torch.cat(positions_parts) if positions_parts else cols.new_zeros(0),
            n,
        )

    def transposed(self) -> Tensor:
        """The ``[n, slots·B]`` CSR transpose, built by a stable sort on the column index."""
        # A stable sort on the narrowest integer type that holds a column index (a 16-bit
        # radix sort is ~3× faster than a 64-bit one on CPU).
        key_dtype = torch.int16 if self.n <= torch.iinfo(torch.int16).max else torch.int32
        order = torch.argsort(self.cols.to(key_dtype), stable=True)
        crow = torch.zeros(self.n + 1, dtype=torch.int64, device=self.cols.device)
        torch.cumsum(_count_values(self.cols, self.n), 0, out=crow[1:])
        return torch.sparse_csr_tensor(
            crow,
            self.block_rows.index_select(0, order),
            self.values.index_select(0, order),
            size=(self.n, self.csr.shape[0]),
            check_invariants=False,
        )


def _sorted_topk_block(
    ranks: Ranks, level: int, k_eff: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
    """Segment ``level``'s entries as ranks k_{s-1} .. k_s of the sorted top-k: a fixed width
    per row, no search. Returns its rows, columns, values, per-row counts and (columns, keep)."""
    batch = ranks.pre.shape[0]
    device = ranks.pre.device
    lo_rank = 0 if level == 0 else k_eff[level - 1]
    block_cols = ranks.top_indices[:, lo_rank : k_eff[level]]
    values = ranks.top_values[:, lo_rank : k_eff[level]]
    width = block_cols.shape[1]
    # Row b repeated `width` times (an expand: repeat_interleave may read sizes back).
    rows = torch.arange(batch, device=device)[:, None].expand(batch, width).reshape(-1)
    counts = torch.full((batch,), width, dtype=torch.int64, device=device)
    # Rows with few active latents have entries <= 0 in their top-k: ReLU zeroes them.
    keep = torch.gt(values, 0.0, out=torch.empty_like(values))
    return rows, block_cols.reshape(-1), (values * keep).reshape(-1), counts, (block_cols, keep)


def _listed_block(
    ranks: Ranks, p: Piece, n: int, listed: Tensor | None, labels: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Piece ``p``'s entries found by position (from the shared ``listed`` entries when there
    are, else by a search of its segment). Returns rows, columns, values, per-row counts and
    the flat positions."""
    if listed is not None:
        positions = listed if (p.kind == "prefix" or labels is None) else listed[labels == p.level]
    else:
        positions = _flat_nonzero(ranks.inside_segment(p.level))
    rows = positions // n
    cols = positions - rows * n
    values = ranks.pre.view(-1).index_select(0, positions)
    counts = torch.bincount(rows, minlength=ranks.pre.shape[0])
    return rows, cols, values, counts, positions
