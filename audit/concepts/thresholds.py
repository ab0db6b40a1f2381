"""Validity thresholds set against chance: the cosine that random directions reach against a
vocabulary (text naming)."""

from __future__ import annotations

import numpy as np
import torch

from audit.concepts.matching import top_matches

#: Random directions used to set the default threshold, and the quantile taken.
NULL_DIRECTIONS = 2000
NULL_QUANTILE = 0.99


def random_direction_threshold(
    texts: np.ndarray,
    basis_from: np.ndarray,
    *,
    n_directions: int = NULL_DIRECTIONS,
    quantile: float = NULL_QUANTILE,
    seed: int = 0,
    screen: str = "auto",
) -> tuple[float, np.ndarray]:
    """The default naming threshold: the ``quantile`` of the best cosine that random unit
    directions reach against the same vocabulary.

    The directions are isotropic Gaussian draws projected onto the span of ``basis_from`` (the
    decoder directions), so a dictionary confined to a subspace is compared with random
    directions in that subspace. Returns ``(threshold, best cosine of each random direction)``.
    """
    rng = np.random.default_rng(seed)
    dim = basis_from.shape[1]
    draws = rng.standard_normal((n_directions, dim)).astype(np.float32)
    # The rows' span: eigenvectors of the d×d Gram matrix with non-negligible eigenvalues
    # (cheaper than an SVD of the [n, d] dictionary).
    basis = torch.as_tensor(np.array(basis_from, dtype=np.float32))
    basis = basis / basis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    eigenvalues, eigenvectors = torch.linalg.eigh((basis.T @ basis).double())
    keep = eigenvalues > eigenvalues.max().clamp_min(1e-30) * 1e-10
    if int(keep.sum()) < dim:
        span = eigenvectors[:, keep].float().numpy()
        draws = (draws @ span) @ span.T
    best, _ = top_matches(draws, texts, 1, screen=screen)
    return float(np.quantile(best[:, 0], quantile)), best[:, 0]
