"""TopK SAE (Gao et al., 2024): keep each row's ``k`` largest pre-activations, then ReLU."""

from __future__ import annotations

import torch
from torch import Tensor

from audit.sae.base import SAEConfig, SparseAutoencoder, TrainOutput
from audit.sae.nested import nested_topk_loss
from audit.sae.registry import register


@register("topk")
class TopKSAE(SparseAutoencoder):
    arch = "topk"
    elementwise = False  # a latent's activation depends on the others' (the row's top k)

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        assert cfg.k is not None
        self.k = int(cfg.k)

    def activation(self, pre: Tensor) -> Tensor:
        values, indices = torch.topk(pre, self.k, dim=1)
        return torch.zeros_like(pre).scatter(1, indices, values.clamp_min(0))

    def inference_description(self) -> str:
        return f"relu(topk(pre, {self.k}))"

    def training_loss(self, x_tilde: Tensor, dead: Tensor | None = None) -> TrainOutput:
        # A single-level nested loss: the same sparse-aware decode as the Matryoshka levels.
        out = nested_topk_loss(
            x_tilde,
            self.W_enc,
            self.b_enc,
            self.W_dec,
            self.b_pre,
            (self.k,),
            (1.0,),
            self.cfg.loss,
            return_pre=self.uses_aux_loss(dead),
            center=self.nmse_center,
        )
        aux = self.aux_loss(x_tilde, out.x_hat, out.pre, dead)
        return TrainOutput(
            out.loss + aux, out.loss.detach(), aux.detach(), out.x_hat, out.active, out.fired
        )
