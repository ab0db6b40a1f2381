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
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from audit.sae.nested_plan import NestedStep, Piece, Plan, plan_nested_step
from audit.sae.nested_ranks import Ranks, rank_segments
from audit.sae.nested_sparse import SparseBlocks

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


def _decode_pieces(
    step: NestedStep, ranks: Ranks, W_dec: Tensor, batch: int
) -> tuple[dict[tuple[str, int], Tensor], list[tuple[Tensor, Tensor]], SparseBlocks | None]:
    """Every piece of the plan decoded (``code @ W_dec``): the sparse ones in one block-CSR
    product, the dense ones as masked dense products (their codes and masks kept for backward)."""
    sparse_pieces = step.sparse_pieces
    sparse = (
        SparseBlocks.build(sparse_pieces, ranks, step.last, step.top, step.k_eff)
        if sparse_pieces
        else None
    )
    sparse_out = (sparse.csr @ W_dec).view(len(sparse_pieces), batch, -1) if sparse else None
    contributions: dict[tuple[str, int], Tensor] = {}
    dense_saved: list[tuple[Tensor, Tensor]] = []
    for piece in step.plan.pieces:
        if piece.dense:
            code, mask = ranks.dense_code(piece)
            dense_saved.append((code, mask))
            contributions[piece.kind, piece.level] = code @ W_dec
        else:
            contributions[piece.kind, piece.level] = sparse_out[sparse_pieces.index(piece)]
    return contributions, dense_saved, sparse


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
        last, pieces = step.last, step.plan.pieces
        ranks = rank_segments(pre, step.k_eff, step.strict, last, step.top, positive)
        inside = ranks.inside_prefix(last)

        contributions, dense_saved, sparse = _decode_pieces(step, ranks, W_dec, batch)
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
        piece_grad = _piece_grads(pieces, level_grad)
        grad_W_dec = torch.zeros_like(W_dec)
        grad_pre = None if grad_pre_ext is None else grad_pre_ext.clone()
        grad_pre = _add_dense_grads(
            pieces, piece_grad, iter(ctx.dense_saved), W_dec, grad_W_dec, grad_pre
        )
        if grad_pre is None:
            grad_pre = W_dec.new_zeros(ctx.pre_shape)
        sparse: SparseBlocks | None = ctx.sparse
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


def _piece_grads(pieces: list[Piece], level_grad: list[Tensor]) -> list[Tensor]:
    """Each piece's upstream gradient: ± the sum of the level gradients over its level range.
    Shorter ranges first, so every longer one is a cached range plus one level."""
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
    return [
        range_sums[p.first, p.stop] if p.sign > 0 else -range_sums[p.first, p.stop] for p in pieces
    ]


def _add_dense_grads(
    pieces: list[Piece],
    piece_grad: list[Tensor],
    dense_saved: Iterator[tuple[Tensor, Tensor]],
    W_dec: Tensor,
    grad_W_dec: Tensor,
    grad_pre: Tensor | None,
) -> Tensor | None:
    """Add the dense pieces' gradients into ``grad_W_dec`` (in place) and ``grad_pre``
    (in place, or made by the first dense piece when None); returns ``grad_pre``."""
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
    return grad_pre
