"""SAE evaluation metrics, as defined in Zaigrajew, Baniecki, Biecek, *Interpreting CLIP
with Hierarchical Sparse Autoencoders* (ICML 2025, arXiv 2502.20578, §5 and App. C).

Notation: ``x_i ∈ R^d`` an embedding (raw space, as the user stored it), ``x̂_i`` its SAE
reconstruction in raw space, ``z_i ∈ R^n`` the SAE code, ``N`` rows, ``x̄ = (1/N) Σ_i x_i``.

==========================  ===================================================================
metric                      formula
==========================  ===================================================================
L0                          ``(1/N) Σ_i #{j : z_ij ≠ 0}``
fraction of zeros           ``1 − L0 / n`` (the paper's "L0" column; higher = sparser)
FVU (dataset-level)         ``Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²``
FVU (per-sample, paper)     ``(1/N) Σ_i Var_j(x_ij − x̂_ij) / Var_j(x_ij)``, variances over the
                            ``d`` coordinates of one vector
cosine (CS)                 ``(1/N) Σ_i ⟨x_i, x̂_i⟩ / (‖x_i‖ ‖x̂_i‖)``
CKNNA                       mutual-k-NN centred kernel alignment of ``x`` and ``z`` (see
                            :func:`cknna`)
decoder orthogonality (DO)  ``(1/(n(n−1))) Σ_{i≠j} cos²(W_dec[i], W_dec[j])``
dead latents (NDN)          ``#{j : z_ij = 0 for every evaluated row i}``
LP-KL                       ``(1/N) Σ_i KL(p(x_i) ‖ p(x̂_i))`` for a linear probe's softmax ``p``
LP-agreement                ``(1/N) Σ_i 1[argmax p(x_i) = argmax p(x̂_i)]``
==========================  ===================================================================

**Why two FVUs.** The dataset-level FVU is the textbook one (``1 − R²``): the error energy over
the spread of the data *around the data mean*. The paper's per-sample variant divides each
vector's error variance by the variance of *that vector's own coordinates*, then averages. For
large ``d`` a vector's coordinate mean is near 0, so ``Var_j(x_ij) ≈ ‖x_i‖²/d`` and the
per-sample FVU measures the error relative to ``‖x‖²`` instead of ``‖x − x̄‖²``: it is smaller by
about the factor ``1 − ‖x̄‖² / mean_i ‖x_i‖²``. CLIP embeddings share a large common component
(their mean is far from 0), so the two differ substantially on them. Neither is wrong; they answer
different questions. The paper's numbers (e.g. FVU .002 for MSAE-UW) use the per-sample variant,
so compare like with like.

Every function accepts NumPy arrays, nested lists or torch tensors and computes in float64 unless
said otherwise. Arrays are row-major: one sample per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ArrayLike = np.ndarray | Tensor | Sequence

#: Progressive recovery starts at k = 16 and doubles, as in the paper's evaluation code.
PROGRESSIVE_START = 16
#: CKNNA neighbourhood size (the paper's k = 10).
CKNNA_K = 10


def _f64(a: ArrayLike) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().to(torch.float64)
    return torch.from_numpy(np.array(a, dtype=np.float64))  # a copy: inputs stay untouched


def _pair(x: ArrayLike, x_hat: ArrayLike) -> tuple[Tensor, Tensor]:
    xt, xh = _f64(x), _f64(x_hat).to(_f64(x).device)
    if xt.ndim != 2 or xt.shape != xh.shape:
        raise ValueError(
            f"x and x_hat must be 2-D arrays of the same shape, got {tuple(xt.shape)} and "
            f"{tuple(xh.shape)}"
        )
    return xt, xh


# ------------------------------------------------------------------------------------------
# Sparsity
# ------------------------------------------------------------------------------------------


def l0(codes: ArrayLike) -> float:
    """Mean number of non-zero latents per sample, ``(1/N) Σ_i #{j : z_ij ≠ 0}``.

    ``codes``: ``[N, n]``.

    >>> l0([[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    1.5
    """
    z = _f64(codes)
    return float((z != 0).sum(1).double().mean())


def frac_zeros(codes: ArrayLike) -> float:
    """The paper's sparsity column: the mean fraction of zero latents, ``1 − L0 / n``.

    ``codes``: ``[N, n]``. (The paper labels this column "L0"; higher means sparser.)

    >>> frac_zeros([[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    0.625
    """
    z = _f64(codes)
    return float((z == 0).double().mean())


def dead_latents(fire_counts: ArrayLike) -> int:
    """Latents that never fired on the evaluated data (NDN): ``#{j : count_j = 0}``.

    ``fire_counts``: ``[n]``, how many rows each latent was non-zero in.

    >>> dead_latents([3, 0, 1, 0])
    2
    """
    return int((_f64(fire_counts) == 0).sum())


# ------------------------------------------------------------------------------------------
# Reconstruction fidelity
# ------------------------------------------------------------------------------------------


def fvu(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Dataset-level fraction of variance unexplained, ``Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²``.

    ``x, x_hat``: ``[N, d]``. ``x̄`` is the mean of ``x`` over the rows given. 0 for a perfect
    reconstruction, 1 for predicting ``x̄`` for every row (what ``1 − R²`` means).

    >>> fvu([[1.0, 0.0], [3.0, 2.0]], [[1.0, 0.0], [3.0, 2.0]])
    0.0
    >>> fvu([[1.0, 0.0], [3.0, 2.0]], [[2.0, 1.0], [2.0, 1.0]])  # the mean for every row
    1.0
    >>> fvu([[1.0, 0.0], [3.0, 2.0]], [[1.0, 1.0], [3.0, 2.0]])  # error 1 over variance 4
    0.25
    """
    xt, xh = _pair(x, x_hat)
    denom = float((xt - xt.mean(0)).pow(2).sum())
    return float((xt - xh).pow(2).sum()) / denom if denom > 0 else math.nan


def per_sample_fvu(x: ArrayLike, x_hat: ArrayLike) -> Tensor:
    """The paper's per-sample FVU of every row: ``Var_j(x_ij − x̂_ij) / Var_j(x_ij)``, ``[N]``.

    Variances run over the ``d`` coordinates of one vector (so each vector is centred on the mean
    of its own coordinates, not on the data mean); the ``1/d`` or ``1/(d−1)`` factor cancels. A
    vector whose coordinates are all equal has no variance; its ratio is ``inf`` (or ``nan``).

    >>> round(float(per_sample_fvu([[1.0, 2.0, 3.0]], [[1.0, 2.0, 4.0]])[0]), 12)  # (2/3) / 2
    0.333333333333
    """
    xt, xh = _pair(x, x_hat)
    err = xt - xh
    num = (err - err.mean(1, keepdim=True)).pow(2).sum(1)
    den = (xt - xt.mean(1, keepdim=True)).pow(2).sum(1)
    return num / den


def fvu_per_sample(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean of :func:`per_sample_fvu` over the rows (the FVU the paper reports).

    >>> x, x_hat = [[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]], [[1.0, 2.0, 4.0], [0.0, 0.0, 4.0]]
    >>> round(fvu_per_sample(x, x_hat), 12)  # (1/3 + 0) / 2
    0.166666666667
    """
    return float(per_sample_fvu(x, x_hat).mean())


def row_cosine(x: ArrayLike, x_hat: ArrayLike) -> Tensor:
    """Cosine similarity of each pair of rows, ``[N]``; 0 where either row is the zero vector.

    >>> row_cosine([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]).tolist()
    [1.0, 0.7071067811865475]
    """
    xt, xh = _pair(x, x_hat)
    norms = xt.norm(dim=1) * xh.norm(dim=1)
    dots = (xt * xh).sum(1)
    return torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


def mean_cosine(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean cosine similarity between each ``x_i`` and its reconstruction ``x̂_i`` (CS).

    >>> round(mean_cosine([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]]), 12)
    1.0
    >>> mean_cosine([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, -1.0]])
    -0.5
    """
    return float(row_cosine(x, x_hat).mean())


# ------------------------------------------------------------------------------------------
# Dictionary geometry
# ------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------
# Linear-probe agreement
# ------------------------------------------------------------------------------------------


def _log_softmax(logits: ArrayLike) -> Tensor:
    z = _f64(logits)
    if z.ndim == 1:  # a binary classifier's single logit means logits [0, s]
        z = torch.stack([torch.zeros_like(z), z], 1)
    return torch.log_softmax(z, dim=1)


def probe_kl(logits_x: ArrayLike, logits_x_hat: ArrayLike) -> Tensor:
    """Per-sample ``KL(p(x_i) ‖ p(x̂_i)) = Σ_c p_c (log p_c − log q_c)``, ``[N]``, in nats.

    ``logits_*``: ``[N, C]`` (or ``[N]``: one binary logit, i.e. ``[0, s]``). ``p``, ``q`` are the
    softmax of the probe's logits on the original and the reconstructed embedding.

    >>> import math
    >>> round(float(probe_kl([[0.0, math.log(3.0)]], [[0.0, 0.0]])[0]), 6)  # .25 ln .5 + .75 ln 1.5
    0.130812
    """
    log_p, log_q = _log_softmax(logits_x), _log_softmax(logits_x_hat)
    return (log_p.exp() * (log_p - log_q)).sum(1).clamp_min(0.0)


def probe_agreement(logits_x: ArrayLike, logits_x_hat: ArrayLike) -> Tensor:
    """Per-sample ``1[argmax p(x_i) = argmax p(x̂_i)]`` as float, ``[N]``.

    >>> probe_agreement([[2.0, 1.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 0.0]]).tolist()
    [1.0, 0.0]
    """
    return (_log_softmax(logits_x).argmax(1) == _log_softmax(logits_x_hat).argmax(1)).double()


def lp_kl(logits_x: ArrayLike, logits_x_hat: ArrayLike) -> float:
    """LP-KL: mean of :func:`probe_kl` (0 when the reconstructions change no prediction)."""
    return float(probe_kl(logits_x, logits_x_hat).mean())


def lp_agreement(logits_x: ArrayLike, logits_x_hat: ArrayLike) -> float:
    """LP-agreement: the fraction of samples whose predicted class survives reconstruction.

    >>> lp_agreement([[2.0, 1.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 0.0]])
    0.5
    """
    return float(probe_agreement(logits_x, logits_x_hat).mean())


# ------------------------------------------------------------------------------------------
# Progressive recovery
# ------------------------------------------------------------------------------------------


def progressive_ks(n_latents: int, start: int = PROGRESSIVE_START) -> list[int]:
    """``k = start, 2·start, 4·start, …`` while ``≤ n``, then ``n`` itself.

    >>> progressive_ks(1024)
    [16, 32, 64, 128, 256, 512, 1024]
    >>> progressive_ks(6144)
    [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 6144]
    >>> progressive_ks(10)
    [10]
    """
    ks = []
    k = start
    while k <= n_latents:
        ks.append(k)
        k *= 2
    if not ks or ks[-1] != n_latents:
        ks.append(n_latents)
    return ks


# ------------------------------------------------------------------------------------------
# Chunk accumulators (sufficient statistics in float64; merging chunks gives the exact result)
# ------------------------------------------------------------------------------------------


@dataclass
class SpreadAccumulator:
    """``Σ_i ‖x_i − x̄‖²`` over chunks, by Chan et al.'s pairwise update (no cancellation)."""

    count: int = 0
    mean: Tensor | None = None  # [d] float64
    sum_sq: float = 0.0  # Σ ‖x_i − mean‖²

    def update(self, x: Tensor) -> None:
        """Add a chunk ``x``: ``[B, d]``."""
        xb = x.detach().double()
        b = xb.shape[0]
        if b == 0:
            return
        mean_b = xb.mean(0)
        sq_b = float((xb - mean_b).pow(2).sum())
        if self.mean is None:
            self.count, self.mean, self.sum_sq = b, mean_b, sq_b
            return
        total = self.count + b
        delta = mean_b - self.mean
        self.sum_sq += sq_b + float(delta.pow(2).sum()) * self.count * b / total
        self.mean = self.mean + delta * (b / total)
        self.count = total


@dataclass
class ReconstructionAccumulator:
    """Running sums for FVU (both variants), cosine and L0 of one reconstruction, over chunks."""

    rows: int = 0
    sq_error: float = 0.0  # Σ_i ‖x_i − x̂_i‖²
    per_sample_fvu: float = 0.0  # Σ_i Var_j(e_i)/Var_j(x_i)
    cosine: float = 0.0  # Σ_i cos(x_i, x̂_i)
    active: float = 0.0  # Σ_i #non-zero latents

    def update(
        self,
        x: Tensor,
        x_hat: Tensor,
        active_per_row: Tensor | None = None,
        *,
        x_spread: Tensor | None = None,
        x_norm: Tensor | None = None,
    ) -> None:
        """Add a chunk: ``x, x_hat``: ``[B, d]`` (raw space); ``active_per_row``: ``[B]``.

        Per-row quantities are computed in the inputs' dtype and summed over rows in float64.
        ``x_spread`` (``Σ_j (x_ij − mean_j x_ij)²``, ``[B]``) and ``x_norm`` (``‖x_i‖``, ``[B]``)
        may be passed when several reconstructions of the same chunk are scored.
        """
        x, x_hat = x.detach(), x_hat.detach()
        err = x - x_hat
        if x_spread is None:
            x_spread = (x - x.mean(1, keepdim=True)).pow(2).sum(1)
        if x_norm is None:
            x_norm = x.norm(dim=1)
        err_spread = (err - err.mean(1, keepdim=True)).pow(2).sum(1)
        norms = x_norm * x_hat.norm(dim=1)
        cos = torch.where(
            norms > 0, (x * x_hat).sum(1) / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0
        )
        self.rows += x.shape[0]
        self.sq_error += float(err.pow(2).sum(1).double().sum())
        self.per_sample_fvu += float((err_spread.double() / x_spread.double()).sum())
        self.cosine += float(cos.double().sum())
        if active_per_row is not None:
            self.active += float(active_per_row.double().sum())

    def summary(self, spread: SpreadAccumulator, n_latents: int) -> dict[str, float]:
        """``l0``, ``frac_zeros``, ``fvu``, ``fvu_per_sample`` and ``cosine`` of the rows seen."""
        rows = max(1, self.rows)
        l0_value = self.active / rows
        return {
            "l0": l0_value,
            "frac_zeros": 1.0 - l0_value / n_latents,
            "fvu": self.sq_error / spread.sum_sq if spread.sum_sq > 0 else math.nan,
            "fvu_per_sample": self.per_sample_fvu / rows,
            "cosine": self.cosine / rows,
        }
