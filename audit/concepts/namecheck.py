"""A bank's names checked again on the audited images.

A bank's image-validated name held on the probe images it was built with: the concept's summed
activation predicted the word's zero-shot labels on held-out probe images better than random
latents (:mod:`audit.concepts.grouping`). The audited images may be another kind of image. So
the audit labels its own rows the same way — an image shows word ``w`` when
``x̂ · (t̂_w − t̄) > θ_w``, with the direction and ``θ_w`` the bank kept
(:class:`~audit.concepts.bank.WordCheck`) — and asks two questions there:

* **ranking**: does the concept's summed activation predict those labels (their absence, for a
  ``no <word>`` concept) with an AUC at least the bank's random-latent threshold?
* **share**: do most of the rows where the concept is active (the audit's one definition of
  active, :mod:`audit.concepts.activity`) show the word — at least :data:`MIN_SHARE`? A
  concept the audit removes acts where it is active; if those rows mostly do not show its
  word, "the classifier leans on <word>" describes a few of them. (The AUC alone misses it: a
  concept active on 670 of 2 000 rows of circles and squares ranked the 23 rows CLIP calls
  "heart" near its top, AUC 0.87–0.91, while 3–5 % of its active rows showed a heart.)

The name passed its test on the probe images, so the audit looks for clear evidence against it:
it **does not hold** when even the upper end of the AUC's 95 % interval (Hanley and McNeil's
standard error, Radiology 1982) is below the threshold, or the upper end of the share's (Wilson)
is below :data:`MIN_SHARE`; it **holds** when both point estimates meet their bounds; else
(or with fewer than :data:`MIN_LABELLED` rows showing the word, or not showing it, for the
AUC) it is undecided (``holds`` null). A name that does not hold is reported as such and not
flagged: the effect is real, the word is not supported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from audit.concepts.auc import auc
from audit.concepts.bank import ABSENT, ImageScores, WordCheck
from audit.intervals import Z_95, wilson_interval

MIN_LABELLED = 10
#: Most of the rows where a concept is active must show its word.
MIN_SHARE = 0.5


@dataclass(frozen=True)
class NameCheck:
    """The name's test repeated on the audited rows."""

    auc: float | None  # None: too few rows with (or without) the word's label
    labelled: int  # audited rows whose zero-shot label shows the word
    rows: int
    auc_threshold: float
    auc_upper: float | None = None  # the upper end of the AUC's 95 % interval
    share: float | None = None  # of the rows where the concept is active, those showing it
    share_upper: float | None = None  # the upper end of the share's 95 % interval

    @property
    def refuted(self) -> bool:
        """Clear evidence against the name: an interval's upper end below its bound."""
        return auc_refutes(self.auc_upper, self.auc_threshold) or share_refutes(self.share_upper)

    @property
    def holds(self) -> bool | None:
        """True: the AUC and the share meet their bounds; False: refuted; None: undecided."""
        if self.refuted:
            return False
        if self.auc is None or self.auc < self.auc_threshold:
            return None
        return None if self.share is not None and self.share < MIN_SHARE else True


def auc_refutes(auc_upper: float | None, auc_threshold: float | None) -> bool:
    """Even the upper end of the AUC's interval misses the bank's threshold."""
    return auc_upper is not None and auc_threshold is not None and auc_upper < auc_threshold


def share_refutes(share_upper: float | None) -> bool:
    """Even the upper end of the share's interval is below :data:`MIN_SHARE`."""
    return share_upper is not None and share_upper < MIN_SHARE


def auc_upper_bound(value: float, positives: int, negatives: int, z: float = Z_95) -> float:
    """``value + z · SE`` with Hanley and McNeil's (1982) standard error of an AUC from
    ``positives`` and ``negatives`` rows, capped at 1.

    >>> round(auc_upper_bound(0.874, 23, 1977), 3)  # 0.874 ± 0.093
    0.967
    >>> round(auc_upper_bound(0.589, 1000, 1000), 3)
    0.614
    """
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (
        value * (1 - value) + (positives - 1) * (q1 - value**2) + (negatives - 1) * (q2 - value**2)
    ) / (positives * negatives)
    return min(1.0, value + z * math.sqrt(max(variance, 0.0)))


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
    activation: np.ndarray,
    scores: np.ndarray,
    check: WordCheck,
    evidence: ImageScores,
    active: np.ndarray | None = None,
) -> NameCheck | None:
    """The test of ``evidence``'s name on these rows: ``activation`` the concept's summed
    activation, ``scores`` the word's ``x̂ · (t̂_w − t̄)``, ``active`` where the concept counts
    as active (None: the share is not tested); None without a bank threshold.

    >>> from audit.concepts.bank import ImageScores, WordCheck
    >>> s = np.linspace(-1, 1, 40)  # the word shows on the upper half
    >>> word = WordCheck("red", np.zeros(2), 0.0)
    >>> check_name(s * 2, s, word, ImageScores("red", auc_threshold=0.8), s > 0).holds
    True
    >>> check_name(-s, s, word, ImageScores("red", auc_threshold=0.8)).holds
    False
    >>> check_name(-s, s, word, ImageScores("red", "absent", auc_threshold=0.8), s < 0).holds
    True
    >>> found = check_name(s, s, word, ImageScores("red", auc_threshold=0.8), np.ones(40, bool))
    >>> found.auc, found.share, found.holds  # ranked well, but active on every row: half show it
    (1.0, 0.5, True)
    >>> check_name(s, s, WordCheck("red", np.zeros(2), 0.9), ImageScores("red", auc_threshold=0.8))
    NameCheck(auc=None, labelled=2, rows=40, auc_threshold=0.8, auc_upper=None, share=None, share_upper=None)
    """
    if evidence.auc_threshold is None:
        return None
    shows = np.asarray(scores) > check.threshold
    labelled, rows = int(shows.sum()), int(shows.size)
    target = ~shows if evidence.polarity == ABSENT else shows
    share = share_upper = None
    if active is not None and np.asarray(active).any():
        on = np.asarray(active, dtype=bool)
        showing, n_active = int((target & on).sum()), int(on.sum())
        share = round(showing / n_active, 6)
        share_upper = round(wilson_interval(showing, n_active)[1], 6)
    threshold = float(evidence.auc_threshold)
    if min(labelled, rows - labelled) < MIN_LABELLED:
        return NameCheck(None, labelled, rows, threshold, None, share, share_upper)
    value = auc(torch.as_tensor(np.asarray(activation, dtype=np.float64)), torch.as_tensor(target))
    positives = int(target.sum())
    upper = auc_upper_bound(value, positives, rows - positives)
    return NameCheck(
        round(float(value), 6), labelled, rows, threshold, round(upper, 6), share, share_upper
    )
