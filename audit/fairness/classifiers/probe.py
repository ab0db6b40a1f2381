"""The probe: a logistic-regression linear head fit on the audit's train split."""

from __future__ import annotations

import numpy as np
import torch

from audit.errors import InputError
from audit.fairness.classifiers.linear import LinearHead
from audit.fairness.classifiers.registry import check_input
from audit.fairness.config import EMBEDDING_INPUTS


def fit_probe(
    x: np.ndarray, y: np.ndarray, input: str = "raw", seed: int = 0, c: float = 1.0
) -> LinearHead:
    """A logistic-regression probe (scikit-learn, L2 penalty ``C``) fit on standardised features.

    Standardisation only helps the optimiser: the fitted weights are folded back so the head acts
    on raw (or L2-normalised) embeddings, ``w_raw = w / σ`` and ``b_raw = b − Σ w μ / σ``.
    """
    from sklearn.linear_model import LogisticRegression

    input = check_input(input, EMBEDDING_INPUTS)
    if len(np.unique(y)) < 2:
        raise InputError("the probe's train split holds only one target class")
    feats = np.asarray(x, dtype=np.float64)
    if input == "l2":
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-30)
    mu = feats.mean(0)
    sigma = feats.std(0)
    sigma[sigma < 1e-12] = 1.0
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    model.fit((feats - mu) / sigma, y)
    w = model.coef_[0] / sigma
    b = float(model.intercept_[0] - (w * mu).sum())
    return LinearHead(torch.from_numpy(w.astype(np.float32)), b, input, "probe")
