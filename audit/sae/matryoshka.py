"""Matryoshka SAE (Zaigrajew et al., ICML 2025): one dictionary, nested TopK levels.

Level ``i`` keeps the ``k_i`` largest pre-activations (then ReLU); the loss is
``L = Σ_i α_i ℓ(x̃, x̂̃_i) / Σ_i α_i`` with ``α_i = 1`` (``uw``) or ``α = [h, h−1, …, 1]`` over
ascending ``k`` (``rw``). ``ℓ`` is the MSE averaged over the batch *and* the dimensions
(``mse``, default) or the per-sample normalised error (``nmse``). Inference uses the
``k = n`` level, ``ReLU(pre)``, optionally limited to the top-k.
"""

from __future__ import annotations

from torch import Tensor

from audit.errors import InputError
from audit.sae.base import SAEConfig, SparseAutoencoder, TrainOutput
from audit.sae.nested import naive_nested_loss, nested_topk_loss
from audit.sae.registry import register


def matryoshka_k_list(n_latents: int, k_min: int = 64) -> tuple[int, ...]:
    """``k_min, 2·k_min, 4·k_min, …`` while ``≤ n``, then ``n`` appended once.

    >>> matryoshka_k_list(4096, 64)
    (64, 128, 256, 512, 1024, 2048, 4096)
    >>> matryoshka_k_list(6144, 64)
    (64, 128, 256, 512, 1024, 2048, 4096, 6144)
    >>> matryoshka_k_list(32, 64)
    (32,)
    """
    if k_min < 1:
        raise InputError(f"--k-min must be positive, got {k_min}")
    ks = []
    k = k_min
    while k <= n_latents:
        ks.append(k)
        k *= 2
    if not ks or ks[-1] != n_latents:
        ks.append(n_latents)
    return tuple(ks)


@register("matryoshka")
class MatryoshkaSAE(SparseAutoencoder):
    arch = "matryoshka"

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        assert cfg.k_list is not None
        self.k_list = tuple(cfg.k_list)
        self.level_weights = cfg.level_weights

    def activation(self, pre: Tensor) -> Tensor:
        return pre.clamp_min(0)

    def training_loss(self, x_tilde: Tensor, dead: Tensor | None = None) -> TrainOutput:
        out = nested_topk_loss(
            x_tilde,
            self.W_enc,
            self.b_enc,
            self.W_dec,
            self.b_pre,
            self.k_list,
            self.level_weights,
            self.cfg.loss,
            return_pre=self.uses_aux_loss(dead),
            center=self.nmse_center,
        )
        aux = self.aux_loss(x_tilde, out.x_hat, out.pre, dead)
        return TrainOutput(
            out.loss + aux, out.loss.detach(), aux.detach(), out.x_hat, out.active, out.fired
        )

    def naive_training_loss(self, x_tilde: Tensor) -> Tensor:
        """The per-level reference computation (for tests and benchmarks)."""
        pre = self.pre_activations(x_tilde)
        loss, _ = naive_nested_loss(
            pre,
            x_tilde,
            self.W_dec,
            self.b_pre,
            self.k_list,
            self.level_weights,
            self.cfg.loss,
            self.nmse_center,
        )
        return loss
