"""A bank's names checked again on the audited images.

A bank's image-validated name held on the probe images it was built with: the concept's summed
activation predicted the word's zero-shot labels on held-out probe images better than random
latents (:mod:`audit.concepts.grouping`). The audited images may be another kind of image. So
the audit labels its own rows the same way — an image shows word ``w`` when
``x̂ · (t̂_w − t̄) > θ_w``, with the direction and ``θ_w`` the bank kept
(:class:`~audit.concepts.bank.WordCheck`) — and asks the same question there: does the
concept's summed activation predict those labels (their absence, for a ``no <word>`` concept)
with an AUC at least the bank's random-latent threshold? A name that does not hold there is
reported as such and not flagged: the effect is real, the word may not be.

Too few labelled rows (fewer than :data:`MIN_LABELLED` showing the word, or not showing it)
decide nothing: the check is reported with its counts and ``holds`` null.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from audit.concepts.auc import auc
from audit.concepts.bank import ABSENT, ImageScores, WordCheck

MIN_LABELLED = 10


@dataclass(frozen=True)
class NameCheck:
    """The name's test repeated on the audited rows."""

    auc: float | None  # None: too few rows with (or without) the word's label
    labelled: int  # audited rows whose zero-shot label shows the word
    rows: int
    auc_threshold: float

    @property
    def holds(self) -> bool | None:
        """True / False: the AUC meets / misses the bank's threshold; None: undecided."""
        return None if self.auc is None else self.auc >= self.auc_threshold


def word_scores(unit_chunks: Iterable[np.ndarray], checks: list[WordCheck]) -> np.ndarray:
    """``x̂ · (t̂_w − t̄)`` of every audited row for every word ``[n, W]`` (rows unit-normalised
    by the caller or not: each row is normalised here)."""
    directions = np.stack([np.asarray(c.direction, dtype=np.float32) for c in checks])
    parts = []
    for block in unit_chunks:
        x = np.asarray(block, dtype=np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        parts.append((x / np.maximum(norms, 1e-12)) @ directions.T)
    return np.concatenate(parts) if parts else np.zeros((0, len(checks)), np.float32)


def check_name(
    activation: np.ndarray, scores: np.ndarray, check: WordCheck, evidence: ImageScores
) -> NameCheck | None:
    """The test of ``evidence``'s name on these rows: ``activation`` the concept's summed
    activation, ``scores`` the word's ``x̂ · (t̂_w − t̄)``; None without a bank threshold.

    >>> from audit.concepts.bank import ImageScores, WordCheck
    >>> s = np.linspace(-1, 1, 40)  # the word shows on the upper half
    >>> word = WordCheck("red", np.zeros(2), 0.0)
    >>> check_name(s * 2, s, word, ImageScores("red", auc_threshold=0.8)).holds
    True
    >>> check_name(-s, s, word, ImageScores("red", auc_threshold=0.8)).auc
    0.0
    >>> check_name(-s, s, word, ImageScores("red", "absent", auc_threshold=0.8)).holds
    True
    >>> check_name(s, s, WordCheck("red", np.zeros(2), 0.9), ImageScores("red", auc_threshold=0.8))
    NameCheck(auc=None, labelled=2, rows=40, auc_threshold=0.8)
    """
    if evidence.auc_threshold is None:
        return None
    shows = np.asarray(scores) > check.threshold
    labelled, rows = int(shows.sum()), int(shows.size)
    if min(labelled, rows - labelled) < MIN_LABELLED:
        return NameCheck(None, labelled, rows, float(evidence.auc_threshold))
    target = ~shows if evidence.polarity == ABSENT else shows
    value = auc(torch.as_tensor(np.asarray(activation, dtype=np.float64)), torch.as_tensor(target))
    return NameCheck(round(float(value), 6), labelled, rows, float(evidence.auc_threshold))
