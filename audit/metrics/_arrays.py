"""Array coercion shared by the metrics: NumPy, nested lists or torch, to float64 tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = np.ndarray | Tensor | Sequence


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
