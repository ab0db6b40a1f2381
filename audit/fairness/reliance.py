"""Concept reliance: what happens to the worst group when a concept is ablated (SPEC §7).

**The edit.** For a sample with code ``z = encode(x)``, ablating latent ``j`` to value ``v`` keeps
the SAE's reconstruction error::

    x' = x + post(dec(z with z_j := v)) − post(dec(z)) = x + (v − z_j) · u_j,   u_j = W_dec[j] / s

(post-processing is affine, so only the changed latent's decoder row survives). ``v`` is 0
(``zero``), the latent's mean over the audited rows (``mean``) or ``α · z_j`` (steering). The code
is never re-encoded after the edit. Latents that share a name are edited together:
``x' = x + Σ_j (v_j − z_j) u_j``.

**Closed forms.** For a linear head on raw embeddings, ``margin(x') = margin(x) + (v − z_j) g_j``
with ``g_j = w · u_j``: every latent of every sample in one matrix product. For a head on
L2-normalised embeddings the margin after the edit is still exact,
``(w·x + c g_j) / sqrt(‖x‖² + 2c x·u_j + c²‖u_j‖²) + b`` with ``c = v − z_j``, which needs one more
product, ``x Uᵀ``. Any other classifier is screened with the first-order version of the same
formula (its input gradient in place of ``w``) and evaluated exactly by decode-and-rerun on a
shortlist.

**Which direction reveals a shortcut.** ΔWGA = WGA(after ablation) − WGA(before). If the
classifier uses a concept to push the worst group towards the wrong class (blond hair pushing
blond *men* towards "female"), removing the concept *raises* the worst group's accuracy:
ΔWGA > 0. A concept the worst group legitimately relies on (a beard for blond men) gives
ΔWGA < 0 when removed. Flags are therefore one-sided: ΔWGA ≥ min_dwga with a bootstrap CI above 0.

**The null.** A concept can raise WGA for reasons unrelated to *where* it is active: a concept
present in everyone shifts every margin alike (a threshold change), and one the classifier reads
as noise hurts borderline samples everywhere. The matched null keeps everything but the placement:
the concept's own activation values (the same frequency and magnitudes), its own direction and
the same classifier, moved to random members of the same target class (with replacement).
A null draw is ΔWGA_null = WGA(x') − WGA(x^π), with ``x^π = x + (z_π − z) u`` the embeddings
with the relocated concept — ablating the relocated concept from ``x^π`` gives back ``x'``.
Under "the concept's effect does not depend on the spurious attribute", the real placement and a
relocated one are exchangeable, so ``p = P(ΔWGA_null ≥ ΔWGA)`` is a valid p-value. For linear
heads on raw embeddings each sample's probability of being correct in ``x^π`` is exact (a count
over the class's activation values); other classifiers use the class's activation distribution
reduced to equal-mass quantile atoms. Draws of each cell's number of correct predictions are then
sums of independent Bernoullis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from audit.concepts import ConceptBank
from audit.fairness.classifiers import Classifier, LinearHead
from audit.fairness.groups import Cells
from audit.fairness.stats import (
    CountSampler,
    bootstrap_delta_wga,
    delta_wga_from_pairs,
    percentile_interval,
    sequential_mc_pvalue,
)
from audit.sae import SparseAutoencoder

ABLATIONS = ("zero", "mean")
DOSE_ALPHAS = tuple(i / 4 for i in range(13))  # 0, 0.25, …, 3


# ------------------------------------------------------------------------------------------
# Concept rows: what gets ablated and reported together
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptRow:
    """One reported row: a validated name (all its latents together) or a single latent."""

    latents: tuple[int, ...]
    name: str | None  # the validated name (tested rows) or the bank's name if not validated
    label: str  # how reports show it
    tested: bool  # in the BH family (validated name)
    closest: str
    score: float

    @property
    def latent(self) -> int:
        return self.latents[0]


def build_concept_rows(bank: ConceptBank, n_latents: int) -> list[ConceptRow]:
    """One row per concept of the bank (its latents ablated together): validated concepts
    first, by name, then the others by latent (see ``ConceptBank.concept_groups``)."""
    return [
        ConceptRow(g.latents, g.name, g.label, g.validated, g.closest, g.score)
        for g in bank.concept_groups(n_latents)
    ]


# ------------------------------------------------------------------------------------------
# Closed forms and decode-and-rerun
# ------------------------------------------------------------------------------------------


def decoder_effects(sae: SparseAutoencoder, head: LinearHead) -> Tensor:
    """``g_j = w · u_j`` for every latent: how far one unit of latent ``j`` moves a raw margin."""
    u = sae.decoder_directions().detach()
    return u @ head.weight.to(u.dtype)


def ablation_margins_raw(margin: Tensor, z: Tensor, g: Tensor, values: Tensor | None) -> Tensor:
    """Margins after ablating each latent alone, linear head on raw inputs: ``[B, n]``.

    ``m + (v − z) · g`` — exact, because the edit ``(v − z_j) u_j`` moves ``w·x`` by ``(v − z_j) g_j``.
    """
    base = margin[:, None].expand(-1, z.shape[1])
    if values is not None:
        base = base + (values * g)[None, :]
    return torch.addcmul(base, z, g[None, :], value=-1.0)


def ablation_margins_l2(
    dot_w: Tensor,
    sq_norm: Tensor,
    x_dot_u: Tensor,
    z: Tensor,
    g: Tensor,
    u_sq_norm: Tensor,
    bias: float,
    values: Tensor | None,
) -> Tensor:
    """Exact margins after ablating each latent alone, head on L2-normalised inputs: ``[B, n]``.

    With ``c = v − z_j``: ``(w·x + c g_j) / sqrt(‖x‖² + 2c x·u_j + c² ‖u_j‖²) + b``.
    """
    c = -z if values is None else values[None, :] - z
    num = torch.addcmul(dot_w[:, None], c, g[None, :])
    den2 = sq_norm[:, None] + 2 * c * x_dot_u + c * c * u_sq_norm[None, :]
    return num / den2.clamp_min(torch.finfo(z.dtype).tiny).sqrt() + bias


def rerun_ablation_margins(
    x: Tensor, classifier: Classifier, sae: SparseAutoencoder, latent: int, value: float | Tensor
) -> Tensor:
    """Decode-and-rerun, literally: ``x' = x + post(dec(z')) − post(dec(z))``, then the classifier."""
    z = sae.encode(x)
    edited = z.clone()
    edited[:, latent] = value
    x_edit = x + sae.decode(edited) - sae.decode(z)
    return classifier.margin(x_edit)


def encode_columns(sae: SparseAutoencoder, x: Tensor, cols: Tensor | None = None) -> Tensor:
    """The inference code, optionally restricted to some latents.

    Equal to ``sae.encode(x)[:, cols]``; for element-wise activations (ReLU-type, Matryoshka,
    BatchTopK) it computes only the requested latents and applies the activation in place,
    which saves a ``[B, n]`` temporary on the full code. TopK needs the full row.
    """
    arch = sae.cfg.arch
    if arch == "topk":
        z = sae.encode(x)
        return z if cols is None else z[:, cols]
    if cols is not None and cols.numel() == 0:
        return x.new_zeros((x.shape[0], 0))
    x_t = sae.preprocess(x) - sae.b_pre
    if cols is None:
        pre = torch.addmm(sae.b_enc, x_t, sae.W_enc)
        return _activate_subset(sae, pre, torch.arange(sae.n_latents, device=x.device))
    pre = torch.addmm(sae.b_enc[cols], x_t, sae.W_enc[:, cols])
    return _activate_subset(sae, pre, cols)


# ------------------------------------------------------------------------------------------
# Editors: margins of edited embeddings for one concept row
# ------------------------------------------------------------------------------------------


class Rows:
    """The audited rows of a store, read in chunks or by position."""

    def __init__(
        self,
        read_block: Callable[[int, int], np.ndarray],
        take: Callable[[np.ndarray], np.ndarray],
        count: int,
    ):
        self._read_block = read_block
        self._take = take
        self.count = count

    def chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, self.count, chunk):
            yield lo, self._read_block(lo, min(self.count, lo + chunk))

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self._take(positions)


@dataclass
class Engine:
    """Everything the analyses share: SAE, classifier, audited rows and per-sample base values."""

    sae: SparseAutoencoder
    classifier: Classifier
    rows: Rows
    cells: Cells
    device: torch.device
    chunk: int = 4096
    dtype: torch.dtype = torch.float32
    margin: np.ndarray = field(default=None)  # [N] base margins  # type: ignore[assignment]
    values: Tensor | None = None  # ablation values v (None = zero)
    g: Tensor | None = None  # linear heads: w · u_j
    dot_w: np.ndarray | None = None  # l2 heads: w · x
    sq_norm: np.ndarray | None = None  # l2 heads: ‖x‖²

    @property
    def kind(self) -> str:
        if isinstance(self.classifier, LinearHead):
            return "linear_l2" if self.classifier.l2 else "linear_raw"
        return "rerun"

    @property
    def exact_all(self) -> bool:
        return self.kind != "rerun"

    def x(self, positions: np.ndarray) -> Tensor:
        return self.tensor(self.rows.take(positions))

    def tensor(self, block: np.ndarray) -> Tensor:
        # A copy: store blocks can be read-only memory maps.
        return torch.tensor(block, device=self.device, dtype=self.dtype)


def _u(sae: SparseAutoencoder, latents: tuple[int, ...]) -> Tensor:
    return sae.decoder_directions().detach()[list(latents)]


def edited_margins(
    eng: Engine,
    positions: np.ndarray,
    latents: tuple[int, ...],
    coeff: Tensor,
    x_dot_u: Tensor | None = None,
) -> Tensor:
    """Margins of ``x_i + Σ_j coeff_ij u_j`` for the rows at ``positions`` (exact for every kind)."""
    m = torch.from_numpy(eng.margin[positions]).to(eng.device, eng.dtype)
    if eng.kind == "linear_raw":
        assert eng.g is not None
        return m + coeff @ eng.g[list(latents)]
    u = _u(eng.sae, latents).to(eng.dtype)
    if eng.kind == "linear_l2":
        assert eng.g is not None and eng.dot_w is not None and eng.sq_norm is not None
        head = eng.classifier
        assert isinstance(head, LinearHead)
        if x_dot_u is None:
            x_dot_u = eng.x(positions) @ u.T
        dot = torch.from_numpy(eng.dot_w[positions]).to(eng.device, eng.dtype)
        sq = torch.from_numpy(eng.sq_norm[positions]).to(eng.device, eng.dtype)
        num = dot + coeff @ eng.g[list(latents)]
        gram = u @ u.T
        den2 = sq + 2 * (coeff * x_dot_u).sum(1) + ((coeff @ gram) * coeff).sum(1)
        return num / den2.clamp_min(torch.finfo(eng.dtype).tiny).sqrt() + head.bias
    out = m.clone()
    changed = torch.nonzero((coeff != 0).any(1)).flatten().cpu().numpy()
    for lo in range(0, changed.size, eng.chunk):
        sel = changed[lo : lo + eng.chunk]
        x = eng.x(positions[sel]) + coeff[sel] @ u
        with torch.no_grad():
            out[sel] = eng.classifier.margin(x)
    return out


# ------------------------------------------------------------------------------------------
# Pass 1: every latent (and every name group) at once
# ------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """Counts from the all-latent pass.

    ``flips[k, col]``: samples of stratum ``k = 2·cell + correct_before`` whose prediction flips
    when column ``col`` is ablated (columns: the ``n`` latents, then the name groups). For a
    binary decision a flip turns a correct prediction wrong or a wrong one right, so these
    counts are the pair counts of the paired bootstrap.
    """

    flips: np.ndarray  # [2·cells, n + R] int64
    stratum_n: np.ndarray  # [2·cells]
    act_sum: np.ndarray  # [cells, n] float64
    act_count: np.ndarray  # [cells, n] int64
    exact: bool
    group_latents: list[tuple[int, ...]]
    checked_fraction: float = 1.0  # share of (sample, latent) pairs the exact pruning evaluated

    def pairs(self, col: int, cell_label: np.ndarray | None = None) -> np.ndarray:
        """``[cells, 4]`` pair counts (✓✓, ✓✗, ✗✓, ✗✗) for one column."""
        flips = self.flips[:, col].reshape(-1, 2)
        n = self.stratum_n.reshape(-1, 2)
        n10 = flips[:, 1]  # correct before, flipped: wrong after
        n01 = flips[:, 0]  # wrong before, flipped: right after
        return np.stack([n[:, 1] - n10, n10, n01, n[:, 0] - n01], axis=1)


def _group_matrix(
    groups: list[tuple[int, ...]], n: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    mat = torch.zeros((n, len(groups)), device=device, dtype=dtype)
    for r, latents in enumerate(groups):
        mat[list(latents), r] = 1.0
    return mat


def mean_activations(eng: Engine, progress: Callable[[int], None] | None = None) -> Tensor:
    """E[z_j] over the audited rows (the ``mean`` ablation value); one extra encoding pass."""
    total = torch.zeros(eng.sae.n_latents, dtype=torch.float64, device=eng.device)
    for _, block in eng.rows.chunks(eng.chunk):
        x = eng.tensor(block)
        with torch.no_grad():
            total += eng.sae.encode(x).sum(0, dtype=torch.float64)
        if progress:
            progress(len(block))
    return (total / max(1, eng.rows.count)).to(eng.dtype)


#: Rows per block of the exact pruning (rows are sorted by |margin| within a chunk).
PRUNE_BLOCK = 256


def _flip_counts(after: Tensor, m: Tensor, onehot: Tensor) -> Tensor:
    """Per-stratum counts of predictions that change: ``[strata, cols]``."""
    flip = (after > 0) != (m > 0)[:, None]
    return onehot @ flip.to(onehot.dtype)


def _raw_flips_pruned(
    z: Tensor,
    m: Tensor,
    g: Tensor,
    values: Tensor | None,
    onehot: Tensor,
    strata: Tensor,
    out: Tensor,
) -> int:
    """Flip counts of every single-latent ablation for a linear head on raw inputs, exactly.

    A latent can only flip sample ``i`` if its largest possible margin change in this chunk,
    ``reach_j = max(v_j, max_i z_ij) · |g_j|``, is at least ``|m_i|`` (the change is
    ``(v_j − z_ij) g_j`` and ``|v_j − z_ij| ≤ max(v_j, z_ij)`` for non-negative codes). With the
    rows sorted by ``|m|``, block ``b`` only needs the latents whose reach exceeds the block's
    smallest ``|m|``; every other (sample, latent) pair provably keeps its prediction (a float
    sum ``m + Δ`` with ``|Δ| < |m|`` keeps the sign of ``m``). Returns the pairs evaluated.
    """
    absm = m.abs()
    zmax = z.amax(0)
    bound = zmax if values is None else torch.maximum(zmax, values)
    reach = bound * g.abs()
    checked = 0
    for r0 in range(0, z.shape[0], PRUNE_BLOCK):
        cols = torch.nonzero(reach >= absm[r0]).flatten()
        if cols.numel() == 0:
            break  # rows are sorted: later blocks have larger |m|
        r1 = min(z.shape[0], r0 + PRUNE_BLOCK)
        sub = z[r0:r1].index_select(1, cols)
        if values is None:
            # Zero ablation changes only active entries: evaluate the non-zeros alone.
            rows, idx = torch.nonzero(sub, as_tuple=True)
            mm = m[r0:r1][rows]
            after = torch.addcmul(mm, sub[rows, idx], g[cols[idx]], value=-1.0)
            flip = (after > 0) != (mm > 0)
            if bool(flip.any()):
                hit_rows, hit_cols = rows[flip], cols[idx[flip]]
                out.index_put_(
                    (strata[r0:r1][hit_rows], hit_cols),
                    torch.ones(hit_rows.numel(), dtype=out.dtype, device=out.device),
                    accumulate=True,
                )
            checked += rows.numel()
            continue
        after = ablation_margins_raw(m[r0:r1], sub, g[cols], values[cols])
        out.index_add_(1, cols, _flip_counts(after, m[r0:r1], onehot[:, r0:r1]).to(out.dtype))
        checked += sub.numel()
    return checked


def scan_latents(
    eng: Engine,
    groups: list[tuple[int, ...]],
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Pass 1: base margins and, for every latent and name group, the flip counts."""
    sae, cells = eng.sae, eng.cells
    n = sae.n_latents
    n_strata = 2 * cells.n_cells
    cell_all, y_all = cells.cell, cells.y
    kind = eng.kind
    u = sae.decoder_directions().detach().to(eng.dtype)
    dev, dt = eng.device, eng.dtype
    flips = torch.zeros((n_strata, n + len(groups)), device=dev, dtype=torch.float64)
    act_sum = torch.zeros((n_strata, n), device=dev, dtype=torch.float64)
    act_count = torch.zeros((n_strata, n), device=dev, dtype=torch.float64)
    margins = np.empty(eng.rows.count, dtype=np.float64)
    dot_w = np.empty(eng.rows.count) if kind == "linear_l2" else None
    sq_norm = np.empty(eng.rows.count) if kind == "linear_l2" else None
    values = eng.values
    gmat = _group_matrix(groups, n, dev, dt)
    checked = 0
    if kind != "rerun":
        head = eng.classifier
        assert isinstance(head, LinearHead)
        w = head.weight.to(dev, dt)
        g = (u @ w).contiguous()
        eng.g = g
        u_sq = (u * u).sum(1)
        grams = [u[list(s)] @ u[list(s)].T for s in groups]
        group_flat = torch.tensor([j for s in groups for j in s], dtype=torch.long, device=dev)
        group_of = torch.tensor(
            [r for r, s in enumerate(groups) for _ in s], dtype=torch.long, device=dev
        )
        vg_groups = None if values is None else (values * g) @ gmat
    for lo, block in eng.rows.chunks(eng.chunk):
        hi = lo + len(block)
        x = eng.tensor(block)
        with torch.no_grad():
            m = eng.classifier.margin(x)
        m_np = m.cpu().numpy().astype(np.float64)
        # Rows sorted by |margin|: the exact pruning needs it, the counts do not care.
        order = np.argsort(np.abs(m_np), kind="stable")
        margins[lo:hi] = m_np
        key = 2 * cell_all[lo:hi] + ((m_np > 0) == (y_all[lo:hi] == 1))
        order_t = torch.from_numpy(order).to(dev)
        x, m = x[order_t], m[order_t]
        strata = torch.from_numpy(key[order]).to(dev)
        onehot = torch.zeros((n_strata, len(block)), device=dev, dtype=dt)
        onehot[strata, torch.arange(len(block), device=dev)] = 1.0
        if kind == "rerun":
            # First-order screening: the input gradient stands in for w (the shortlist is then
            # evaluated exactly by decode-and-rerun).
            x_req = x.detach().clone().requires_grad_(True)
            try:
                with torch.enable_grad():
                    grad = torch.autograd.grad(eng.classifier.margin(x_req).sum(), x_req)[0]
            except RuntimeError:
                grad = torch.zeros_like(x)
        with torch.no_grad():
            z = encode_columns(sae, x)
            act_sum += (onehot @ z).double()
            # Codes are non-negative for every architecture, so sign(z) is the 0/1 activity.
            act_count += (onehot @ torch.sign(z)).double()
            if kind == "linear_raw":
                checked += _raw_flips_pruned(z, m, g, values, onehot, strata, flips[:, :n])
                if groups:
                    # Σ_{j∈S} z_j g_j by gathering the groups' columns (sparse, unlike z @ M).
                    zg = z.index_select(1, group_flat) * g[group_flat]
                    effect = torch.zeros((len(block), len(groups)), device=dev, dtype=dt)
                    effect.index_add_(1, group_of, zg)
                    after_g = m[:, None] - effect
                    if vg_groups is not None:
                        after_g = after_g + vg_groups[None, :]
                    flips[:, n:] += _flip_counts(after_g, m, onehot)
            elif kind == "linear_l2":
                xu = x @ u.T
                dw = x @ w
                sq = (x * x).sum(1)
                inverse = np.argsort(order, kind="stable")
                dot_w[lo:hi] = dw.cpu().numpy()[inverse]
                sq_norm[lo:hi] = sq.cpu().numpy()[inverse]
                after = ablation_margins_l2(dw, sq, xu, z, g, u_sq, head.bias, values)
                flips[:, :n] += _flip_counts(after, m, onehot)
                checked += after.numel()
                if groups:
                    after_g = torch.stack(
                        [
                            _l2_group_margin(dw, sq, xu, z, g, gram, s, head.bias, values)
                            for s, gram in zip(groups, grams, strict=True)
                        ],
                        dim=1,
                    )
                    flips[:, n:] += _flip_counts(after_g, m, onehot)
            else:
                gu = grad @ u.T
                c = -z if values is None else values[None, :] - z
                after = m[:, None] + c * gu
                flips[:, :n] += _flip_counts(after, m, onehot)
                if groups:
                    flips[:, n:] += _flip_counts(m[:, None] + (c * gu) @ gmat, m, onehot)
        if progress:
            progress(len(block))
    eng.margin = margins
    eng.dot_w, eng.sq_norm = dot_w, sq_norm
    stratum_n = np.bincount(
        2 * cell_all + ((margins > 0) == (y_all == 1)), minlength=n_strata
    ).astype(np.int64)
    cell_sum = act_sum.cpu().numpy().reshape(cells.n_cells, 2, n).sum(1)
    cell_count = np.rint(act_count.cpu().numpy().reshape(cells.n_cells, 2, n).sum(1))
    return ScanResult(
        np.rint(flips.cpu().numpy()).astype(np.int64),
        stratum_n,
        cell_sum,
        cell_count.astype(np.int64),
        kind != "rerun",
        groups,
        checked / max(1, eng.rows.count * n),
    )


def _l2_group_margin(dw, sq, xu, z, g, gram, latents, bias, values):  # type: ignore[no-untyped-def]
    idx = list(latents)
    c = -z[:, idx] if values is None else values[idx][None, :] - z[:, idx]
    num = dw + c @ g[idx]
    den2 = sq + 2 * (c * xu[:, idx]).sum(1) + ((c @ gram) * c).sum(1)
    return num / den2.clamp_min(torch.finfo(z.dtype).tiny).sqrt() + bias


# ------------------------------------------------------------------------------------------
# Pass 2: per-sample activations for the rows that need them
# ------------------------------------------------------------------------------------------


def extract_columns(
    eng: Engine, latents: list[int], progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``z[:, latents]`` for every audited row (and ``x · u_j`` for heads on L2 inputs)."""
    out = np.zeros((eng.rows.count, len(latents)), dtype=np.float32)
    xu_out = np.zeros_like(out) if eng.kind == "linear_l2" else None
    if not latents:
        return out, xu_out
    sae = eng.sae
    cols = torch.tensor(latents, dtype=torch.long, device=eng.device)
    u = _u(sae, tuple(latents)).to(eng.dtype)
    elementwise = sae.cfg.arch != "topk"
    if elementwise:  # gather the encoder columns once, not per chunk
        w_sub = sae.W_enc.detach()[:, cols].contiguous()
        b_sub = sae.b_enc.detach()[cols]
    for lo, block in eng.rows.chunks(eng.chunk):
        x = eng.tensor(block)
        with torch.no_grad():
            if elementwise:
                pre = torch.addmm(b_sub, sae.preprocess(x) - sae.b_pre, w_sub)
                z = _activate_subset(sae, pre, cols)
            else:
                z = encode_columns(sae, x, cols)
            out[lo : lo + len(block)] = z.cpu().numpy()
            if xu_out is not None:
                xu_out[lo : lo + len(block)] = (x @ u.T).cpu().numpy()
        if progress:
            progress(len(block))
    return out, xu_out


def _activate_subset(sae: SparseAutoencoder, pre: Tensor, cols: Tensor) -> Tensor:
    """The element-wise activation of a column subset of pre-activations (in place)."""
    if sae.cfg.arch == "batchtopk":
        theta = sae.threshold.clamp_min(0)
        if theta.ndim == 1:
            theta = theta[cols]
        return sae._cap(pre.mul_(pre > theta))
    return sae._cap(pre.clamp_min_(0))


# ------------------------------------------------------------------------------------------
# Per-row analyses
# ------------------------------------------------------------------------------------------


@dataclass
class RowData:
    """Per-sample values of one concept row (from pass 2)."""

    z: np.ndarray  # [N, |S|] activations of the row's latents
    x_dot_u: np.ndarray | None  # [N, |S|] (heads on L2 inputs)


def _coeff_tensor(eng: Engine, coeff: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(coeff)).to(eng.device, eng.dtype)


def ablation_coefficients(eng: Engine, row: ConceptRow, data: RowData) -> np.ndarray:
    if eng.values is None:
        return -data.z
    v = eng.values[list(row.latents)].cpu().numpy()
    return v[None, :] - data.z


def row_margins(eng: Engine, row: ConceptRow, data: RowData, coeff: np.ndarray) -> np.ndarray:
    positions = np.arange(eng.rows.count)
    xu = None if data.x_dot_u is None else torch.from_numpy(data.x_dot_u).to(eng.device, eng.dtype)
    with torch.no_grad():
        out = edited_margins(eng, positions, row.latents, _coeff_tensor(eng, coeff), xu)
    return out.cpu().numpy().astype(np.float64)


def exact_pairs(eng: Engine, row: ConceptRow, data: RowData) -> tuple[np.ndarray, np.ndarray]:
    """Pair counts and after-ablation margins by decode-and-rerun (or the closed form)."""
    from audit.fairness.stats import pair_counts

    after = row_margins(eng, row, data, ablation_coefficients(eng, row, data))
    y = eng.cells.y
    before_ok = (eng.margin > 0) == (y == 1)
    after_ok = (after > 0) == (y == 1)
    return pair_counts(before_ok, after_ok, eng.cells.cell, eng.cells.n_cells), after


def cell_accuracies(cells: Cells, pred: np.ndarray) -> np.ndarray:
    n = np.bincount(cells.cell, minlength=cells.n_cells)
    k = np.bincount(
        cells.cell, weights=(pred == cells.y).astype(np.float64), minlength=cells.n_cells
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / np.maximum(n, 1), np.nan)


def dose_response(eng: Engine, row: ConceptRow, data: RowData, alphas=DOSE_ALPHAS) -> dict:
    """Steering ``z_j := α z_j`` for α = 0 … 3: WGA and every cell's accuracy per α."""
    wga, per_cell, overall = [], [], []
    for alpha in alphas:
        if alpha == 1.0:
            margins = eng.margin
        else:
            margins = row_margins(eng, row, data, (alpha - 1.0) * data.z)
        pred = (margins > 0).astype(np.int8)
        acc = cell_accuracies(eng.cells, pred)
        wga.append(float(np.nanmin(acc)))
        per_cell.append(acc)
        overall.append(float((pred == eng.cells.y).mean()))
    per_cell_arr = np.array(per_cell)
    return {
        "alphas": [float(a) for a in alphas],
        "worst_group_accuracy": wga,
        "accuracy": overall,
        "accuracy_by_group": {
            eng.cells.cell_name(c): [float(v) for v in per_cell_arr[:, c]]
            for c in range(eng.cells.n_cells)
            if np.isfinite(per_cell_arr[:, c]).all()
        },
    }


def _class_atoms(values: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """A class's activation vectors reduced to atoms: the zero vector (inactive samples) and up to
    ``n_atoms`` equal-count bins of the active ones ordered by total activation (bin means).
    Returns ``(atoms [K, |S|], counts [K])``."""
    total = values.sum(1)
    active = np.nonzero(total > 0)[0]
    atoms = [np.zeros(values.shape[1])]
    counts = [values.shape[0] - active.size]
    if active.size:
        order = active[np.argsort(total[active], kind="stable")]
        for part in np.array_split(order, min(n_atoms, active.size)):
            atoms.append(values[part].mean(0))
            counts.append(part.size)
    return np.array(atoms), np.array(counts, dtype=np.int64)


def relocation_success_counts(
    eng: Engine, row: ConceptRow, data: RowData, n_atoms: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """For every sample, how many of its class's ``n_t`` activation values — placed on it instead
    of its own — leave it correctly classified. Returns ``(successes [N], n_t [N])``."""
    y = eng.cells.y
    successes = np.zeros(eng.rows.count, dtype=np.int64)
    class_n = np.zeros(eng.rows.count, dtype=np.int64)
    if eng.kind == "linear_raw":
        assert eng.g is not None
        g = eng.g[list(row.latents)].cpu().numpy().astype(np.float64)
        effect = data.z.astype(np.float64) @ g  # the concept's contribution to each margin
        for t in (0, 1):
            idx = np.nonzero(y == t)[0]
            if idx.size == 0:
                continue
            pool = np.sort(effect[idx])
            # Correct in x^π iff sign(m − e_i + E) matches the label, E drawn from the pool.
            tau = effect[idx] - eng.margin[idx]
            at_most = np.searchsorted(pool, tau, side="right")  # E ≤ τ: margin ≤ 0
            successes[idx] = (idx.size - at_most) if t == 1 else at_most
            class_n[idx] = idx.size
        return successes, class_n
    for t in (0, 1):
        idx = np.nonzero(y == t)[0]
        if idx.size == 0:
            continue
        atoms, counts = _class_atoms(data.z[idx].astype(np.float64), n_atoms)
        class_n[idx] = idx.size
        for atom, count in zip(atoms, counts, strict=True):
            coeff = atom[None, :] - data.z[idx]
            xu = (
                None
                if data.x_dot_u is None
                else torch.from_numpy(data.x_dot_u[idx]).to(eng.device, eng.dtype)
            )
            with torch.no_grad():
                m = edited_margins(eng, idx, row.latents, _coeff_tensor(eng, coeff), xu)
            ok = (m.cpu().numpy() > 0) == (t == 1)
            successes[idx] += ok.astype(np.int64) * int(count)
    return successes, class_n


def relocation_null(
    eng: Engine,
    row: ConceptRow,
    data: RowData,
    delta_wga: float,
    wga_after: float,
    max_draws: int,
    rng: np.random.Generator,
    n_atoms: int = 16,
) -> tuple[float, int, tuple[float, float]]:
    """Sequential Monte-Carlo p-value of ΔWGA against the relocation null; also the null's
    central 95 % band. Returns ``(p, draws, (lo, hi))``."""
    successes, class_n = relocation_success_counts(eng, row, data, n_atoms)
    cell = eng.cells.cell
    plans = []
    for c in range(eng.cells.n_cells):
        idx = np.nonzero(cell == c)[0]
        if idx.size == 0:
            continue
        s, nt = successes[idx], class_n[idx]
        random_part = (s > 0) & (s < nt)
        probs = s[random_part] / nt[random_part]
        plans.append((idx.size, CountSampler(probs, int(np.count_nonzero(s == nt)))))

    def draw(k: int) -> np.ndarray:
        acc = np.stack([sampler.draw(k, rng) / n for n, sampler in plans], 1)
        return wga_after - acc.min(1)

    p, used, stats = sequential_mc_pvalue(draw, lambda s: s >= delta_wga - 1e-12, max_draws)
    band = percentile_interval(stats) if stats.size else (0.0, 0.0)
    return p, used, band


def bootstrap_ci(pairs: np.ndarray, samples: int, rng: np.random.Generator) -> tuple[float, float]:
    if not (pairs[:, 1].any() or pairs[:, 2].any()):
        return (0.0, 0.0)  # nothing changes: every replicate is exactly 0
    return percentile_interval(bootstrap_delta_wga(pairs, samples, rng))


def row_rng(seed: int, stream: int, row: ConceptRow) -> np.random.Generator:
    """A generator per (seed, purpose, concept), so a row's numbers never depend on other rows."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *row.latents]))


def pair_summary(pairs: np.ndarray, cells: Cells) -> dict:
    """ΔWGA, WGA after, Δaccuracy and flip rates per cell, collateral damage from pair counts."""
    n = pairs.sum(1)
    keep = n > 0
    before = np.where(keep, (pairs[:, 0] + pairs[:, 1]) / np.maximum(n, 1), np.nan)
    after = np.where(keep, (pairs[:, 0] + pairs[:, 2]) / np.maximum(n, 1), np.nan)
    flips = (
        pairs[:, 1] + pairs[:, 2]
    )  # binary decision: correctness changes iff the prediction does
    names = [cells.cell_name(c) for c in range(cells.n_cells)]
    out = {
        "delta_wga": delta_wga_from_pairs(pairs),
        "wga_after": float(np.nanmin(after)),
        "delta_accuracy": {
            names[c]: float(after[c] - before[c]) for c in range(cells.n_cells) if keep[c]
        },
        "flip_rate_by_group": {
            names[c]: float(flips[c] / n[c]) for c in range(cells.n_cells) if keep[c]
        },
        "flip_rate": float(flips.sum() / max(1, n.sum())),
        "delta_accuracy_overall": float((pairs[:, 2].sum() - pairs[:, 1].sum()) / max(1, n.sum())),
    }
    without = _without_spurious_cells(cells)
    m = n[without].sum()
    out["collateral_damage"] = (
        float((pairs[without, 1].sum() - pairs[without, 2].sum()) / m) if m else None
    )
    return out


def _without_spurious_cells(cells: Cells) -> np.ndarray:
    """Cells whose attribute value is not the spurious one (``cells.spurious_present``)."""
    attr = np.arange(cells.n_cells) % cells.n_values
    if cells.spurious_present is None:
        return np.zeros(cells.n_cells, dtype=bool)
    return attr != cells.spurious_present


def top_examples(
    eng: Engine, data: RowData, after: np.ndarray, worst_cell: int, k: int = 6
) -> tuple[list[int], list[int]]:
    """Positions of the top-activating rows and of flipped rows (worst group first, largest
    margin change first)."""
    total = data.z.sum(1)
    order = np.lexsort((np.arange(total.size), -total))
    top = [int(i) for i in order[:k] if total[i] > 0]
    flipped = np.nonzero((after > 0) != (eng.margin > 0))[0]
    if flipped.size:
        change = np.abs(after[flipped] - eng.margin[flipped])
        in_worst = eng.cells.cell[flipped] == worst_cell
        order = np.lexsort((flipped, -change, ~in_worst))
        flipped = flipped[order]
    return top, [int(i) for i in flipped[:k]]
