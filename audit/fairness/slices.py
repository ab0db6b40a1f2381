"""Concept-sliced errors of the user's own model: where does it err, in named concepts?

For each named concept of the bank (its validated latents grouped by name; the concept is
**active** on a row when any of them has activation > 0) and each target class, the model's
accuracy on the rows of that class where the concept is active is compared with the rows where
it is not. This describes the real model's errors without a surrogate — and is an
**association**, not a cause: a concept can mark the slices where the model errs because it
co-occurs with what the model really uses.

**Statistics.** The difference ``accuracy(active) − accuracy(inactive)`` gets a percentile
bootstrap interval; resampling each slice's rows with replacement (stratified: each keeps its
size) makes its number of correct decisions Binomial(n, observed accuracy), so the replicates
are drawn as binomial counts (the argument of :mod:`audit.fairness.stats`). The p-value is
Fisher's exact test of equal accuracy (the 2 × 2 table correct/wrong × active/inactive;
two-sided), and BH q-values are taken over every tested (concept, class) pair. A slice is
**flagged** when ``q ≤ max_q`` and ``|difference| ≥ min_gap``. Pairs where either side has
fewer than ``min_rows`` rows are listed but not tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from audit.fairness.stats import bh_qvalues, percentile_interval


@dataclass(frozen=True)
class ConceptActivity:
    """Which named concepts are active on which rows."""

    names: list[str]
    latents: list[tuple[int, ...]]
    active: np.ndarray  # [n_rows, n_concepts] bool


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
    concept: str
    latents: tuple[int, ...]
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

    def to_dict(self) -> dict[str, Any]:
        item = asdict(self)
        item["latents"] = list(self.latents)
        item["ci"] = list(self.ci) if self.ci is not None else None
        return item


def named_concepts(bank: Any) -> tuple[list[str], list[tuple[int, ...]]]:
    """The bank's validated names (case-insensitively merged, sorted) and their latents."""
    groups: dict[str, list[int]] = {}
    shown: dict[str, str] = {}
    for concept in bank.named(validated_only=True):
        key = concept.name.strip().lower()
        shown.setdefault(key, concept.name)
        groups.setdefault(key, []).append(int(concept.latent))
    keys = sorted(groups)
    return [shown[k] for k in keys], [tuple(sorted(groups[k])) for k in keys]


def concept_activity(
    sae: torch.nn.Module,
    x: np.ndarray,
    bank: Any,
    *,
    chunk_rows: int = 4096,
    device: str | torch.device = "cpu",
) -> ConceptActivity:
    """Encode ``x`` (raw embeddings ``[n, d]``) chunk by chunk and keep, per row, which named
    concepts are active; memory holds one chunk of codes."""
    names, latents = named_concepts(bank)
    columns = torch.tensor([j for group in latents for j in group], dtype=torch.long)
    owner = torch.tensor([c for c, group in enumerate(latents) for _ in group], dtype=torch.long)
    active = np.zeros((len(x), len(names)), dtype=bool)
    sae = sae.to(device).eval()
    with torch.inference_mode():
        for start in range(0, len(x), chunk_rows):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + chunk_rows]))
            codes = sae.encode(chunk.to(device, torch.float32))[:, columns.to(device)] > 0
            hits = torch.zeros(codes.shape[0], len(names), device=device)
            hits.index_add_(1, owner.to(device), codes.to(hits.dtype))
            active[start : start + chunk_rows] = (hits > 0).cpu().numpy()
    return ConceptActivity(names, latents, active)


def sliced_errors(
    activity: ConceptActivity,
    y: np.ndarray,
    decisions: np.ndarray,
    target_values: Sequence[str] = ("0", "1"),
    settings: SliceSettings | None = None,
) -> list[ConceptSlice]:
    """Every (concept, target class) slice, flagged first, then by |difference|."""
    s = settings or SliceSettings()
    y = np.asarray(y).astype(np.int8)
    correct = np.asarray(decisions).astype(np.int8) == y
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, 0x511CE]))
    raw = []
    for c, name in enumerate(activity.names):
        for cls in (1, 0):
            in_class = y == cls
            on = in_class & activity.active[:, c]
            off = in_class & ~activity.active[:, c]
            raw.append(
                (name, activity.latents[c], cls, _compare(correct[on], correct[off], s, rng))
            )
    tested = [i for i, item in enumerate(raw) if item[3]["p"] is not None]
    q = np.full(len(raw), np.nan)
    q[tested] = bh_qvalues([raw[i][3]["p"] for i in tested])
    slices = []
    for i, (name, latents, cls, stats) in enumerate(raw):
        qi = None if np.isnan(q[i]) else float(q[i])
        flagged = qi is not None and qi <= s.max_q and abs(stats["difference"]) >= s.min_gap
        slices.append(
            ConceptSlice(
                name, latents, cls, str(target_values[cls]), q=qi, flagged=flagged, **stats
            )
        )
    return sorted(slices, key=_rank_key)


def _rank_key(item: ConceptSlice) -> tuple[bool, bool, float]:
    return (not item.flagged, item.p is None, -abs(item.difference or 0.0))


def _compare(
    on: np.ndarray, off: np.ndarray, s: SliceSettings, rng: np.random.Generator
) -> dict[str, Any]:
    """Accuracy on the active vs inactive rows of one class, with bootstrap CI and p-value."""
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
        return stats
    from scipy.stats import fisher_exact

    k_on, k_off = int(on.sum()), int(off.sum())
    draws = (
        rng.binomial(n_on, acc_on, s.bootstrap) / n_on
        - rng.binomial(n_off, acc_off, s.bootstrap) / n_off
    )
    stats["ci"] = percentile_interval(draws, s.level)
    table = [[k_on, n_on - k_on], [k_off, n_off - k_off]]
    stats["p"] = float(fisher_exact(table, alternative="two-sided").pvalue)
    return stats
