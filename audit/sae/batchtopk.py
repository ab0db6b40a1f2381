"""BatchTopK SAE (Bussmann et al., 2024).

Training keeps the ``k·B`` largest pre-activations of the whole batch (then ReLU), so rows
share a sparsity budget. Inference must not depend on the batch, so training also estimates a
threshold ``θ``: an exponential moving average of the smallest activation the batch top-k kept —
one for all latents (``threshold_kind="global"``, Bussmann et al.'s choice) or one per latent
(``"per_latent"``: each latent's own smallest kept activation, updated only in batches where it
was kept; a latent never kept in training gets the largest of the others' thresholds). At
inference ``z = pre · 1[pre > θ]`` (``θ ≥ 0``), the same for a row alone or in any batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from audit.sae.base import SAEConfig, SparseAutoencoder, TrainOutput
from audit.sae.registry import register

THRESHOLD_MOMENTUM = 0.99


@register("batchtopk")
class BatchTopKSAE(SparseAutoencoder):
    arch = "batchtopk"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        assert cfg.k is not None
        self.k = int(cfg.k)
        # A negative threshold means "not estimated yet"; inference then falls back to ReLU.
        shape = (cfg.n_latents,) if cfg.threshold_kind == "per_latent" else ()
        self.register_buffer("threshold", torch.full(shape, -1.0))

    def inference_threshold(self) -> Tensor:
        """``θ ≥ 0``: ``[]`` or ``[n]``; a per-latent entry never estimated takes the largest
        estimated one (a latent the batch top-k never kept should not fire more easily)."""
        theta = self.threshold
        if theta.ndim == 1:
            theta = torch.where(theta < 0, theta.max(), theta)
        return theta.clamp_min(0)

    def activation(self, pre: Tensor) -> Tensor:
        return pre * (pre > self.inference_threshold())

    def inference_description(self) -> str:
        theta = self.inference_threshold()
        if theta.ndim == 1:
            return f"pre * (pre > θ_j), per-latent θ in [{float(theta.min()):.4g}, {float(theta.max()):.4g}]"
        return f"pre * (pre > {float(theta):.4g})"

    def activate_columns(self, pre: Tensor, cols: Tensor) -> Tensor:
        theta = self.inference_threshold()
        if theta.ndim == 1:
            theta = theta[cols]
        return self._cap(pre.mul_(pre > theta))

    def smallest_kept(self, code: Tensor) -> Tensor | None:
        """The smallest activation the batch top-k kept: ``[]``, or ``[n]`` per latent (``inf``
        where a latent was not kept); ``None`` when nothing was kept."""
        active = code > 0
        if not bool(active.any()):
            return None
        if self.threshold.ndim == 0:
            return code[active].min().detach()
        return torch.where(active, code, torch.full_like(code, float("inf"))).amin(0).detach()

    def batch_code(self, pre: Tensor) -> Tensor:
        flat = pre.reshape(-1)
        keep = min(self.k * pre.shape[0], flat.numel())
        values, indices = torch.topk(flat, keep)
        return torch.zeros_like(flat).scatter(0, indices, values.clamp_min(0)).view_as(pre)

    def training_loss(self, x_tilde: Tensor, dead: Tensor | None = None) -> TrainOutput:
        pre = self.pre_activations(x_tilde)
        code = self.batch_code(pre)
        x_hat = self.decode_tilde(code)
        recon = self.reconstruction_loss(x_tilde, x_hat)
        aux = self.aux_loss(x_tilde, x_hat, pre, dead)
        active_mask = code > 0
        self._last_min_kept = self.smallest_kept(code)
        return TrainOutput(
            recon + aux,
            recon.detach(),
            aux.detach(),
            x_hat.detach(),
            active_mask.sum(1),
            active_mask.any(0),
        )

    @torch.no_grad()
    def after_step(self, train_output: TrainOutput) -> None:
        kept = getattr(self, "_last_min_kept", None)
        if kept is None:
            return
        kept = kept.to(self.threshold)
        moved = self.threshold * THRESHOLD_MOMENTUM + (1 - THRESHOLD_MOMENTUM) * kept
        updated = torch.where(self.threshold < 0, kept, moved)
        # Per latent, only the latents kept in this batch move (kept is inf elsewhere).
        self.threshold.copy_(torch.where(torch.isfinite(kept), updated, self.threshold))
