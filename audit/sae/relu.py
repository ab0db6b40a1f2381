"""ReLU SAE with an L1 penalty: ``z = ReLU(pre)``, loss ``ℓ(x̃, x̂̃) + λ·mean_b Σ_j |z_bj| / ‖x̃_b‖``.

The penalty is measured relative to each sample's norm, as in the paper's reference code, so
the paper's λ values (e.g. 0.003) mean the same thing here (``‖x̃‖ ≈ sqrt(d)`` after
preprocessing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from audit.sae.base import SAEConfig, SparseAutoencoder, TrainOutput
from audit.sae.nested import nested_topk_loss
from audit.sae.registry import register


@register("relu")
class ReLUSAE(SparseAutoencoder):
    arch = "relu"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.l1 = float(cfg.l1 or 0.0)

    def activation(self, pre: Tensor) -> Tensor:
        return pre.clamp_min(0)

    def training_loss(self, x_tilde: Tensor, dead: Tensor | None = None) -> TrainOutput:
        # k = n: the whole ReLU code, decoded sparsely once the penalty has made it sparse.
        out = nested_topk_loss(
            x_tilde,
            self.W_enc,
            self.b_enc,
            self.W_dec,
            self.b_pre,
            (self.n_latents,),
            (1.0,),
            self.cfg.loss,
            center=self.nmse_center,
        )
        norms = x_tilde.norm(dim=1).clamp_min(torch.finfo(x_tilde.dtype).tiny)
        sparsity = (out.pre.clamp_min(0).sum(1) / norms).mean()
        aux = self.aux_loss(x_tilde, out.x_hat, out.pre, dead)
        loss = out.loss + self.l1 * sparsity + aux
        return TrainOutput(loss, out.loss.detach(), aux.detach(), out.x_hat, out.active, out.fired)
