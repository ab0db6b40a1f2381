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
3. writes each level as a signed sum of *pieces*: segments ``C_s``, and the whole codes
   ``P_a`` of some *anchor* levels. Between anchors ``p < a`` levels are heads
   ``x̂_i = b + P_p + Σ_{p<s≤i} C_s`` or tails ``x̂_i = b + P_a − Σ_{i<s≤a} C_s``, so one
   segment per gap is never decoded. A small dynamic programme picks the anchors that
   minimise the estimated decode cost (at initialisation, with half the latents on, the two
   widest levels are decoded whole and their narrow segments are skipped);
4. decodes each piece sparsely (one block-CSR matmul for all sparse pieces) or densely,
   whichever the piece's density makes cheaper, and back-propagates by hand: a piece's
   upstream gradient is ± the sum of the level gradients over the contiguous range of levels
   it feeds.

The result equals the naive loss and gradients to floating-point tolerance (tested), except
that exact ties at a level's threshold are all kept (a plain top-k keeps an arbitrary subset;
continuous data has no such ties).

Both losses average squared errors over the batch **and the dimensions** (``mse``), or use
the per-sample normalised error ``‖x̃_b − x̂_b‖² / ‖x̃_b − c‖²`` averaged over the batch
(``nmse``; ``c`` is the data mean in preprocessed space — 0 when mean-centring — so the
denominator is the sample's squared distance to the data mean, as in the reference code).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from audit.sae.nested_plan import Piece, Plan, plan_nested_step

# Rows per chunk are chosen so a [rows, n] matrix has about this many entries (32 MiB in fp32).
CHUNK_ELEMENTS = 1 << 23

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class NestedLossOutput(NamedTuple):
    loss: Tensor  # scalar, differentiable
    level_losses: Tensor  # [h] per-level reconstruction losses (detached)
    x_hat: Tensor  # [B, d] reconstruction of the last level, preprocessed space (detached)
    pre: Tensor | None  # [B, n] pre-activations (differentiable, for auxiliary losses)
    active: Tensor  # [B] non-zero latents per row in the last level's code
    fired: Tensor  # [n] bool, latents non-zero somewhere in the batch (last level)


def level_sample_weights(x_tilde: Tensor, loss_kind: str, center: Tensor | None = None) -> Tensor:
    """Per-sample factor ``w_b`` so that a level's loss is ``Σ_b w_b ‖x̃_b − x̂_b‖²``
    (``center``: nmse's reference point ``c``, default 0)."""
    batch, dim = x_tilde.shape
    if loss_kind == "mse":
        return torch.full((batch,), 1.0 / (batch * dim), dtype=x_tilde.dtype, device=x_tilde.device)
    if loss_kind == "nmse":
        spread = x_tilde if center is None else x_tilde - center
        denom = spread.pow(2).sum(1).clamp_min(torch.finfo(x_tilde.dtype).tiny)
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
    center: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The reference computation: one top-k, dense code and full decode per level.

    Returns ``(loss, level_losses)``; differentiable through ``autograd``.
    """
    sample_w = level_sample_weights(x_tilde, loss_kind, center)
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
    chunk_elements: int | None = None,
    return_pre: bool = True,
    center: Tensor | None = None,
) -> NestedLossOutput:
    """Encode ``x̃`` and return the nested top-k loss with hand-written, sparse-aware gradients.

    ``pre = (x̃ − b_pre) W_enc + b_enc``; level ``i`` decodes ``ReLU(TopK_{k_i}(pre)) W_dec +
    b_pre``. Gradients flow to ``W_enc, b_enc, W_dec, b_pre`` (and to ``pre`` from any extra
    loss built on the returned ``pre``). Rows are processed in chunks of about
    ``chunk_elements / n`` rows (every row's computation is independent, so the result is the
    same; smaller working sets run faster on CPUs). ``None``: :data:`CHUNK_ELEMENTS` on a CPU,
    one chunk elsewhere (a GPU wants large kernels, and each chunk reads its plan from the
    device). With ``return_pre=False`` the output's ``pre`` is ``None`` (no copy of the chunks'
    pre-activations into one matrix). ``center`` is nmse's reference point (see
    :func:`level_sample_weights`).
    """
    k_list = tuple(int(k) for k in k_list)
    if list(k_list) != sorted(set(k_list)) or not k_list or k_list[0] < 1:
        raise ValueError(f"k_list must be strictly increasing positive integers, got {k_list}")
    if len(level_weights) != len(k_list):
        raise ValueError("level_weights must have one weight per level")
    weights = tuple(float(w) / float(sum(level_weights)) for w in level_weights)
    sample_w = level_sample_weights(x_tilde, loss_kind, center)
    if chunk_elements is None and x_tilde.device.type != "cpu":
        rows = max(1, x_tilde.shape[0])
    else:
        rows = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(1, W_enc.shape[1]))
    outputs = [
        _NestedTopKLoss.apply(x_chunk, W_enc, b_enc, W_dec, b_pre, k_list, weights, w_chunk)
        for x_chunk, w_chunk in zip(x_tilde.split(rows), sample_w.split(rows), strict=True)
    ]
    if len(outputs) == 1:
        output = NestedLossOutput(*outputs[0])
        return output if return_pre else output._replace(pre=None)
    loss = torch.stack([o[0] for o in outputs]).sum()
    level_losses = torch.stack([o[1] for o in outputs]).sum(0)
    fired = torch.stack([o[5] for o in outputs]).any(0)
    return NestedLossOutput(
        loss,
        level_losses,
        torch.cat([o[2] for o in outputs]),
        torch.cat([o[3] for o in outputs]) if return_pre else None,
        torch.cat([o[4] for o in outputs]),
        fired,
    )


def _level_residuals(
    plan: Plan, contributions: dict[tuple[str, int], Tensor], base: Tensor, last: int
) -> list[Tensor]:
    """``x̂_i − x̃`` for levels ``0..last``, by running sums along the plan (``base = b − x̃``)."""
    residuals = [base] * (last + 1)

    def plus(r: Tensor, key: tuple[str, int], sign: int) -> Tensor:
        c = contributions.get(key)
        return r if c is None else (r + c if sign > 0 else r - c)

    prev, prev_r = -1, base
    for a, j in zip(plan.anchors, plan.skips, strict=True):
        r = prev_r
        for i in range(prev + 1, j):
            r = residuals[i] = plus(r, ("segment", i), 1)
        anchor_r = r = residuals[a] = plus(base, ("prefix", a), 1)
        for i in range(a - 1, j - 1, -1):
            r = residuals[i] = plus(r, ("segment", i + 1), -1)
        prev, prev_r = a, anchor_r
    r = prev_r
    for i in range(prev + 1, last + 1):
        r = residuals[i] = plus(r, ("segment", i), 1)
    return residuals


class _Ranks:
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


def _rank_segments(
    pre: Tensor,
    k_eff: Sequence[int],
    strict: list[int],
    last: int,
    top: int,
    positive: Tensor,
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
    return _Ranks(pre, lo, set(strict), positive, top_values, top_indices)


class _NestedTopKLoss(torch.autograd.Function):
    # Under CUDA autocast the inputs are cast to fp32 and the body runs without autocast: the
    # sparse (CSR) kernels want one dtype, and TF32 tensor cores keep the dense products fast.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x_tilde, W_enc, b_enc, W_dec, b_pre, k_list, weights, sample_w):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        batch = x_tilde.shape[0]
        x_in = x_tilde - b_pre
        pre = torch.addmm(b_enc, x_in, W_enc)
        # Masks are 0/1 matrices of pre's dtype: a comparison writes them directly (faster than
        # bool), and products and row sums with them need no cast of the whole matrix.
        positive = torch.gt(pre, 0.0, out=torch.empty_like(pre))
        step = plan_nested_step(pre, positive, k_list)
        last, pieces, sparse_pieces = step.last, step.plan.pieces, step.sparse_pieces
        ranks = _rank_segments(pre, step.k_eff, step.strict, last, step.top, positive)
        inside = ranks.inside_prefix(last)

        sparse = (
            _SparseBlocks.build(sparse_pieces, ranks, last, step.top, step.k_eff)
            if sparse_pieces
            else None
        )
        sparse_out = (sparse.csr @ W_dec).view(len(sparse_pieces), batch, -1) if sparse else None
        contributions: dict[tuple[str, int], Tensor] = {}
        dense_saved: list[tuple[Tensor, Tensor]] = []
        for piece in pieces:
            if piece.dense:
                code, mask = ranks.dense_code(piece)
                dense_saved.append((code, mask))
                contributions[piece.kind, piece.level] = code @ W_dec
            else:
                contributions[piece.kind, piece.level] = sparse_out[sparse_pieces.index(piece)]
        del ranks  # its cached masks are not needed any more

        residuals = _level_residuals(step.plan, contributions, b_pre - x_tilde, last)
        level_losses = torch.stack([(r.pow(2).sum(1) * sample_w).sum() for r in residuals])
        # Python-float weights: no host-to-device copy of a weight tensor every step.
        w_eff = [*weights[:last], sum(weights[last:])]
        loss = torch.stack([level_losses[i] * w for i, w in enumerate(w_eff)]).sum()
        h = len(step.k_eff)
        all_levels = torch.cat([level_losses, level_losses[last].expand(h - last - 1)])
        x_hat = residuals[last] + x_tilde
        fired = inside.sum(0) > 0
        active_last = step.active if last not in step.strict else inside.sum(1).long()

        ctx.save_for_backward(x_in, W_enc, W_dec, sample_w, *residuals)
        ctx.pieces, ctx.sparse, ctx.dense_saved, ctx.pre_shape, ctx.w_eff = (
            pieces,
            sparse,
            dense_saved,
            pre.shape,
            w_eff,
        )
        ctx.mark_non_differentiable(all_levels, active_last, fired)
        return loss, all_levels, x_hat.detach(), pre, active_last, fired

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_loss, _g_levels, _g_xhat, grad_pre_ext, _g_active, _g_fired):  # type: ignore[override]
        x_in, W_enc, W_dec, sample_w, *residuals = ctx.saved_tensors
        pieces: list[Piece] = ctx.pieces
        w_eff: list[float] = ctx.w_eff
        if grad_loss is None:
            grad_loss = torch.ones((), dtype=W_dec.dtype, device=W_dec.device)
        scale = (2.0 * grad_loss) * sample_w[:, None]
        level_grad = [(scale * w_eff[i]) * r for i, r in enumerate(residuals)]  # dL/dx̂_i
        grad_b_pre = torch.stack([g.sum(0) for g in level_grad]).sum(0)
        # A piece's upstream gradient is ± the sum of the level gradients over its level range;
        # shorter ranges first, so every longer one is a cached range plus one level.
        range_sums: dict[tuple[int, int], Tensor] = {}

        def range_sum(first: int, stop: int) -> Tensor:
            if (first, stop) not in range_sums:
                if stop - first == 1:
                    total = level_grad[first]
                elif (first + 1, stop) in range_sums:
                    total = level_grad[first] + range_sums[first + 1, stop]
                else:
                    total = range_sum(first, stop - 1) + level_grad[stop - 1]
                range_sums[first, stop] = total
            return range_sums[first, stop]

        for piece in sorted(pieces, key=lambda p: p.stop - p.first):
            range_sum(piece.first, piece.stop)
        piece_grad = [
            range_sums[p.first, p.stop] if p.sign > 0 else -range_sums[p.first, p.stop]
            for p in pieces
        ]

        grad_W_dec = torch.zeros_like(W_dec)
        grad_pre = None if grad_pre_ext is None else grad_pre_ext.clone()
        dense_saved = iter(ctx.dense_saved)
        through = None  # one [B, n] buffer for every piece's g·W_decᵀ after the first
        for piece, g in zip(pieces, piece_grad, strict=True):
            if piece.dense:
                code, mask = next(dense_saved)
                grad_W_dec.addmm_(code.T, g)
                if grad_pre is None:
                    grad_pre = torch.mm(g, W_dec.T).mul_(mask)
                else:
                    through = torch.mm(g, W_dec.T, out=through)
                    grad_pre.addcmul_(through, mask)
        del through
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
            sparse.add_to_rows(grad_pre, sampled)
        # Encoder: pre = (x̃ − b_pre) W_enc + b_enc.
        grad_b_enc = grad_pre.sum(0)
        grad_W_enc = x_in.T @ grad_pre
        grad_b_pre = grad_b_pre - W_enc @ grad_b_enc
        return None, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_pre, None, None, None


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


class _SparseBlocks:
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
        ranks: _Ranks,
        last: int,
        top: int,
        k_eff: Sequence[int],
    ) -> _SparseBlocks:
        pre = ranks.pre
        batch, n = pre.shape
        device = pre.device
        flat = pre.view(-1)
        batch_rows = torch.arange(batch, device=device)
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
                # Ranks k_{s-1} .. k_s of the sorted top-k: a fixed width per row, no search.
                # add_to_rows reads these blocks first, so they must lead the slots.
                assert slot == len(top_blocks), "sorted top-k pieces must come first"
                lo_rank = 0 if p.level == 0 else k_eff[p.level - 1]
                block_cols = ranks.top_indices[:, lo_rank : k_eff[p.level]]
                values = ranks.top_values[:, lo_rank : k_eff[p.level]]
                width = block_cols.shape[1]
                # Row b repeated `width` times (an expand: repeat_interleave may read sizes back).
                rows = batch_rows[:, None].expand(batch, width).reshape(-1)
                counts = torch.full((batch,), width, dtype=torch.int64, device=device)
                # Rows with few active latents have entries <= 0 in their top-k: ReLU zeroes them.
                keep = torch.gt(values, 0.0, out=torch.empty_like(values))
                top_blocks.append((block_cols, keep))
                cols, values = block_cols.reshape(-1), (values * keep).reshape(-1)
            else:
                if listed is not None:
                    positions = (
                        listed
                        if (p.kind == "prefix" or labels is None)
                        else listed[labels == p.level]
                    )
                else:
                    positions = _flat_nonzero(ranks.inside_segment(p.level))
                rows = positions // n
                cols = positions - rows * n
                values = flat.index_select(0, positions)
                counts = torch.bincount(rows, minlength=batch)
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
