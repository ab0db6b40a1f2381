"""Fast nested top-k reconstruction loss (the Matryoshka SAE training objective).

With levels ``k_1 < … < k_h``, level ``i`` keeps the ``k_i`` largest pre-activations of each
row (then ReLU) and decodes them; the loss is ``Σ_i α_i ℓ(x̃, x̂_i) / Σ_i α_i``. The naive way
(:func:`naive_nested_loss`) runs one top-k, one dense ``[B, n]`` code and one full decode per
level, forward and backward: ``h`` times the work of a single SAE.

The levels are nested: level ``i``'s code is level ``i−1``'s plus the entries ranked
``k_{i−1}+1 … k_i`` (a *segment*). :func:`nested_topk_loss` therefore

1. finds each row's level thresholds (the ``k_i``-th largest value) with shrinking
   unsorted top-k calls, and labels every positive entry with its segment;
2. stops at the first level whose ``k`` covers every row's active count: all later levels
   have the same code, so they cost nothing;
3. writes each level as a signed sum of *pieces* (segments, and the full code ``F`` of the
   last distinct level) — heads ``x̂_i = b + Σ_{s≤i} C_s`` for small ``i`` and tails
   ``x̂_i = b + F − Σ_{s>i} C_s`` for large ``i`` — choosing the split that skips the most
   expensive segment;
4. decodes each piece sparsely (one block-CSR matmul for all sparse pieces) or densely,
   whichever the piece's density makes cheaper, and back-propagates by hand: a piece's
   upstream gradient is the signed sum of the level gradients it feeds.

The result equals the naive loss and gradients to floating-point tolerance (tested), except
that exact ties at a level's threshold are all kept (a plain top-k keeps an arbitrary subset;
continuous data has no such ties).

Both losses average squared errors over the batch **and the dimensions** (``mse``), or use
the per-sample normalised error ``‖x̃_b − x̂_b‖² / ‖x̃_b‖²`` averaged over the batch (``nmse``;
``x̃`` is mean-centred, so the denominator is the sample's variance around the data mean).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

# A sparse (CSR) decode costs about this many times a dense one per non-zero entry on a
# 2-core CPU (measured: 4096×4096×512 dense 57 ms; CSR with 1024 nnz/row 176 ms).
SPARSE_COST_FACTOR = 10.0
# Rows per chunk are chosen so a [rows, n] matrix has about this many entries (32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class NestedLossOutput(NamedTuple):
    loss: Tensor  # scalar, differentiable
    level_losses: Tensor  # [h] per-level reconstruction losses (detached)
    x_hat: Tensor  # [B, d] reconstruction of the last level, preprocessed space (detached)
    pre: Tensor  # [B, n] pre-activations (differentiable, for auxiliary losses)
    active: Tensor  # [B] non-zero latents per row in the last level's code
    fired: Tensor  # [n] bool, latents non-zero somewhere in the batch (last level)


def level_sample_weights(x_tilde: Tensor, loss_kind: str) -> Tensor:
    """Per-sample factor ``w_b`` so that a level's loss is ``Σ_b w_b ‖x̃_b − x̂_b‖²``."""
    batch, dim = x_tilde.shape
    if loss_kind == "mse":
        return torch.full((batch,), 1.0 / (batch * dim), dtype=x_tilde.dtype, device=x_tilde.device)
    if loss_kind == "nmse":
        denom = x_tilde.pow(2).sum(1).clamp_min(torch.finfo(x_tilde.dtype).tiny)
        return 1.0 / (batch * denom)
    raise ValueError(f"unknown loss {loss_kind!r}; use 'mse' or 'nmse'")


def naive_nested_loss(
    pre: Tensor,
    x_tilde: Tensor,
    W_dec: Tensor,
    b_pre: Tensor,
    k_list: Sequence[int],
    level_weights: Sequence[float],
    loss_kind: str = "mse",
) -> tuple[Tensor, Tensor]:
    """The reference computation: one top-k, dense code and full decode per level.

    Returns ``(loss, level_losses)``; differentiable through ``autograd``.
    """
    sample_w = level_sample_weights(x_tilde, loss_kind)
    level_losses = []
    for k in k_list:
        values, indices = torch.topk(pre, min(k, pre.shape[1]), dim=-1)
        code = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        x_hat = code @ W_dec + b_pre
        level_losses.append(((x_hat - x_tilde).pow(2).sum(1) * sample_w).sum())
    stacked = torch.stack(level_losses)
    weights = torch.as_tensor(level_weights, dtype=stacked.dtype, device=stacked.device)
    return (stacked * weights).sum() / weights.sum(), stacked.detach()


def nested_topk_loss(
    x_tilde: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    W_dec: Tensor,
    b_pre: Tensor,
    k_list: Sequence[int],
    level_weights: Sequence[float],
    loss_kind: str = "mse",
    chunk_elements: int = CHUNK_ELEMENTS,
) -> NestedLossOutput:
    """Encode ``x̃`` and return the nested top-k loss with hand-written, sparse-aware gradients.

    ``pre = (x̃ − b_pre) W_enc + b_enc``; level ``i`` decodes ``ReLU(TopK_{k_i}(pre)) W_dec +
    b_pre``. Gradients flow to ``W_enc, b_enc, W_dec, b_pre`` (and to ``pre`` from any extra
    loss built on the returned ``pre``). Rows are processed in chunks of about
    ``chunk_elements / n`` rows (every row's computation is independent, so the result is the
    same; smaller working sets run faster on CPUs).
    """
    k_list = tuple(int(k) for k in k_list)
    if list(k_list) != sorted(set(k_list)) or not k_list or k_list[0] < 1:
        raise ValueError(f"k_list must be strictly increasing positive integers, got {k_list}")
    if len(level_weights) != len(k_list):
        raise ValueError("level_weights must have one weight per level")
    weights = tuple(float(w) / float(sum(level_weights)) for w in level_weights)
    sample_w = level_sample_weights(x_tilde, loss_kind)
    rows = max(1, chunk_elements // max(1, W_enc.shape[1]))
    outputs = [
        _NestedTopKLoss.apply(x_chunk, W_enc, b_enc, W_dec, b_pre, k_list, weights, w_chunk)
        for x_chunk, w_chunk in zip(x_tilde.split(rows), sample_w.split(rows), strict=True)
    ]
    if len(outputs) == 1:
        return NestedLossOutput(*outputs[0])
    loss = torch.stack([o[0] for o in outputs]).sum()
    level_losses = torch.stack([o[1] for o in outputs]).sum(0)
    fired = torch.stack([o[5] for o in outputs]).any(0)
    return NestedLossOutput(
        loss,
        level_losses,
        torch.cat([o[2] for o in outputs]),
        torch.cat([o[3] for o in outputs]),
        torch.cat([o[4] for o in outputs]),
        fired,
    )


class _Piece(NamedTuple):
    kind: str  # "full" (the last distinct level's whole code) or "segment"
    segment: int  # segment index (-1 for "full")
    coeffs: tuple[int, ...]  # its sign in each distinct level's reconstruction
    nnz: int
    dense: bool


def _plan_pieces(last: int, seg_nnz: list[int], full_nnz: int, numel: int) -> list[_Piece]:
    """Write levels ``0..last`` as signed sums of pieces, minimising the estimated decode cost."""

    def cost(nnz: int) -> float:
        return min(1.0, SPARSE_COST_FACTOR * nnz / max(1, numel))

    def is_dense(nnz: int) -> bool:
        return SPARSE_COST_FACTOR * nnz >= numel

    levels = range(last + 1)
    # Option A: every level as a head sum of segments.
    best_total = sum(cost(c) for c in seg_nnz)
    best_split: int | None = None
    # Option B: heads below the split j, tails (full code minus later segments) from j on;
    # segment j itself is never decoded.
    for j in levels:
        total = cost(full_nnz) + sum(cost(c) for s, c in enumerate(seg_nnz) if s != j)
        if total < best_total - 1e-9:
            best_total, best_split = total, j
    pieces: list[_Piece] = []
    if best_split is None:
        for s in levels:
            coeffs = tuple(1 if i >= s else 0 for i in levels)
            pieces.append(_Piece("segment", s, coeffs, seg_nnz[s], is_dense(seg_nnz[s])))
    else:
        j = best_split
        coeffs = tuple(1 if i >= j else 0 for i in levels)
        pieces.append(_Piece("full", -1, coeffs, full_nnz, is_dense(full_nnz)))
        for s in levels:
            if s < j:
                coeffs = tuple(1 if s <= i < j else 0 for i in levels)
            elif s > j:
                coeffs = tuple(-1 if j <= i < s else 0 for i in levels)
            else:
                continue
            pieces.append(_Piece("segment", s, coeffs, seg_nnz[s], is_dense(seg_nnz[s])))
    return [p for p in pieces if p.nnz > 0]


def _split_of(pieces: list[_Piece], last: int) -> int:
    """Levels below the split are head sums, levels from it on are tails of the full code."""
    full = next((p for p in pieces if p.kind == "full"), None)
    if full is None:
        return last + 1
    return full.coeffs.index(1)


class _Ranks(NamedTuple):
    """Per-row value bounds of the segments, and the sorted top entries of the first ones."""

    lo: list[Tensor]  # segment s holds lo[s] <= pre < lo[s-1] (lo[-1] = +inf), ReLU folded in
    top_values: Tensor | None  # [B, k_top] largest pre-activations, descending
    top_indices: Tensor | None  # [B, k_top] their columns

    def interval_mask(self, pre: Tensor, first: int, last: int) -> Tensor:
        """Entries in segments ``first..last`` (inclusive)."""
        mask = pre >= self.lo[last][:, None]
        if first > 0:
            mask &= pre < self.lo[first - 1][:, None]
        return mask

    def outside_mask(self, pre: Tensor, first: int, last: int) -> Tensor:
        """Entries *not* in segments ``first..last`` (for ``masked_fill``, which avoids casts)."""
        mask = pre < self.lo[last][:, None]
        if first > 0:
            mask |= pre >= self.lo[first - 1][:, None]
        return mask

    def label(self, values: Tensor, rows: Tensor, upto: int) -> Tensor:
        """Segment index of listed entries known to lie in segments ``0..upto``."""
        seg = torch.zeros(values.shape, dtype=torch.int64, device=values.device)
        for s in range(upto):
            seg += values < self.lo[s][rows]
        return seg


def _rank_segments(
    pre: Tensor, k_eff: Sequence[int], strict: list[int], last: int, top: int
) -> _Ranks:
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
    return _Ranks(lo, top_values, top_indices)


class _NestedTopKLoss(torch.autograd.Function):
    # Under CUDA autocast the inputs are cast to fp32 and the body runs without autocast: the
    # sparse (CSR) kernels want one dtype, and TF32 tensor cores keep the dense products fast.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x_tilde, W_enc, b_enc, W_dec, b_pre, k_list, weights, sample_w):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        batch, n = x_tilde.shape[0], W_enc.shape[1]
        x_in = x_tilde - b_pre
        pre = torch.addmm(b_enc, x_in, W_enc)
        # Bool reductions go through uint8/int32: a bool->int64 cast would copy the whole matrix.
        nonpositive = pre <= 0
        active = n - nonpositive.view(torch.uint8).sum(1, dtype=torch.int32).long()
        active_max = int(active.max()) if batch else 0
        k_eff = tuple(min(k, n) for k in k_list)
        h = len(k_eff)
        # Levels from `last` on share one code: their k covers every row's active count.
        last = next((i for i, k in enumerate(k_eff) if k >= active_max), h - 1)
        strict = [i for i in range(last + 1) if k_eff[i] < active_max]
        # Entries per segment follow from the active counts alone (ties aside).
        counts = [
            int(torch.clamp(active, max=k_eff[i]).sum()) if i in strict else int(active.sum())
            for i in range(last + 1)
        ]
        seg_nnz = [counts[0]] + [counts[i] - counts[i - 1] for i in range(1, last + 1)]
        pieces = _plan_pieces(last, seg_nnz, counts[last], pre.numel())
        sparse_pieces = [p for p in pieces if not p.dense]
        # The first segments, when sparse, come straight from one sorted top-k.
        sparse_segments = {p.segment for p in sparse_pieces if p.kind == "segment"}
        full_sparse = any(p.kind == "full" for p in sparse_pieces)
        top = -1
        while not full_sparse and top + 1 in sparse_segments and top + 1 in strict:
            top += 1
        ranks = _rank_segments(pre, k_eff, strict, last, top)
        outside = nonpositive if last not in strict else ranks.outside_mask(pre, 0, last)

        sparse = (
            _SparseBlocks.build(sparse_pieces, ranks, pre, outside, last, top, k_eff)
            if sparse_pieces
            else None
        )
        sparse_out = (sparse.csr @ W_dec).view(len(sparse_pieces), batch, -1) if sparse else None
        contributions: list[Tensor] = []
        dense_saved: list[tuple[Tensor, Tensor]] = []
        for piece in pieces:
            if piece.dense:
                mask = (
                    outside
                    if piece.kind == "full"
                    else ranks.outside_mask(pre, piece.segment, piece.segment)
                )
                code = pre.masked_fill(mask, 0.0)
                dense_saved.append((code, mask))
                contributions.append(code @ W_dec)
            else:
                contributions.append(sparse_out[sparse_pieces.index(piece)])

        # x̂_i = b_pre + Σ_p coeff[i, p] C_p for the distinct levels 0..last, built incrementally:
        # heads upwards from b_pre, tails downwards from b_pre + F.
        by_segment = {
            p.segment: c for p, c in zip(pieces, contributions, strict=True) if p.kind == "segment"
        }
        full = next(
            (c for p, c in zip(pieces, contributions, strict=True) if p.kind == "full"), None
        )
        split = _split_of(pieces, last)
        residuals: list[Tensor] = [x_tilde] * (last + 1)
        r = b_pre - x_tilde
        for i in range(split):
            if i in by_segment:
                r = r + by_segment[i]
            residuals[i] = r
        if split <= last:
            r = b_pre - x_tilde if full is None else (b_pre - x_tilde) + full
            residuals[last] = r
            for i in range(last - 1, split - 1, -1):
                if i + 1 in by_segment:
                    r = r - by_segment[i + 1]
                residuals[i] = r
        level_losses = torch.stack([(r.pow(2).sum(1) * sample_w).sum() for r in residuals])
        w = torch.tensor(weights, dtype=pre.dtype, device=pre.device)
        w_eff = torch.cat([w[:last], w[last:].sum().view(1)])
        loss = (level_losses * w_eff).sum()
        all_levels = torch.cat([level_losses, level_losses[last].expand(h - last - 1)])
        x_hat = residuals[last] + x_tilde
        fired = ~outside.all(0)
        active_last = (
            active
            if outside is nonpositive
            else n - outside.view(torch.uint8).sum(1, dtype=torch.int32).long()
        )

        ctx.save_for_backward(x_in, W_enc, W_dec, sample_w, w_eff, *residuals)
        ctx.pieces, ctx.sparse, ctx.dense_saved, ctx.pre_shape = (
            pieces,
            sparse,
            dense_saved,
            pre.shape,
        )
        ctx.mark_non_differentiable(all_levels, active_last, fired)
        return loss, all_levels, x_hat.detach(), pre, active_last, fired

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_loss, _g_levels, _g_xhat, grad_pre_ext, _g_active, _g_fired):  # type: ignore[override]
        x_in, W_enc, W_dec, sample_w, w_eff, *residuals = ctx.saved_tensors
        pieces: list[_Piece] = ctx.pieces
        if grad_loss is None:
            grad_loss = torch.ones((), dtype=W_dec.dtype, device=W_dec.device)
        last = len(residuals) - 1
        scale = (2.0 * grad_loss) * sample_w[:, None]
        level_grad = [(scale * w_eff[i]) * r for i, r in enumerate(residuals)]  # dL/dx̂_i
        grad_b_pre = torch.stack([g.sum(0) for g in level_grad]).sum(0)
        # Each piece's upstream gradient Σ_i coeff[i, p] R_i, by running sums over the levels.
        split = _split_of(pieces, last)
        head_sum: dict[int, Tensor] = {}  # Σ_{s <= i < split} R_i
        acc = None
        for i in range(split - 1, -1, -1):
            acc = level_grad[i] if acc is None else acc + level_grad[i]
            head_sum[i] = acc
        tail_sum: dict[int, Tensor] = {}  # Σ_{split <= i < s} R_i
        acc = None
        for s in range(split + 1, last + 1):
            acc = level_grad[s - 1] if acc is None else acc + level_grad[s - 1]
            tail_sum[s] = acc
        piece_grad = []
        for piece in pieces:
            if piece.kind == "full":
                g = level_grad[last] if split == last else tail_sum[last] + level_grad[last]
            elif piece.segment < split:
                g = head_sum[piece.segment]
            else:
                g = -tail_sum[piece.segment]
            piece_grad.append(g)

        grad_W_dec = torch.zeros_like(W_dec)
        grad_pre = None if grad_pre_ext is None else grad_pre_ext.clone()
        dense_saved = iter(ctx.dense_saved)
        for piece, g in zip(pieces, piece_grad, strict=True):
            if piece.dense:
                code, mask = next(dense_saved)
                grad_W_dec.addmm_(code.T, g)
                masked = (g @ W_dec.T).masked_fill_(mask, 0.0)
                grad_pre = masked if grad_pre is None else grad_pre.add_(masked)
        if grad_pre is None:
            grad_pre = W_dec.new_zeros(ctx.pre_shape)
        sparse: _SparseBlocks | None = ctx.sparse
        if sparse is not None:
            g_blocks = torch.cat(
                [g for piece, g in zip(pieces, piece_grad, strict=True) if not piece.dense]
            )
            grad_W_dec.add_(sparse.transposed() @ g_blocks)
            sampled = torch.sparse.sampled_addmm(
                sparse.pattern, g_blocks, W_dec.T, beta=0.0
            ).values()
            if sparse.keep is not None:  # entries of the sorted top-k that the ReLU zeroes
                sampled = sampled * sparse.keep
            grad_pre.view(-1).index_add_(0, sparse.flat_positions, sampled)
        # Encoder: pre = (x̃ − b_pre) W_enc + b_enc.
        grad_b_enc = grad_pre.sum(0)
        grad_W_enc = x_in.T @ grad_pre
        grad_b_pre = grad_b_pre - W_enc @ grad_b_enc
        return None, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_pre, None, None, None


class _SparseBlocks:
    """All sparse pieces as one CSR matrix whose row ``(slot, b)`` holds piece ``slot`` of row ``b``."""

    def __init__(
        self,
        csr: Tensor,
        pattern: Tensor,
        block_rows: Tensor,
        cols: Tensor,
        values: Tensor,
        flat_positions: Tensor,
        keep: Tensor | None,
        n: int,
    ) -> None:
        self.csr, self.pattern = csr, pattern
        self.block_rows, self.cols, self.values = block_rows, cols, values
        self.flat_positions = flat_positions
        self.keep = keep
        self.n = n

    @classmethod
    def build(
        cls,
        pieces: list[_Piece],
        ranks: _Ranks,
        pre: Tensor,
        outside: Tensor,
        last: int,
        top: int,
        k_eff: Sequence[int],
    ) -> _SparseBlocks:
        batch, n = pre.shape
        device = pre.device
        flat = pre.view(-1)
        batch_rows = torch.arange(batch, device=device)
        cols_parts, values_parts, rows_parts, counts_parts, positions_parts = [], [], [], [], []
        keep_parts: list[Tensor] = []
        listed = labels = None
        if any(p.kind == "full" for p in pieces):
            # One list of every code entry, labelled by segment, feeds all the pieces.
            listed = (~outside).view(-1).nonzero().squeeze(1)
            labels = ranks.label(flat[listed], listed // n, last) if last > 0 else None
        for slot, p in enumerate(pieces):
            if listed is None and p.segment <= top:
                # Ranks k_{s-1} .. k_s of the sorted top-k: a fixed width per row, no search.
                lo_rank = 0 if p.segment == 0 else k_eff[p.segment - 1]
                cols = ranks.top_indices[:, lo_rank : k_eff[p.segment]]
                values = ranks.top_values[:, lo_rank : k_eff[p.segment]]
                width = cols.shape[1]
                positions = (batch_rows[:, None] * n + cols).reshape(-1)
                rows = batch_rows.repeat_interleave(width)
                counts = torch.full((batch,), width, dtype=torch.int64, device=device)
                cols, values = cols.reshape(-1), values.reshape(-1)
                # Rows with few active latents have entries <= 0 in their top-k: ReLU zeroes them.
                keep_parts.append((values > 0).to(values.dtype))
            else:
                if listed is not None:
                    positions = (
                        listed
                        if (p.kind == "full" or labels is None)
                        else listed[labels == p.segment]
                    )
                else:
                    positions = (
                        ranks.interval_mask(pre, p.segment, p.segment).view(-1).nonzero().squeeze(1)
                    )
                rows = positions // n
                cols = positions - rows * n
                values = flat[positions]
                counts = torch.bincount(rows, minlength=batch)
                keep_parts.append(torch.ones_like(values))
            cols_parts.append(cols)
            values_parts.append(values)
            rows_parts.append(rows + slot * batch)
            counts_parts.append(counts)
            positions_parts.append(positions)
        keep = torch.cat(keep_parts)
        values = torch.cat(values_parts) * keep
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
            torch.cat(positions_parts),
            keep if keep_parts and listed is None else None,
            n,
        )

    def transposed(self) -> Tensor:
        """The ``[n, slots·B]`` CSR transpose, built by a stable sort on the column index."""
        # A stable sort on the narrowest integer type that holds a column index (a 16-bit
        # radix sort is ~3× faster than a 64-bit one on CPU).
        key_dtype = torch.int16 if self.n <= torch.iinfo(torch.int16).max else torch.int32
        order = torch.argsort(self.cols.to(key_dtype), stable=True)
        crow = torch.zeros(self.n + 1, dtype=torch.int64, device=self.cols.device)
        torch.cumsum(torch.bincount(self.cols, minlength=self.n), 0, out=crow[1:])
        return torch.sparse_csr_tensor(
            crow,
            self.block_rows[order],
            self.values[order],
            size=(self.n, self.csr.shape[0]),
            check_invariants=False,
        )
