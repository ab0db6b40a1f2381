"""Reconstruction fidelity in raw embedding space: FVU (dataset-level and per-sample), cosine."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audit.metrics._arrays import ArrayLike, _pair


def fvu(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Dataset-level fraction of variance unexplained, ``Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²``.

    ``x, x_hat``: ``[N, d]``. ``x̄`` is the mean of ``x`` over the rows given. 0 for a perfect
    reconstruction, 1 for predicting ``x̄`` for every row (what ``1 − R²`` means).

    >>> fvu([[1.0, 0.0], [3.0, 2.0]], [[1.0, 0.0], [3.0, 2.0]])
    0.0
    >>> fvu([[1.0, 0.0], [3.0, 2.0]], [[2.0, 1.0], [2.0, 1.0]])  # the mean for every row
    1.0
    >>> fvu([[1.0, 0.0], [3.0, 2.0]], [[1.0, 1.0], [3.0, 2.0]])  # error 1 over variance 4
    0.25
    """
    xt, xh = _pair(x, x_hat)
    denom = float((xt - xt.mean(0)).pow(2).sum())
    return float((xt - xh).pow(2).sum()) / denom if denom > 0 else math.nan


def per_sample_fvu(x: ArrayLike, x_hat: ArrayLike) -> Tensor:
    """The paper's per-sample FVU of every row: ``Var_j(x_ij − x̂_ij) / Var_j(x_ij)``, ``[N]``.

    Variances run over the ``d`` coordinates of one vector (so each vector is centred on the mean
    of its own coordinates, not on the data mean); the ``1/d`` or ``1/(d−1)`` factor cancels. A
    vector whose coordinates are all equal has no variance; its ratio is ``inf`` (or ``nan``).

    >>> round(float(per_sample_fvu([[1.0, 2.0, 3.0]], [[1.0, 2.0, 4.0]])[0]), 12)  # (2/3) / 2
    0.333333333333
    """
    xt, xh = _pair(x, x_hat)
    err = xt - xh
    num = (err - err.mean(1, keepdim=True)).pow(2).sum(1)
    den = (xt - xt.mean(1, keepdim=True)).pow(2).sum(1)
    return num / den


def fvu_per_sample(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean of :func:`per_sample_fvu` over the rows (the FVU the paper reports).

    >>> x, x_hat = [[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]], [[1.0, 2.0, 4.0], [0.0, 0.0, 4.0]]
    >>> round(fvu_per_sample(x, x_hat), 12)  # (1/3 + 0) / 2
    0.166666666667
    """
    return float(per_sample_fvu(x, x_hat).mean())


def row_cosine(x: ArrayLike, x_hat: ArrayLike) -> Tensor:
    """Cosine similarity of each pair of rows, ``[N]``; 0 where either row is the zero vector.

    >>> row_cosine([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]).tolist()
    [1.0, 0.7071067811865475]
    """
    xt, xh = _pair(x, x_hat)
    norms = xt.norm(dim=1) * xh.norm(dim=1)
    dots = (xt * xh).sum(1)
    return torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


def mean_cosine(x: ArrayLike, x_hat: ArrayLike) -> float:
    """Mean cosine similarity between each ``x_i`` and its reconstruction ``x̂_i`` (CS).

    >>> round(mean_cosine([[1.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]]), 12)
    1.0
    >>> mean_cosine([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, -1.0]])
    -0.5
    """
    return float(row_cosine(x, x_hat).mean())
