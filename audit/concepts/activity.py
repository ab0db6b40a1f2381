"""When is a concept *active* on a row? One definition for the whole tool.

A concept (one or several latents, :meth:`ConceptBank.concept_groups`) is **active** on a row
when the summed activation of its latents — the SAE's inference code, ``ReLU(pre)`` for a
Matryoshka SAE — exceeds a threshold ``T``::

    active_i  ⇔  s_i = Σ_{j ∈ concept} z_ij  >  T

``T`` is given (``--spurious concept:NAME>T``) or chosen per concept by **Otsu's method** on
``s`` over the rows being coded: the cut that maximises the between-class variance
``w₀ w₁ (μ₀ − μ₁)²`` of the two sides, placed halfway between the two sides' nearest values and
rounded to 6 decimals (as the JSON writes it), so the recorded number reproduces the groups.

Why not ``s > 0``: a Matryoshka SAE's inference code is dense (about 200 of the demo SAE's 512
latents fire on an image), so "any latent named red > 0" holds on 93 % of the demo's rows, red
or not. Why not "among the row's ``k_min`` strongest latents": it misses concepts whose latents
are never among the strongest (in the demo, green, small and solid were active on 0 % of rows
at ``k = 16``). Measured against the demo world's ground truth (13 named values, balanced
accuracy of the activity): ``> 0`` 0.61, top-16 0.79, top-32 0.72, Otsu 0.92 (the best
threshold per concept, chosen with the labels, 0.94); ``benchmarks/concept_activity.py``.

Everything that asks "is this concept here?" uses this module: groups defined by a concept
(``--spurious concept:NAME``), ``msae-audit discover``, and the concept-sliced errors of a
user's own model.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.concepts.bank import ConceptBank, ConceptGroup
from audit.errors import InputError

#: Decimals of a chosen threshold (the JSON's precision).
THRESHOLD_DECIMALS = 6
#: How the default threshold is chosen, in words (reports and JSON).
OTSU = "otsu"


def validated_groups(bank: ConceptBank, n_latents: int | None = None) -> list[ConceptGroup]:
    """The bank's validated concepts (the tested family), by name."""
    return [g for g in bank.concept_groups(n_latents) if g.validated and g.name]


def find_concept(bank: ConceptBank, name: str, n_latents: int | None = None) -> ConceptGroup:
    """The concept called ``name`` (case-insensitive; validated concepts first); an unknown name
    is an :class:`InputError` listing the closest names of the bank."""
    key = name.strip().lower()
    groups = [g for g in bank.concept_groups(n_latents) if g.name]
    for g in sorted(groups, key=lambda g: not g.validated):
        if str(g.name).strip().lower() == key:
            return g
    names = sorted({str(g.name) for g in groups if g.validated})
    close = difflib.get_close_matches(key, [n.lower() for n in names], n=5, cutoff=0.5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    some = "" if close else f"; validated names include: {', '.join(names[:8])}"
    raise InputError(f"concept '{name}' is not in bank '{bank.name}'{hint}{some}")


@dataclass(frozen=True)
class ConceptColumns:
    """The latents of several concepts laid out for one encoding: ``latents`` (every concept's
    latents, concatenated) and ``owner`` (``[L, R]`` 0/1: latent column ``l`` belongs to
    concept ``r``)."""

    latents: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    owner: Tensor

    @classmethod
    def of(cls, groups: Sequence[Sequence[int]]) -> ConceptColumns:
        flat = tuple(int(j) for g in groups for j in g)
        owner = torch.zeros((len(flat), len(groups)), dtype=torch.float32)
        position = 0
        for r, g in enumerate(groups):
            owner[position : position + len(g), r] = 1.0
            position += len(g)
        return cls(flat, tuple(tuple(int(j) for j in g) for g in groups), owner)

    def encoder(self, sae: object) -> Callable[[Tensor], Tensor]:
        """``x ↦ z[:, latents]`` (the inference code of just these latents)."""
        device = sae.W_enc.device  # type: ignore[attr-defined]
        return sae.column_encoder(torch.tensor(self.latents, dtype=torch.long, device=device))  # type: ignore[attr-defined]

    def sums(self, z: Tensor) -> Tensor:
        """``[B, R]`` summed activation of each concept from ``z`` (``[B, L]``, these columns)."""
        return z @ self.owner.to(z.device, z.dtype)


def concept_sums(
    sae: object,
    read: Callable[[int, int], np.ndarray] | np.ndarray,
    count: int,
    columns: ConceptColumns,
    *,
    chunk_rows: int = 4096,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``[count, R]`` float32 summed activations, reading rows ``lo:hi`` with ``read`` (or from
    an array) one chunk at a time."""
    reader = (lambda lo, hi: read[lo:hi]) if isinstance(read, np.ndarray) else read
    out = np.zeros((count, len(columns.groups)), dtype=np.float32)
    if not columns.latents:
        return out
    encode = columns.encoder(sae)
    with torch.no_grad():
        for lo in range(0, count, chunk_rows):
            hi = min(count, lo + chunk_rows)
            x = torch.tensor(np.asarray(reader(lo, hi)), dtype=torch.float32, device=device)
            out[lo:hi] = columns.sums(encode(x)).cpu().numpy()
    return out


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of one concept's summed activations: ``active = values > T``.

    Exact over the sorted values: the cut maximising ``w₀ w₁ (μ₀ − μ₁)²``, halfway between the
    two sides' nearest values, rounded to 6 decimals. All values equal: ``T`` is that value
    (nothing is active).

    >>> otsu_threshold(np.array([0.0, 0.0, 0.0, 1.0, 1.2, 0.9]))
    0.45
    >>> otsu_threshold(np.zeros(4))
    0.0
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        return 0.0
    cuts = np.nonzero(v[:-1] < v[1:])[0]  # a cut after index i keeps ties together
    if cuts.size == 0:
        return _between(v[-1], np.inf)
    total = np.cumsum(v)
    w0 = (cuts + 1).astype(np.float64)
    w1 = v.size - w0
    mean0 = total[cuts] / w0
    mean1 = (total[-1] - total[cuts]) / w1
    best = int(cuts[np.argmax(w0 * w1 * (mean0 - mean1) ** 2)])
    return _between(v[best], v[best + 1])


def _between(low: float, high: float) -> float:
    """A 6-decimal number ``t`` with ``low ≤ t < high`` (halfway when the gap allows; ``low``
    itself when no 6-decimal number fits)."""
    scale = 10.0**THRESHOLD_DECIMALS
    for t in (round((low + high) / 2, THRESHOLD_DECIMALS), math.ceil(low * scale) / scale):
        if np.isfinite(t) and low <= t < high:
            return float(t)
    return float(low)


def activity_thresholds(sums: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """``[R]`` thresholds: ``threshold`` for every concept, or each column's Otsu threshold."""
    if threshold is not None:
        return np.full(sums.shape[1], float(threshold))
    return np.array([otsu_threshold(sums[:, r]) for r in range(sums.shape[1])])


@dataclass(frozen=True)
class ConceptActivity:
    """Which concepts are active on which rows."""

    names: list[str]
    latents: list[tuple[int, ...]]
    active: np.ndarray  # [n_rows, n_concepts] bool
    thresholds: np.ndarray  # [n_concepts] the T of each concept
    rule: str  # "otsu" or "given"


def concept_activity(
    sae: object,
    x: np.ndarray,
    bank: ConceptBank,
    *,
    threshold: float | None = None,
    chunk_rows: int = 4096,
    device: str | torch.device = "cpu",
) -> ConceptActivity:
    """Every validated concept's activity on the rows of ``x`` (raw embeddings ``[n, d]``), the
    thresholds chosen over these rows (or ``threshold`` for all)."""
    groups = validated_groups(bank, getattr(sae, "n_latents", None))
    columns = ConceptColumns.of([g.latents for g in groups])
    sae = sae.to(device).eval()  # type: ignore[attr-defined]
    sums = concept_sums(sae, x, len(x), columns, chunk_rows=chunk_rows, device=device)
    thresholds = activity_thresholds(sums, threshold)
    return ConceptActivity(
        [str(g.name) for g in groups],
        [g.latents for g in groups],
        sums > thresholds[None, :],
        thresholds,
        "given" if threshold is not None else OTSU,
    )
