"""What the user's own model said about some rows of a store: 0/1 decisions and, when it gave
scores, its margins on the logit scale.

Image models and predictions files both end here, so they follow one rule for reading scores.

**Logit or probability.** A column (or a single model output) of scores is read as

* **probabilities** of the positive class when every score lies in [0, 1]: the decision is
  ``p > 0.5`` and the margin ``log(p / (1 − p))`` (``p`` clipped to [1e-12, 1 − 1e-12]);
* **logits** otherwise: the decision is ``s > 0`` and the margin is ``s``.

The rule cannot misread a usable model. Logits that all lie in [0, 1] are all ≥ 0, so read as
logits they would put (nearly) every row in the positive class — a model whose decisions are
constant, which is refused anyway. Scores outside [0, 1] that all have one sign are refused as
*neither*: they are not probabilities (some lie outside [0, 1]) and, as logits, would give every
row the same decision; percentages (0–100) and log-probabilities (≤ 0) are the usual causes.

A model with two outputs per row (``[B, 2]`` class scores, logits or softmax probabilities)
needs no rule: the margin is ``score₁ − score₀``, the decision its sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from audit.errors import InputError

SCORE_KINDS = ("logit", "probability", "two-class", "label")
_CLIP = 1e-12


@dataclass(frozen=True)
class ModelDecisions:
    """The model on ``rows`` of a store (in that order).

    ``decisions[i]`` (0/1) is its decision on store row ``rows[i]``; ``margins[i]`` the
    logit-scale score whose sign is that decision (None when only labels were given).
    """

    rows: np.ndarray  # [n] int64 store rows
    decisions: np.ndarray  # [n] int8, 1 = the positive class
    margins: np.ndarray | None  # [n] float64, or None for labels
    score_kind: str  # one of SCORE_KINDS

    def __post_init__(self) -> None:
        if self.score_kind not in SCORE_KINDS:
            raise ValueError(f"unknown score kind {self.score_kind!r}")
        if self.decisions.shape != self.rows.shape:
            raise ValueError("decisions and rows differ in length")

    def __len__(self) -> int:
        return int(self.rows.size)

    def take(
        self, rows: np.ndarray | Sequence[int], ids: Sequence[object] | None = None
    ) -> np.ndarray:
        """The decisions on store ``rows``; a row the model did not score is an input error
        (named by its id when ``ids``, the store's ids, are given)."""
        return self.decisions[self.positions(rows, ids)]

    def take_margins(
        self, rows: np.ndarray | Sequence[int], ids: Sequence[object] | None = None
    ) -> np.ndarray | None:
        return None if self.margins is None else self.margins[self.positions(rows, ids)]

    def positions(
        self, rows: np.ndarray | Sequence[int], ids: Sequence[object] | None = None
    ) -> np.ndarray:
        wanted = np.asarray(rows, dtype=np.int64)
        order = np.argsort(self.rows, kind="stable")
        sorted_rows = self.rows[order]
        at = np.searchsorted(sorted_rows, wanted)
        found = at < sorted_rows.size
        found[found] = sorted_rows[at[found]] == wanted[found]
        if not found.all():
            missing = wanted[~found]
            first = (
                f"id {_id_text(ids[int(missing[0])])!r}"
                if ids is not None
                else f"row {int(missing[0])}"
            )
            raise InputError(
                f"the model has no decision for {missing.size} of the {wanted.size} rows needed "
                f"(first: {first})"
            )
        return order[at]


def _id_text(value: object) -> str:
    """One id as every id comparison writes it (``audit.store.id_text``: ``'5'`` for
    ``np.int64(5)`` or ``5.0``), not NumPy's repr of it."""
    import pandas as pd

    from audit.store import id_text

    return str(id_text(pd.Series([value]))[0])


def interpret_scores(scores: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(decisions, margins, "logit" | "probability")`` from one finite score per row, by the
    module's rule; scores that are neither are an input error naming ``where``.

    >>> d, m, kind = interpret_scores(np.array([0.2, 0.9, 0.5]), "x")
    >>> d.tolist(), kind
    ([0, 1, 0], 'probability')
    >>> d, m, kind = interpret_scores(np.array([-2.0, 3.5]), "x")
    >>> d.tolist(), m.tolist(), kind
    ([0, 1], [-2.0, 3.5], 'logit')
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size and s.min() >= 0.0 and s.max() <= 1.0:
        p = np.clip(s, _CLIP, 1.0 - _CLIP)
        return (s > 0.5).astype(np.int8), np.log(p) - np.log1p(-p), "probability"
    outside = int(((s < 0.0) | (s > 1.0)).sum())
    if s.size and (s.min() >= 0.0 or s.max() <= 0.0):
        sign = "≥ 0" if s.min() >= 0.0 else "≤ 0"
        raise InputError(
            f"{where}: the scores are neither probabilities nor logits: {outside} of {s.size} lie "
            f"outside [0, 1] (so they are not probabilities) and all are {sign} (so as logits "
            "every row would get the same decision); give the positive class's probability or "
            "its logit (percentages? divide by 100; log-probabilities? exponentiate)"
        )
    return (s > 0.0).astype(np.int8), s, "logit"


def two_class_margins(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """``(decisions, margins, "two-class")`` from ``[n, 2]`` class scores: score₁ − score₀."""
    s = np.asarray(scores, dtype=np.float64)
    margins = s[:, 1] - s[:, 0]
    return (margins > 0.0).astype(np.int8), margins, "two-class"


def check_varied(decisions: np.ndarray, where: str, classes: tuple[str, str] = ("0", "1")) -> None:
    """A model that gives every row the same decision cannot be audited: its group metrics
    say nothing about concepts and no surrogate can be fit to it."""
    d = np.asarray(decisions)
    if d.size == 0:
        raise InputError(f"{where}: no decisions")
    values = np.unique(d)
    if values.size < 2:
        raise InputError(
            f"{where}: the model's decisions are constant (class {classes[int(values[0])]} for "
            f"all {d.size} rows); nothing can be audited"
        )
