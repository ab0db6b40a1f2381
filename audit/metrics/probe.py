"""Linear-probe agreement between an embedding and its reconstruction: LP-KL, LP-agreement."""

from __future__ import annotations

import torch
from torch import Tensor

from audit.metrics._arrays import ArrayLike, _f64


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
