"""Initialisation from the data: ``b_pre`` at the geometric median of the preprocessed rows.

With non-negative codes an SAE can only *add* decoder rows to ``b_pre``, so ``b_pre`` should sit
where a sample holding none of the features lies. After mean-centring, ``b_pre = 0`` is the data
mean: every frequent feature is part of it, and a sample without one needs a negative code.
The geometric median (the point minimising the summed *distances* to the samples) is not
pulled by features present in a minority of the samples, so it starts ``b_pre`` near the
featureless point (Bricken et al., 2023, used it for the same reason).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from audit.sae.data import Preprocessing
from audit.store import EmbeddingStore

B_PRE_INITS = ("zero", "geometric_median")
#: Rows of the seeded subsample the median is computed on (enough for ~1e-2 relative accuracy).
MEDIAN_ROWS = 16_384


def geometric_median(x: Tensor, iterations: int = 200, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm, started at the mean, in float64; ``x`` is ``[N, d]``.

    >>> geometric_median(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]]))
    tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    points = x.to(torch.float64)
    median = points.mean(0)
    for _ in range(iterations):
        distances = (points - median).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / distances
        updated = (weights[:, None] * points).sum(0) / weights.sum()
        moved = float((updated - median).norm())
        median = updated
        if moved <= tol * max(1.0, float(median.norm())):
            break
    return median


def sample_preprocessed(
    store: EmbeddingStore, prep: Preprocessing, seed: int, rows: int = MEDIAN_ROWS
) -> Tensor:
    """A seeded subsample of the store's rows, preprocessed (``[min(rows, N), d]`` float32),
    read and preprocessed in pieces so no float64 copy of the whole sample is made."""
    rng = np.random.default_rng(seed)
    count = min(rows, store.count)
    chosen = np.sort(rng.choice(store.count, size=count, replace=False))
    out = np.empty((count, store.dim), dtype=np.float32)
    for start in range(0, count, 4096):
        out[start : start + 4096] = prep.apply(store.take(chosen[start : start + 4096]))
    return torch.from_numpy(out)


def initial_b_pre(
    kind: str, store: EmbeddingStore, prep: Preprocessing, seed: int, rows: int = MEDIAN_ROWS
) -> Tensor:
    """``b_pre`` at the start of training: ``zero`` (the data mean when mean-centring) or the
    ``geometric_median`` of a seeded subsample of ``rows`` rows, in preprocessed space."""
    if kind == "zero":
        return torch.zeros(store.dim)
    if kind == "geometric_median":
        return geometric_median(sample_preprocessed(store, prep, seed, max(1, rows))).float()
    raise ValueError(f"unknown b_pre initialisation {kind!r}; choose one of {B_PRE_INITS}")
