"""Chunk accumulators: float64 sufficient statistics; merging chunks gives the exact result."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


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
