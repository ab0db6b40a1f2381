"""Geometry of the dictionary and the codes: decoder orthogonality and CKNNA."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audit.metrics._arrays import ArrayLike, _f64

#: CKNNA neighbourhood size (the paper's k = 10).
CKNNA_K = 10


def decoder_orthogonality(decoder: ArrayLike, block_rows: int = 8192) -> float:
    """Mean squared cosine over ordered pairs of distinct decoder rows (DO; lower = more orthogonal).

    ``decoder``: ``[n, d]`` (``W_dec``; rows are normalised here, so any row scale works).

    ``DO = (1/(n(n−1))) Σ_{i≠j} cos²(w_i, w_j)``. With unit rows ``ŵ_i``, ``Σ_{i,j} (ŵ_i·ŵ_j)² =
    ‖Ŵ Ŵᵀ‖_F² = ‖Ŵᵀ Ŵ‖_F²``, so the ``[d, d]`` Gram matrix, accumulated over row blocks in float64,
    replaces the ``[n, n]`` one; the diagonal ``Σ_i ‖ŵ_i‖⁴`` is subtracted. A zero row counts as
    orthogonal to everything. The paper's code averages over all ``n²`` entries (the diagonal
    as zeros), i.e. reports ``DO · (n−1)/n``; the difference is below 0.1 % for n ≥ 1000.
    Float32 inputs are multiplied in float32 per block (relative error about 1e-6).

    >>> w = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # cos² of the pairs: 0, 1/2, 1/2 (each twice)
    >>> round(decoder_orthogonality(w), 12)
    0.333333333333
    """
    w = decoder.detach() if isinstance(decoder, Tensor) else _f64(decoder)
    if w.ndim != 2:
        raise ValueError(f"decoder must be a 2-D [n, d] array, got shape {tuple(w.shape)}")
    n, d = w.shape
    if n < 2:
        return math.nan
    work_dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    gram = torch.zeros(d, d, dtype=torch.float64, device=w.device)
    diag = 0.0
    for block in w.split(block_rows):
        block = block.to(work_dtype)
        unit = block / block.norm(dim=1, keepdim=True).clamp_min(1e-12)
        gram += (unit.T @ unit).double()
        diag += float(unit.double().pow(2).sum(1).pow(2).sum())
    off = float(gram.pow(2).sum()) - diag
    return max(0.0, off) / (n * (n - 1))


# ------------------------------------------------------------------------------------------
# CKNNA
# ------------------------------------------------------------------------------------------


def knn_graph(feats: ArrayLike, k: int, block_rows: int = 1024) -> tuple[Tensor, Tensor]:
    """Each row's ``k`` nearest neighbours under the linear kernel ``K = F Fᵀ`` (self excluded).

    ``feats``: ``[m, p]``. Returns ``(indices [m, k], kernel values [m, k])``, sorted by decreasing
    kernel value. Rows of ``K`` are computed in blocks, so memory is ``O(block_rows · m)``.
    Exact ties are broken by ``torch.topk`` (arbitrarily), as in the reference implementation.
    """
    f = feats if isinstance(feats, Tensor) else _f64(feats)
    m = f.shape[0]
    if not 1 <= k < m:
        raise ValueError(f"k must lie in [1, {m - 1}] for {m} samples, got {k}")
    indices, values = [], []
    for lo in range(0, m, block_rows):
        block = f[lo : lo + block_rows] @ f.T
        rows = torch.arange(lo, lo + block.shape[0], device=f.device)
        block[rows - lo, rows] = float("-inf")
        v, i = torch.topk(block, k, dim=1)
        indices.append(i)
        values.append(v)
    return torch.cat(indices), torch.cat(values)


def _masked_hsic_unbiased(
    rows: Tensor, cols: Tensor, k_vals: Tensor, l_vals: Tensor, m: int
) -> float:
    """Unbiased HSIC (Song et al., 2012, eq. 5) of two kernels that are zero off a sparse mask.

    The mask's entries are the pairs ``(rows[t], cols[t])`` (no diagonal, no repeats) holding
    ``K̃ = k_vals`` and ``L̃ = l_vals``. With ``1`` the all-ones vector:
    ``HSIC = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1)/((m−1)(m−2)) − 2/(m−2) · 1ᵀK̃L̃1] / (m(m−3))``, where
    ``tr(K̃ L̃) = Σ_ij K̃_ij L̃_ji`` (the mask need not be symmetric) and
    ``1ᵀK̃L̃1 = Σ_p colsum(K̃)_p · rowsum(L̃)_p``.
    """
    k_vals, l_vals = k_vals.double(), l_vals.double()
    # tr(K̃ L̃): pair (i, j) meets (j, i); find each pair's transpose by sorting linear ids.
    ids = rows * m + cols
    order = torch.argsort(ids)
    sorted_ids = ids[order]
    pos = torch.searchsorted(sorted_ids, cols * m + rows).clamp_max(len(ids) - 1)
    has_transpose = sorted_ids[pos] == cols * m + rows
    trace = float((k_vals[has_transpose] * l_vals[order[pos[has_transpose]]]).sum())
    col_k = torch.zeros(m, dtype=torch.float64, device=k_vals.device).index_add_(0, cols, k_vals)
    row_l = torch.zeros(m, dtype=torch.float64, device=k_vals.device).index_add_(0, rows, l_vals)
    sum_k, sum_l = float(k_vals.sum()), float(l_vals.sum())
    value = trace + sum_k * sum_l / ((m - 1) * (m - 2)) - 2.0 * float(col_k @ row_l) / (m - 2)
    return value / (m * (m - 3))


def _mutual_pairs(
    idx_a: Tensor, val_a: Tensor, idx_b: Tensor, val_b: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pairs ``(i, j)`` with ``j`` among ``i``'s neighbours in both graphs, and both kernel values."""
    match = idx_a[:, :, None] == idx_b[:, None, :]  # [m, k, k]
    in_both = match.any(2)
    pos_b = match.to(torch.int8).argmax(2)  # where idx_a[i, a] sits in idx_b[i, :]
    rows = torch.arange(idx_a.shape[0], device=idx_a.device)[:, None].expand_as(idx_a)
    return (
        rows[in_both],
        idx_a[in_both],
        val_a[in_both],
        torch.gather(val_b, 1, pos_b)[in_both],
    )


def cknna(feats_a: ArrayLike, feats_b: ArrayLike, k: int = CKNNA_K) -> float:
    """Centred kernel nearest-neighbour alignment (Huh et al., 2024, *The Platonic Representation
    Hypothesis*), as the paper uses it between embeddings ``x`` and SAE codes ``z``.

    ``feats_a``: ``[m, p]``, ``feats_b``: ``[m, q]``, rows paired. With linear kernels
    ``K = A Aᵀ``, ``L = B Bᵀ`` and ``N_K(i)`` the ``k`` nearest neighbours of ``i`` under ``K``
    (self excluded), the mask ``M_ij = 1[j ∈ N_K(i) ∩ N_L(i)]`` keeps mutual neighbours, and

    ``CKNNA = HSIC(M∘K, M∘L) / sqrt(HSIC(M_K∘K, M_K∘K) · HSIC(M_L∘L, M_L∘L))``

    with the unbiased HSIC estimator (Song et al., 2012) and ``M_K``, ``M_L`` each graph's own
    mask. 1 when both spaces have the same neighbourhoods and kernel values up to scale; about 0
    for unrelated spaces. Requires ``m ≥ max(4, k + 1)``. Returns ``nan`` when a self-alignment
    term is not positive. Kernels and neighbour search use the inputs' dtype (float32 tensors stay
    float32); the HSIC sums use float64. Memory is ``O(m·k)`` plus one block of kernel rows.
    Unlike the reference implementation, no ``1e-6`` is added to the denominator.
    """
    a = feats_a if isinstance(feats_a, Tensor) else _f64(feats_a)
    b = feats_b if isinstance(feats_b, Tensor) else _f64(feats_b)
    b = b.to(a.device)
    m = a.shape[0]
    if b.shape[0] != m:
        raise ValueError(f"feats_a and feats_b need the same rows, got {m} and {b.shape[0]}")
    if m < max(4, k + 1):
        raise ValueError(f"CKNNA needs at least max(4, k + 1) = {max(4, k + 1)} samples, got {m}")
    idx_a, val_a = knn_graph(a, k)
    idx_b, val_b = knn_graph(b, k)
    rows_a = torch.arange(m, device=a.device)[:, None].expand_as(idx_a).reshape(-1)
    rows_b = torch.arange(m, device=b.device)[:, None].expand_as(idx_b).reshape(-1)
    self_a = _masked_hsic_unbiased(
        rows_a, idx_a.reshape(-1), val_a.reshape(-1), val_a.reshape(-1), m
    )
    self_b = _masked_hsic_unbiased(
        rows_b, idx_b.reshape(-1), val_b.reshape(-1), val_b.reshape(-1), m
    )
    rows, cols, kv, lv = _mutual_pairs(idx_a, val_a, idx_b, val_b)
    cross = _masked_hsic_unbiased(rows, cols, kv, lv, m) if len(rows) else 0.0
    if not (self_a > 0 and self_b > 0):
        return math.nan
    return cross / math.sqrt(self_a * self_b)
