"""Linear heads: ``margin(x) = w · x̄ + b`` with ``x̄ = x`` (raw) or ``x / ‖x‖`` (l2), and the
closed forms of their response to an edit ``x' = x + Σ_j c_j u_j``.

**Raw inputs.** ``margin(x') = margin(x) + Σ_j c_j g_j`` with ``g_j = w · u_j``: every latent
of every sample in one matrix product, exactly.

**L2-normalised inputs.** Still exact, from dot products alone:
``margin(x') = (w·x + w·δ) / sqrt(‖x‖² + 2 x·δ + ‖δ‖²) + b`` with ``δ = Σ_j c_j u_j``
(:func:`l2_margin`); it needs ``x · u_j`` besides ``g``.

Files: ``.safetensors`` or ``.npz`` holding ``weight [C, d]`` and ``bias [C]`` (C = 1: a logit;
C = 2: two class scores, the margin being score₁ − score₀).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audit.errors import InputError
from audit.fairness.classifiers.base import Classifier
from audit.fairness.edits import (
    Baseline,
    ChunkScan,
    EditEffect,
    NameGroups,
    ScanChunk,
    Workspace,
    flip_counts,
    unsort,
)
from audit.fileio import file_sha256

SUFFIXES = (".safetensors", ".npz")
#: Rows per block of the exact pruning (rows are sorted by |margin| within a chunk).
PRUNE_BLOCK = 256


@dataclass(frozen=True, eq=False)
class LinearHead(Classifier):
    """``margin(x) = w · x̄ + b`` with ``x̄ = x`` (raw) or ``x / ‖x‖`` (l2); ``kind`` is
    ``probe`` when the audit fitted it."""

    weight: Tensor  # [d]
    bias: float
    input: str = "raw"
    kind: str = "linear"
    source: str | None = None
    sha256: str | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LinearHead:
        return replace(self, weight=self.weight.to(device=device, dtype=dtype or self.weight.dtype))

    def margin(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype)
        if self.l2:
            return (x @ w) / x.norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny) + self.bias
        return x @ w + self.bias

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input": self.input,
            "path": self.source,
            "sha256": self.sha256,
            "weight_norm": float(self.weight.norm()),
        }

    def edit_effect(self, u: Tensor) -> EditEffect:
        return L2LinearEffect(self, u) if self.l2 else RawLinearEffect(self, u)


# ------------------------------------------------------------------------------------------
# Raw inputs
# ------------------------------------------------------------------------------------------


def ablation_margins_raw(margin: Tensor, z: Tensor, g: Tensor, values: Tensor | None) -> Tensor:
    """Margins after ablating each latent alone: ``[B, n]``, ``m + (v − z) · g``."""
    base = margin[:, None].expand(-1, z.shape[1])
    if values is not None:
        base = base + (values * g)[None, :]
    return torch.addcmul(base, z, g[None, :], value=-1.0)


class RawLinearEffect(EditEffect):
    kind = "linear_raw"
    exact = True

    def __init__(self, head: LinearHead, u: Tensor) -> None:
        super().__init__(u)
        self.g = (u @ head.weight.to(u.device, u.dtype)).contiguous()  # g_j = w · u_j

    def scan(
        self, chunk: ScanChunk, groups: NameGroups, values: Tensor | None, out: Tensor
    ) -> ChunkScan:
        z, m, g = chunk.z, chunk.margin, self.g
        n = z.shape[1]
        checked = self._single_flips(chunk, values, out[:, :n])
        if groups.latents:
            # Σ_{j∈S} z_j g_j by gathering the groups' columns (sparse, unlike z @ M).
            zg = z.index_select(1, groups.flat) * g[groups.flat]
            effect = torch.zeros((len(z), len(groups.latents)), device=z.device, dtype=z.dtype)
            effect.index_add_(1, groups.group_of, zg)
            after = m[:, None] - effect
            if values is not None:
                after = after + ((values * g) @ groups.matrix)[None, :]
            out[:, n:] += flip_counts(after, m, chunk.onehot)
        return ChunkScan(checked)

    def _single_flips(self, chunk: ScanChunk, values: Tensor | None, out: Tensor) -> int:
        """Flip counts of every single-latent ablation, exactly, skipping pairs that cannot flip.

        A latent can only flip sample ``i`` if its largest possible margin change in this
        chunk, ``reach_j = max(v_j, max_i z_ij) · |g_j|``, is at least ``|m_i|`` (the change is
        ``(v_j − z_ij) g_j`` and ``|v_j − z_ij| ≤ max(v_j, z_ij)`` for non-negative codes). With
        the rows sorted by ``|m|``, block ``b`` only needs the latents whose reach exceeds the
        block's smallest ``|m|``; every other pair provably keeps its decision (a float sum
        ``m + Δ`` with ``|Δ| < |m|`` keeps the sign of ``m``). Returns the pairs evaluated.
        """
        z, m, g = chunk.z, chunk.margin, self.g
        absm = m.abs()
        zmax = z.amax(0)
        reach = (zmax if values is None else torch.maximum(zmax, values)) * g.abs()
        checked = 0
        for r0 in range(0, z.shape[0], PRUNE_BLOCK):
            cols = torch.nonzero(reach >= absm[r0]).flatten()
            if cols.numel() == 0:
                break  # rows are sorted: later blocks have larger |m|
            r1 = min(z.shape[0], r0 + PRUNE_BLOCK)
            sub = z[r0:r1].index_select(1, cols)
            if values is None:
                checked += _zero_ablation_flips(sub, m[r0:r1], g, cols, chunk.strata[r0:r1], out)
                continue
            after = ablation_margins_raw(m[r0:r1], sub, g[cols], values[cols])
            out.index_add_(
                1, cols, flip_counts(after, m[r0:r1], chunk.onehot[:, r0:r1]).to(out.dtype)
            )
            checked += sub.numel()
        return checked

    def margins(
        self,
        space: Workspace,
        base: Baseline,
        positions: np.ndarray,
        latents: tuple[int, ...],
        coeff: Tensor,
        x_dot_u: Tensor | None = None,
    ) -> Tensor:
        return space.from_numpy(base.margin[positions]) + coeff @ self.g[list(latents)]

    def relocated_successes(
        self, base: Baseline, z: np.ndarray, latents: tuple[int, ...], y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact: sample ``i`` with the activation of sample ``k`` of its class has margin
        ``m_i − e_i + e_k`` (``e = z · g``, the concept's contribution), so its successes are a
        count over the class's sorted contributions."""
        g = self.g[list(latents)].cpu().numpy().astype(np.float64)
        effect = z.astype(np.float64) @ g
        successes = np.zeros(len(y), dtype=np.int64)
        class_n = np.zeros(len(y), dtype=np.int64)
        for t in (0, 1):
            idx = np.nonzero(y == t)[0]
            if idx.size == 0:
                continue
            pool = np.sort(effect[idx])
            tau = effect[idx] - base.margin[idx]
            at_most = np.searchsorted(pool, tau, side="right")  # e_k ≤ τ: margin ≤ 0
            successes[idx] = (idx.size - at_most) if t == 1 else at_most
            class_n[idx] = idx.size
        return successes, class_n


def _zero_ablation_flips(
    sub: Tensor, m: Tensor, g: Tensor, cols: Tensor, strata: Tensor, out: Tensor
) -> int:
    """Zero ablation changes only active entries: evaluate the non-zeros alone."""
    rows, idx = torch.nonzero(sub, as_tuple=True)
    mm = m[rows]
    after = torch.addcmul(mm, sub[rows, idx], g[cols[idx]], value=-1.0)
    flip = (after > 0) != (mm > 0)
    if bool(flip.any()):
        hit_rows, hit_cols = rows[flip], cols[idx[flip]]
        out.index_put_(
            (strata[hit_rows], hit_cols),
            torch.ones(hit_rows.numel(), dtype=out.dtype, device=out.device),
            accumulate=True,
        )
    return rows.numel()


# ------------------------------------------------------------------------------------------
# L2-normalised inputs
# ------------------------------------------------------------------------------------------


def l2_margin(
    w_dot: Tensor, sq_norm: Tensor, x_delta: Tensor, delta_sq: Tensor, bias: float
) -> Tensor:
    """A head on L2-normalised inputs after ``x → x + δ``, from dot products alone:
    ``w·(x + δ) / sqrt(‖x‖² + 2 x·δ + ‖δ‖²) + b`` (``w_dot`` is ``w·(x + δ)``)."""
    den2 = sq_norm + 2 * x_delta + delta_sq
    return w_dot / den2.clamp_min(torch.finfo(w_dot.dtype).tiny).sqrt() + bias


class L2LinearEffect(EditEffect):
    kind = "linear_l2"
    exact = True
    projections = True

    def __init__(self, head: LinearHead, u: Tensor) -> None:
        super().__init__(u)
        self.w = head.weight.to(u.device, u.dtype)
        self.bias = head.bias
        self.g = (u @ self.w).contiguous()
        self.u_sq = (u * u).sum(1)

    def scan(
        self, chunk: ScanChunk, groups: NameGroups, values: Tensor | None, out: Tensor
    ) -> ChunkScan:
        x, z, m = chunk.x, chunk.z, chunk.margin
        xu, dw, sq = x @ self.u.T, x @ self.w, (x * x).sum(1)
        c = -z if values is None else values[None, :] - z
        # Each latent alone: δ = c_j u_j.
        after = l2_margin(
            torch.addcmul(dw[:, None], c, self.g[None, :]), sq[:, None], c * xu,
            c * c * self.u_sq[None, :], self.bias,
        )  # fmt: skip
        n = z.shape[1]
        out[:, :n] += flip_counts(after, m, chunk.onehot)
        if groups.latents:
            after_g = torch.stack(
                [self._group_margin(dw, sq, xu[:, list(s)], c[:, list(s)], s) for s in groups.latents],
                dim=1,
            )  # fmt: skip
            out[:, n:] += flip_counts(after_g, m, chunk.onehot)
        state = {"dot_w": unsort(dw, chunk.order), "sq_norm": unsort(sq, chunk.order)}
        return ChunkScan(after.numel(), state)

    def base_state(self, x: Tensor) -> dict[str, np.ndarray]:
        """``w · x`` and ``‖x‖²`` of each row: what :meth:`margins` needs besides ``x · u``."""
        return {"dot_w": (x @ self.w).cpu().numpy(), "sq_norm": (x * x).sum(1).cpu().numpy()}

    def _group_margin(
        self, dot_w: Tensor, sq_norm: Tensor, x_dot_u: Tensor, c: Tensor, latents: tuple[int, ...]
    ) -> Tensor:
        """δ = Σ_j c_j u_j over a group: w·δ = c·g, x·δ = c·(x·u), ‖δ‖² = cᵀ (U Uᵀ) c."""
        u = self.u[list(latents)]
        gram = u @ u.T
        return l2_margin(
            dot_w + c @ self.g[list(latents)], sq_norm, (c * x_dot_u).sum(1),
            ((c @ gram) * c).sum(1), self.bias,
        )  # fmt: skip

    def margins(
        self,
        space: Workspace,
        base: Baseline,
        positions: np.ndarray,
        latents: tuple[int, ...],
        coeff: Tensor,
        x_dot_u: Tensor | None = None,
    ) -> Tensor:
        if x_dot_u is None:
            x_dot_u = space.x(positions) @ self.u[list(latents)].T
        dot_w = space.from_numpy(base.state["dot_w"][positions])
        sq_norm = space.from_numpy(base.state["sq_norm"][positions])
        return self._group_margin(dot_w, sq_norm, x_dot_u, coeff, latents)


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def _read_tensors(p: Path) -> dict[str, np.ndarray]:
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in data.files}
        from safetensors.numpy import load_file

        return load_file(str(p))
    except Exception as exc:  # numpy and safetensors raise their own error types
        raise InputError(f"{p}: unreadable linear head ({type(exc).__name__})") from exc


def load_linear_head(p: Path, dim: int, input: str) -> LinearHead:
    """A linear head from ``.npz`` / ``.safetensors`` (``weight [C, d]``, ``bias [C]``)."""
    tensors = _read_tensors(p)
    if "weight" not in tensors or "bias" not in tensors:
        raise InputError(f"{p}: a linear head needs 'weight' [C, d] and 'bias' [C]")
    for key in ("weight", "bias"):
        kind = np.asarray(tensors[key]).dtype.kind
        if kind not in "fiu":  # complex would be cast with a warning, strings fail in numpy
            raise InputError(f"{p}: {key} must hold real numbers, got dtype {tensors[key].dtype}")
    weight = np.asarray(tensors["weight"], dtype=np.float64)
    bias = np.asarray(tensors["bias"], dtype=np.float64).reshape(-1)
    if weight.ndim == 1:
        weight = weight[None, :]
    if weight.ndim != 2 or weight.shape[1] != dim:
        raise InputError(
            f"{p}: weight has shape {list(weight.shape)}, expected [C, {dim}] for these embeddings"
        )
    c = weight.shape[0]
    if c not in (1, 2) or bias.shape != (c,):
        raise InputError(
            f"{p}: expected a binary head (C = 1 or 2) with bias [C]; got weight "
            f"{list(weight.shape)}, bias {list(bias.shape)}"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise InputError(f"{p}: the head contains NaN or inf")
    w, b = (weight[1] - weight[0], bias[1] - bias[0]) if c == 2 else (weight[0], bias[0])
    return LinearHead(
        torch.from_numpy(w.astype(np.float32)), float(b), input, "linear", str(p), file_sha256(p)
    )


def save_head(head: LinearHead, path: str | os.PathLike[str]) -> Path:
    """Write a linear head as ``.npz`` (``weight [1, d]``, ``bias [1]``) or ``.safetensors``."""
    from audit.fileio import atomic_path

    p = Path(path)
    weight = head.weight.detach().cpu().numpy().astype(np.float32)[None, :]
    bias = np.array([head.bias], dtype=np.float32)
    with atomic_path(p) as tmp:
        if p.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"weight": weight, "bias": bias}, str(tmp))
        else:
            with open(tmp, "wb") as fh:
                np.savez(fh, weight=weight, bias=bias)
    return p
