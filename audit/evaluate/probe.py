"""The linear probe behind LP-KL and LP-agreement: fit once on a seeded subset, scored per chunk."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from audit.errors import InputError
from audit.evaluate.config import (
    EvalConfig,
)
from audit.metrics import (
    probe_agreement,
    probe_kl,
)
from audit.store import EmbeddingStore


@dataclass(frozen=True)
class LinearProbe:
    """A logistic probe fit on some labelled rows of a store; the other labelled rows are scored.

    Features are ``x / ‖x‖`` (as in the paper), standardised with the fit rows' statistics, then
    ``sklearn.linear_model.LogisticRegression(C)``: a linear classifier of the embedding
    direction. It depends on the store, the labels and the seed only, so one probe serves every
    SAE evaluated on the same data.
    """

    model: Any  # sklearn Pipeline(StandardScaler, LogisticRegression)
    label_codes: np.ndarray  # [N] class index per row, -1 where unlabelled
    scored: np.ndarray  # [N] bool: labelled and not used for fitting
    classes: tuple[str, ...]
    fit_rows: int
    label_column: str | None
    fit_seconds: float

    def logits(self, x: Tensor) -> np.ndarray:
        """Decision values ``[B, C]`` (``[B]`` for two classes) for raw embeddings ``[B, d]``."""
        unit = x.double() / x.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
        return np.asarray(self.model.decision_function(unit.cpu().numpy()))

    def predict(self, logits: np.ndarray) -> np.ndarray:
        column = (logits > 0).astype(int) if logits.ndim == 1 else logits.argmax(1)
        return np.asarray(self.model.classes_)[column]


@dataclass
class _ProbeScores:
    """Running sums of the probe comparison over the scored rows of each chunk."""

    probe: LinearProbe
    kl: float = 0.0
    agree: float = 0.0
    correct_x: float = 0.0
    correct_x_hat: float = 0.0
    rows: int = 0

    def update(self, lo: int, x: Tensor, x_hat: Tensor) -> None:
        mask = self.probe.scored[lo : lo + x.shape[0]]
        if not mask.any():
            return
        sel = torch.from_numpy(mask).to(x.device)
        logit_x, logit_hat = self.probe.logits(x[sel]), self.probe.logits(x_hat[sel])
        self.kl += float(probe_kl(logit_x, logit_hat).sum())
        self.agree += float(probe_agreement(logit_x, logit_hat).sum())
        truth = self.probe.label_codes[lo : lo + x.shape[0]][mask]
        self.correct_x += float((self.probe.predict(logit_x) == truth).sum())
        self.correct_x_hat += float((self.probe.predict(logit_hat) == truth).sum())
        self.rows += int(mask.sum())

    def summary(self) -> dict[str, Any]:
        rows = max(1, self.rows)
        probe = self.probe
        return {
            "label_column": probe.label_column,
            "classes": list(probe.classes),
            "features": "x / ||x|| (L2-normalised, as in the paper), standardised",
            "model": f"sklearn StandardScaler + LogisticRegression(C={probe.model[-1].C})",
            "fit_rows": probe.fit_rows,
            "scored_rows": self.rows,
            "kl": self.kl / rows,
            "agreement": self.agree / rows,
            "accuracy_x": self.correct_x / rows,
            "accuracy_x_hat": self.correct_x_hat / rows,
        }


def fit_probe(
    store: EmbeddingStore,
    labels: pd.Series,
    cfg: EvalConfig | None = None,
    label_column: str | None = None,
) -> LinearProbe:
    """Fit the LP-KL / LP-agreement probe on a seeded subset of the labelled rows.

    The subset holds at most ``cfg.probe_fit_rows`` rows and at most half of the labelled ones;
    every other labelled row is scored. Missing labels (NaN) are skipped.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    if len(labels) != store.count:
        raise InputError(f"{len(labels)} labels for {store.count} embeddings (rows must align)")
    present = labels.notna().to_numpy()
    codes_present, classes = pd.factorize(labels[present].astype(str), sort=True)
    label_codes = np.full(store.count, -1, dtype=np.int64)
    label_codes[present] = codes_present
    name = f"label column '{label_column}'" if label_column else "labels"
    if len(classes) < 2:
        raise InputError(f"{name} needs at least two classes for the probe, found {len(classes)}")
    labelled = np.flatnonzero(present)
    if len(labelled) < 4:
        raise InputError(f"{name} has {len(labelled)} labelled rows; the probe needs at least 4")
    order = np.random.default_rng(cfg.seed).permutation(labelled)
    n_fit = min(cfg.probe_fit_rows, len(labelled) // 2)
    fit_rows = np.sort(order[:n_fit])
    y_fit = label_codes[fit_rows]
    if len(np.unique(y_fit)) < 2:
        raise InputError(f"{name}: the probe's seeded fit subset holds a single class")
    x_fit = store.take(fit_rows).astype(np.float64)
    x_fit /= np.maximum(np.linalg.norm(x_fit, axis=1, keepdims=True), 1e-12)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe_c, max_iter=1000))
    with warnings.catch_warnings():
        # A probe that has not fully converged still defines a fixed classifier to compare
        # x and x̂ with; convergence warnings would only clutter the terminal.
        warnings.simplefilter("ignore")
        model.fit(x_fit, y_fit)
    scored = present.copy()
    scored[fit_rows] = False
    return LinearProbe(
        model,
        label_codes,
        scored,
        tuple(str(c) for c in classes),
        n_fit,
        label_column,
        time.perf_counter() - started,
    )
