"""BatchTopK SAE (Bussmann et al., 2024).

Training keeps the ``k·B`` largest pre-activations of the whole batch (then ReLU), so rows
share a sparsity budget. Inference must not depend on the batch, so training also estimates a
threshold ``θ``: an exponential moving average of the smallest activation the batch top-k kept.
At inference ``z = pre · 1[pre > θ]`` (``θ ≥ 0``), the same for a row alone or in any batch.
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
        self.register_buffer("threshold", torch.full((), -1.0))

    def activation(self, pre: Tensor) -> Tensor:
        theta = self.threshold.clamp_min(0)
        return pre * (pre > theta)

    def inference_description(self) -> str:
        return f"pre * (pre > {float(self.threshold.clamp_min(0).max()):.4g})"

    def activate_columns(self, pre: Tensor, cols: Tensor) -> Tensor:
        theta = self.threshold.clamp_min(0)
        if theta.ndim == 1:  # per-latent thresholds
            theta = theta[cols]
        return self._cap(pre.mul_(pre > theta))

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
        self._last_min_kept = code[active_mask].min().detach() if bool(active_mask.any()) else None
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
        if float(self.threshold) < 0:
            self.threshold.copy_(kept)
        else:
            self.threshold.mul_(THRESHOLD_MOMENTUM).add_((1 - THRESHOLD_MOMENTUM) * kept)
