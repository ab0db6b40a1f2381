"""Progressive recovery: the decodes of every top-k level of a chunk, from shared rank segments."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from audit.evaluate.config import (
    SPARSE_COST_FACTOR,
)


def _decode_entries(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """``code @ W_dec`` for a code given as ``w`` (value, latent) entries per row (``[B, w]``)."""
    rows, width = values.shape
    n = W_dec.shape[0]
    if width == 0:
        return W_dec.new_zeros(rows, W_dec.shape[1])
    if SPARSE_COST_FACTOR * width >= n:
        dense = values.new_zeros(rows, n).scatter_(1, indices, values)
        return dense @ W_dec
    crow = torch.arange(0, rows * width + 1, width, device=values.device)
    code = torch.sparse_csr_tensor(
        crow,
        indices.reshape(-1),
        values.reshape(-1),
        size=(rows, n),
        check_invariants=False,
    )
    return code @ W_dec


def _chain_segments(
    z: Tensor, levels: Sequence[int], skip: int
) -> tuple[list[tuple[Tensor, Tensor] | None], Tensor]:
    """Entries of each rank segment ``[levels[j−1], levels[j])`` (``levels[−1] = 0``) of every row.

    One unsorted top-``levels[-1]`` of ``z``, then a chain of shrinking top-k calls on the
    survivors: cheaper than sorting each row. Returns the segments' ``(values, latents)``
    (``[B, width]`` each; ``None`` for segment ``skip``, which the caller never decodes) and the
    latents of the largest level (``[B, levels[-1]]``).
    """
    rows = z.shape[0]
    top_values, top_latents = torch.topk(z, levels[-1], dim=1, sorted=False)
    segments: list[tuple[Tensor, Tensor] | None] = [None] * len(levels)
    values, latents = top_values, top_latents
    for j in range(len(levels) - 1, 0, -1):
        inner_values, position = torch.topk(values, levels[j - 1], dim=1, sorted=False)
        if j != skip:
            outer = torch.ones_like(values, dtype=torch.bool).scatter_(1, position, False)
            width = levels[j] - levels[j - 1]
            segments[j] = (values[outer].view(rows, width), latents[outer].view(rows, width))
        values, latents = inner_values, latents.gather(1, position)
    segments[0] = (values, latents)
    return segments, top_latents


def nested_topk_decodes(
    z: Tensor, W_dec: Tensor, ks: Sequence[int], active: Tensor | None = None
) -> list[Tensor]:
    """``keep_topk(z, k) @ W_dec`` for every ``k`` in ``ks`` (ascending), from one full decode.

    ``z``: ``[B, n]``, non-negative (every architecture's code is); ``W_dec``: ``[n, d]``. Returns
    one ``[B, d]`` tensor per ``k`` (no bias; levels at or above the largest active count are the
    full decode itself). Exact up to floating-point rounding, except that among exactly tied
    values ``torch.topk`` may pick other latents than a separate top-k call would.

    With ``A`` the largest active count and levels ``k_1 < … < k_L < A``, rank segment ``s`` holds
    each row's entries ranked ``[k_s, k_{s+1})`` (``k_0 = 0``, ``k_{L+1} = A``). Level ``j`` is
    segments ``0..j``: small levels are decoded as heads ``Σ_{s ≤ j} C_s``, large ones as tails
    ``F − Σ_{s > j} C_s`` with ``F = z W_dec``, split at the widest segment, which is never
    decoded. ``active`` (``[B]``, the non-zero count of each row) saves recounting.
    """
    ks = [int(k) for k in ks]
    if ks != sorted(ks) or (ks and ks[0] < 1):
        raise ValueError(f"ks must be ascending positive integers, got {ks}")
    full = z @ W_dec
    out = [full] * len(ks)
    if active is None:
        active = (z > 0).sum(1)
    top = int(active.max()) if z.shape[0] else 0
    need = [i for i, k in enumerate(ks) if k < top]
    if not need:
        return out
    levels = [ks[i] for i in need]
    bounds = [0, *levels, top]
    widths = [b - a for a, b in itertools.pairwise(bounds)]
    split = max(range(len(widths)), key=lambda s: (widths[s], s))
    segments, top_latents = _chain_segments(z, levels, skip=split)

    def decode(s: int) -> Tensor:
        if s < len(levels):
            values, latents = segments[s]  # type: ignore[misc]
        else:  # ranks levels[-1] … top: what the largest level leaves of z
            rest = z.scatter(1, top_latents, 0.0)
            values, latents = torch.topk(rest, top - levels[-1], dim=1, sorted=False)
        return _decode_entries(values, latents, W_dec)

    head: Tensor | None = None
    for j in range(split):
        head = decode(j) if head is None else head + decode(j)
        out[need[j]] = head
    tail = full
    for j in range(len(levels) - 1, split - 1, -1):
        tail = tail - decode(j + 1)
        out[need[j]] = tail
    return out
