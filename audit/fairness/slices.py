"""Concept-sliced errors of the classifier: where does it err, in named concepts?

For each validated concept of the bank and each target class, the classifier's accuracy on the
rows of that class where the concept is active is compared with the rows where it is not. The
decisions are the classifier's own — an image model's or a predictions file's, not the
surrogate's — so this describes the real model without a surrogate. It is an **association**,
not a cause: a concept can mark the slices where the model errs because it co-occurs with what
the model really uses. (What the ablations of the audit measure is causal, for the classifier
on the embeddings — for an image model, for its surrogate.)

**Active** is the tool's one definition (:mod:`audit.concepts.activity`): the concept's summed
activation above its threshold, by default Otsu's cut over the audited rows.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from audit.concepts.activity import ACTIVE_RULE, ConceptActivity
from audit.fairness.records import (
    ConceptErrors,
    ErrorSlice,
    NameEvidence,
    SlicedErrors,
    name_refuted,
)
from audit.fairness.stats import bh_qvalues, fisher_exact_two_sided, percentile_interval

RELATION = (
    "association, not cause: where the classifier's own decisions err, by the concepts active there"
)


@dataclass(frozen=True)
class SliceSettings:
    bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    min_rows: int = 20
    max_q: float = 0.05
    min_gap: float = 0.05


def sliced_errors(
    names: Sequence[str],
    activity: ConceptActivity,
    y: np.ndarray,
    decisions: np.ndarray,
    target_values: Sequence[str] = ("0", "1"),
    settings: SliceSettings | None = None,
    whose: str = "the classifier's",
    columns: Sequence[int] | None = None,
) -> SlicedErrors:
    """Every concept's slices (``names[i]`` is concept ``columns[i]`` of ``activity``; by
    default concept ``i``), concepts with a flagged slice first, then by ``|shift|``."""
    s = settings or SliceSettings()
    columns = list(range(len(names))) if columns is None else list(columns)
    y = np.asarray(y).astype(np.int8)
    correct = np.asarray(decisions).astype(np.int8) == y
    # Per class (1, then 0): its rows, and its correctly decided rows; then every row.
    masks = [m for cls in (1, 0) for m in (y == cls, (y == cls) & correct)]
    weights = np.stack([*masks, np.ones_like(correct)], axis=1)
    active_in = activity.active_counts(weights, columns)  # [5, len(names)]
    totals = weights.sum(0, dtype=np.int64)
    raw = []  # (stats, bootstrap replicates) per (concept, class 1 then class 0)
    for c, column in enumerate(columns):
        # Each concept's own random stream, keyed by its latents: its interval does not move
        # when another concept is renamed, added or dropped.
        key = [s.seed, 0x511CE, *(int(j) for j in activity.latents[column])]
        rng = np.random.default_rng(np.random.SeedSequence(key))
        for i in (0, 2):  # class 1, class 0
            n_on, k_on = int(active_in[i, c]), int(active_in[i + 1, c])
            on, off = (n_on, k_on), (int(totals[i]) - n_on, int(totals[i + 1]) - k_on)
            raw.append(_compare(on, off, s, rng))
    tested = [i for i, (_, _, table) in enumerate(raw) if table is not None]
    if tested:  # one vectorised exact test for every tested slice
        p_values = fisher_exact_two_sided(np.array([raw[i][2] for i in tested]))
        for i, p in zip(tested, p_values, strict=True):
            raw[i][0]["p"] = float(p)
    raw = [(stats, draws) for stats, draws, _ in raw]
    q = np.full(len(raw), np.nan)
    q[tested] = bh_qvalues([raw[i][0]["p"] for i in tested])
    active_rate = active_in[4] / max(1, len(y))
    concepts = [
        _concept(names[c], c, activity, col, float(active_rate[c]), raw, q, target_values, s)
        for c, col in enumerate(columns)
    ]
    ranked = sorted(concepts, key=_rank_key)
    return SlicedErrors(
        relation=RELATION,
        decisions=whose,
        active=ACTIVE_RULE,
        tested=len(tested),
        bootstrap_samples=s.bootstrap,
        seed=s.seed,
        min_rows=s.min_rows,
        max_q=s.max_q,
        min_gap=s.min_gap,
        concepts=tuple(replace(c, rank=i) for i, c in enumerate(ranked, 1)),
    )


def _concept(
    name: str,
    c: int,
    activity: ConceptActivity,
    column: int,
    active_rate: float,
    raw: list[tuple[dict[str, Any], np.ndarray | None]],
    q: np.ndarray,
    target_values: Sequence[str],
    s: SliceSettings,
) -> ConceptErrors:
    pair = []
    for i, cls in ((2 * c, 1), (2 * c + 1, 0)):
        stats = raw[i][0]
        qi = None if np.isnan(q[i]) else float(q[i])
        flagged = qi is not None and qi <= s.max_q and abs(stats["difference"]) >= s.min_gap
        pair.append(ErrorSlice(str(target_values[cls]), q=qi, flagged=flagged, **stats))
    one, zero = pair
    draws_one, draws_zero = raw[2 * c][1], raw[2 * c + 1][1]
    both = draws_one is not None and draws_zero is not None
    return ConceptErrors(
        rank=1,
        name=name,
        latents=activity.latents[column],
        threshold=float(activity.thresholds[column]),
        active_rate=active_rate,
        shift=(one.difference - zero.difference) / 2 if both else None,
        shift_ci=percentile_interval((draws_one - draws_zero) / 2, s.level) if both else None,
        flagged=one.flagged or zero.flagged,
        slices=(one, zero),
    )


def with_name_evidence(
    errors: SlicedErrors, evidence: Mapping[tuple[int, ...], NameEvidence]
) -> SlicedErrors:
    """``errors`` with each concept's name evidence (by latents) recorded; a concept whose name
    does not hold on the audited images is not flagged (nor are its slices), and the concepts
    are ranked again."""
    marked = []
    for c in errors.concepts:
        found = evidence.get(tuple(c.latents))
        if name_refuted(found):
            c = replace(c, flagged=False, slices=tuple(replace(s, flagged=False) for s in c.slices))
        marked.append(replace(c, evidence=found))
    ranked = sorted(marked, key=_rank_key)
    return replace(errors, concepts=tuple(replace(c, rank=i) for i, c in enumerate(ranked, 1)))


def _rank_key(item: ConceptErrors) -> tuple[bool, bool, float, str]:
    return (not item.flagged, item.shift is None, -abs(item.shift or 0.0), item.name.lower())


def _compare(
    on: tuple[int, int], off: tuple[int, int], s: SliceSettings, rng: np.random.Generator
) -> tuple[dict[str, Any], np.ndarray | None, list[list[int]] | None]:
    """Accuracy on the active vs inactive rows of one class (each given as (rows, correct)),
    with bootstrap CI; also the bootstrap replicates of the difference and the 2 × 2 table for
    the exact test (both None when not tested; the caller fills ``p``)."""
    (n_on, k_on), (n_off, k_off) = on, off
    acc_on = k_on / n_on if n_on else None
    acc_off = k_off / n_off if n_off else None
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
        return stats, None, None
    draws = (
        rng.binomial(n_on, acc_on, s.bootstrap) / n_on
        - rng.binomial(n_off, acc_off, s.bootstrap) / n_off
    )
    stats["ci"] = percentile_interval(draws, s.level)
    return stats, draws, [[k_on, n_on - k_on], [k_off, n_off - k_off]]
