"""Concept-sliced errors of the user's own model: where does it err, in named concepts?

For each named concept of the bank (its validated latents grouped by name) and each target
class, the model's accuracy on the rows of that class where the concept is active is compared
with the rows where it is not.

**Active.** A concept is active on a row when the summed activation of its latents exceeds its
threshold (Otsu's, over the audited rows): the one definition of :mod:`audit.concepts.activity`.
This describes the real model's errors without a surrogate — and is an **association**, not a
cause: a concept can mark the slices where the model errs because it co-occurs with what the
model really uses.

**Statistics.** The difference ``accuracy(active) − accuracy(inactive)`` gets a percentile
bootstrap interval; resampling each slice's rows with replacement (stratified: each keeps its
size) makes its number of correct decisions Binomial(n, observed accuracy), so the replicates
are drawn as binomial counts (the argument of :mod:`audit.fairness.stats`). The p-value is
Fisher's exact test of equal accuracy (the 2 × 2 table correct/wrong × active/inactive;
two-sided), and BH q-values are taken over every tested (concept, class) pair. A slice is
**flagged** when ``q ≤ max_q`` and ``|difference| ≥ min_gap``. Pairs where either side has
fewer than ``min_rows`` rows are listed but not tested.

**Ranking.** Many concepts mark errors: when a model decides by "red", every other colour marks
the circles it gets wrong. What singles out the concept the model leans on is that its presence
moves decisions *toward one class in both classes* — raising accuracy in one and lowering it in
the other. A concept's **shift** is ``(difference₁ − difference₀) / 2``: the mean, over the two
target classes, of how much more often the model decides "positive" where the concept is
active (both slices tested; bootstrap CI from the same replicates). Concepts with a flagged
slice come first, by ``|shift|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from audit.concepts.activity import ConceptActivity, concept_activity
from audit.fairness.stats import bh_qvalues, percentile_interval

# Re-exported: callers of the first round import them from here.
__all__ = [
    "ConceptActivity",
    "ConceptErrors",
    "ConceptSlice",
    "SliceSettings",
    "concept_activity",
    "sliced_errors",
]


@dataclass(frozen=True)
class SliceSettings:
    bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    min_rows: int = 20
    max_q: float = 0.05
    min_gap: float = 0.05


@dataclass(frozen=True)
class ConceptSlice:
    """One target class of one concept: the model's accuracy where it is active vs not."""

    target_class: int  # 0/1
    target_value: str  # as users see it
    n_active: int
    n_inactive: int
    accuracy_active: float | None
    accuracy_inactive: float | None
    difference: float | None  # accuracy_active − accuracy_inactive
    ci: tuple[float, float] | None  # of the difference
    p: float | None
    q: float | None
    flagged: bool


@dataclass(frozen=True)
class ConceptErrors:
    """A named concept's two slices (class 1, class 0) and its shift toward the positive class."""

    concept: str
    latents: tuple[int, ...]
    slices: tuple[ConceptSlice, ConceptSlice]
    shift: float | None  # (difference₁ − difference₀) / 2
    shift_ci: tuple[float, float] | None

    @property
    def flagged(self) -> bool:
        return any(s.flagged for s in self.slices)

    def to_dict(self) -> dict[str, Any]:
        item = asdict(self)
        item["latents"] = list(self.latents)
        item["flagged"] = self.flagged
        return item


def sliced_errors(
    activity: ConceptActivity,
    y: np.ndarray,
    decisions: np.ndarray,
    target_values: Sequence[str] = ("0", "1"),
    settings: SliceSettings | None = None,
) -> list[ConceptErrors]:
    """Every concept's slices, concepts with a flagged slice first, then by ``|shift|``."""
    s = settings or SliceSettings()
    y = np.asarray(y).astype(np.int8)
    correct = np.asarray(decisions).astype(np.int8) == y
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, 0x511CE]))
    raw = []  # (concept index, class, stats, bootstrap replicates)
    for c in range(len(activity.names)):
        for cls in (1, 0):
            on = (y == cls) & activity.active[:, c]
            off = (y == cls) & ~activity.active[:, c]
            raw.append((c, cls, *_compare(correct[on], correct[off], s, rng)))
    tested = [i for i, item in enumerate(raw) if item[2]["p"] is not None]
    q = np.full(len(raw), np.nan)
    q[tested] = bh_qvalues([raw[i][2]["p"] for i in tested])
    out = []
    for c, name in enumerate(activity.names):
        pair = []
        for i in (2 * c, 2 * c + 1):
            _, cls, stats, _ = raw[i]
            qi = None if np.isnan(q[i]) else float(q[i])
            flagged = qi is not None and qi <= s.max_q and abs(stats["difference"]) >= s.min_gap
            pair.append(ConceptSlice(cls, str(target_values[cls]), q=qi, flagged=flagged, **stats))
        one, zero = pair
        draws_one, draws_zero = raw[2 * c][3], raw[2 * c + 1][3]
        both = draws_one is not None and draws_zero is not None
        shift = (one.difference - zero.difference) / 2 if both else None
        shift_ci = percentile_interval((draws_one - draws_zero) / 2, s.level) if both else None
        out.append(ConceptErrors(name, activity.latents[c], (one, zero), shift, shift_ci))
    return sorted(out, key=_rank_key)


def _rank_key(item: ConceptErrors) -> tuple[bool, bool, float]:
    return (not item.flagged, item.shift is None, -abs(item.shift or 0.0))


def _compare(
    on: np.ndarray, off: np.ndarray, s: SliceSettings, rng: np.random.Generator
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Accuracy on the active vs inactive rows of one class, with bootstrap CI and p-value;
    also the bootstrap replicates of the difference (None when not tested)."""
    n_on, n_off = int(on.size), int(off.size)
    acc_on = float(on.mean()) if n_on else None
    acc_off = float(off.mean()) if n_off else None
    stats: dict[str, Any] = {
        "n_active": n_on,
        "n_inactive": n_off,
        "accuracy_active": acc_on,
        "accuracy_inactive": acc_off,
        "difference": None if acc_on is None or acc_off is None else acc_on - acc_off,
        "ci": None,
        "p": None,
    }
    if min(n_on, n_off) < s.min_rows:
        return stats, None
    from scipy.stats import fisher_exact

    k_on, k_off = int(on.sum()), int(off.sum())
    draws = (
        rng.binomial(n_on, acc_on, s.bootstrap) / n_on
        - rng.binomial(n_off, acc_off, s.bootstrap) / n_off
    )
    stats["ci"] = percentile_interval(draws, s.level)
    table = [[k_on, n_on - k_on], [k_off, n_off - k_off]]
    stats["p"] = float(fisher_exact(table, alternative="two-sided").pvalue)
    return stats, draws
