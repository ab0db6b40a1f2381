"""When a concept is *active* on an image: the one definition the whole tool uses.

A concept is one or several latents (a bank's concept group, or the latents carrying a name).
Its **activation** on a row is the summed activation of its latents in the SAE's inference code
(ReLU(pre) for a Matryoshka or ReLU SAE, the top-k code for TopK, the thresholds for BatchTopK),
and it is **active** where that sum exceeds the concept's threshold ``T``:

    active(row) ⇔ Σ_{j ∈ concept} z_j(row) > T

**The default threshold** is Otsu's: over the rows being described (the audited rows), the cut
of the summed activation that splits them into two groups with the largest between-group
variance ``w₀ w₁ (μ₀ − μ₁)²`` — "fires" against "does not", read off the data, with no labels.
It is computed exactly (every cut between two distinct sorted values is tried) and placed
midway between the two values it separates. A concept whose activation does not vary over the
rows is active on none of them. A user may fix ``T`` instead (``concept:NAME>T``).

Why not "activation > 0": a Matryoshka SAE's ReLU inference code is dense — on the demo world
about 200 of 512 latents fire per image — so the summed activation of the 13 latents named
"red" is positive on 93 % of the task images, of which half are red. Why not "among the row's
k strongest latents" (k the SAE's smallest Matryoshka level, tried first): weak but selective
concepts never make the top k — "green", "small" and "solid" were active on no image at all.
Measured on the demo world's 5 000 task images (F1 of "active" against the true attribute, 13
concepts with a known truth): Otsu's cut 0.46–0.999 (median 0.02 below the best cut chosen with
the labels); "> 0" 0.20–0.84; the top-16 rule 0.00–0.99 (docs/own-models.md).

Users: the concept-sliced errors of the audit (:mod:`audit.fairness.slices`), each reported
concept's ``activation_rate``, and groups defined by a concept (``--spurious concept:NAME``).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.concepts.bank import ConceptBank, ConceptGroup
from audit.concepts.columnwise import map_columns
from audit.errors import InputError

#: How reports state the rule.
ACTIVE_RULE = (
    "summed activation of the concept's latents above its threshold (default: Otsu's cut of "
    "that activation over the audited rows)"
)


@dataclass(frozen=True)
class ConceptActivity:
    """Summed activations of some concepts on some rows, and where each is active."""

    latents: tuple[tuple[int, ...], ...]  # each concept's latents
    activation: np.ndarray  # [n_rows, n_concepts] float32
    thresholds: np.ndarray  # [n_concepts] float64

    @property
    def active(self) -> np.ndarray:
        """``[n_rows, n_concepts]`` bool: the summed activation exceeds the threshold."""
        return self.activation > self.thresholds[None, :]

    def active_counts(
        self, weights: np.ndarray, columns: Sequence[int] | None = None, chunk_rows: int = 8192
    ) -> np.ndarray:
        """``[K, n]`` int64: for each column ``k`` of the 0/1 ``weights`` (``[n_rows, K]``), how
        many of its rows each concept (all, or those at ``columns``) is active on. One pass over
        the rows in chunks, one small product each: the boolean matrix is never built whole."""
        w = np.asarray(weights, dtype=np.float32)
        index = np.arange(len(self.latents)) if columns is None else np.asarray(columns, np.int64)
        thresholds = self.thresholds[index]
        counts = np.zeros((w.shape[1], len(index)), dtype=np.int64)
        for lo in range(0, len(w), chunk_rows):  # float32 sums of ≤ chunk_rows ones are exact
            block = self.activation[lo : lo + chunk_rows]
            on = (block if columns is None else block[:, index]) > thresholds
            counts += np.rint(w[lo : lo + chunk_rows].T @ on.astype(np.float32)).astype(np.int64)
        return counts

    def index(self, latents: Sequence[int]) -> int:
        """The column of the concept with these latents (ValueError for an unknown concept)."""
        column = self._columns.get(tuple(latents))
        if column is None:
            raise ValueError(f"no concept with latents {tuple(latents)}")
        return column

    @functools.cached_property
    def _columns(self) -> dict[tuple[int, ...], int]:
        # the first column of a repeated concept, as tuple.index gave
        return {k: c for c, k in reversed(list(enumerate(self.latents)))}


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's cut of ``values``: the threshold (midway between two neighbouring distinct
    values) that maximises the between-group variance ``w₀ w₁ (μ₀ − μ₁)²``; ``max(values)``
    when all values are equal (nothing lies above it).

    >>> otsu_threshold(np.array([0.0, 0.1, 0.0, 2.0, 2.2, 1.9]))
    1.0
    >>> otsu_threshold(np.zeros(4))
    0.0
    """
    return float(otsu_thresholds(np.asarray(values).reshape(-1, 1))[0])


def otsu_thresholds(
    columns: np.ndarray, block_values: int = 1 << 22, workers: int | None = None
) -> np.ndarray:
    """``[C]`` float64: :func:`otsu_threshold` of each column of ``columns`` (``[n, C]``), with
    the same float64 arithmetic, so the same thresholds. Codes are mostly exact zeros (sparse
    SAEs: > 99 %; a Matryoshka SAE's ReLU code: about 60 %), which form one run at the bottom of
    the sorted column and admit one cut; only the values above it are sorted and scanned.
    Columns go through :func:`audit.concepts.columnwise.map_columns` (blocks, threads)."""
    columns = np.asarray(columns)
    n, n_columns = columns.shape
    if n <= 1:  # no cut: the threshold is the largest value (0 for no rows)
        return columns.max(axis=0).astype(np.float64) if n else np.zeros(n_columns)
    return map_columns(columns, lambda values: _otsu_column(values, n), block_values, workers)


def _otsu_column(values: np.ndarray, n: int) -> float:
    """Otsu's cut of one column; a non-negative column's zeros are one run at the bottom (the
    prefix sums over it are exactly 0), so only its positive values are sorted and scanned."""
    if values.min() >= 0:
        tail = np.sort(values[values > 0])
        zeros = n - len(tail)
    else:
        tail, zeros = np.sort(values), 0
    if len(tail) == 0:
        return 0.0
    cumulative = np.cumsum(tail, dtype=np.float64)  # = the whole column's, past the zeros
    # Cuts: after the zero run (if any), then between distinct neighbours of the tail.
    inner = np.nonzero(tail[1:] > tail[:-1])[0]
    lows = np.concatenate([[0.0], cumulative[inner]]) if zeros else cumulative[inner]
    left = (np.concatenate([[0], inner + 1]) if zeros else inner + 1) + zeros
    if len(left) == 0:
        return float(tail[-1])
    mean_low = lows / left
    mean_high = (cumulative[-1] - lows) / (n - left)
    best = int(np.argmax((left / n) * (1 - left / n) * (mean_low - mean_high) ** 2))
    if zeros and best == 0:
        return float(tail[0]) / 2  # midway between 0 and the smallest positive value
    j = int(inner[best - 1 if zeros else best])
    return (float(tail[j]) + float(tail[j + 1])) / 2


def group_sums(z: Tensor, owner: Tensor, n_groups: int) -> Tensor:
    """``[B, n_groups]`` float32 from the code columns ``z`` (``[B, L]``; column ``l`` belongs
    to group ``owner[l]``), summed in float64."""
    if z.shape[1] == n_groups and torch.equal(owner, torch.arange(n_groups, device=owner.device)):
        return z.to(torch.float32)  # one column per group, in order: each sum is its column
    sums = torch.zeros((z.shape[0], n_groups), dtype=torch.float64, device=z.device)
    sums.index_add_(1, owner, z.to(torch.float64))
    return sums.to(torch.float32)


def summed_activations(
    sae: object,
    chunks: Iterable[Tensor],
    groups: Sequence[tuple[int, ...]],
) -> np.ndarray:
    """``[n_rows, len(groups)]`` float32: each group's summed activation, chunk by chunk of raw
    embeddings (only the groups' latents are encoded; memory holds one chunk)."""
    flat = [j for g in groups for j in g]
    owner = torch.tensor([c for c, g in enumerate(groups) for _ in g], dtype=torch.long)
    encode = None
    parts = []
    with torch.no_grad():
        for x in chunks:
            if encode is None:
                cols = torch.tensor(flat, dtype=torch.long, device=x.device)
                encode = sae.column_encoder(cols)  # type: ignore[attr-defined]
                owner = owner.to(x.device)
            z = encode(x.to(torch.float32))
            parts.append(group_sums(z, owner, len(groups)).cpu().numpy())
    if not parts:
        return np.zeros((0, len(groups)), dtype=np.float32)
    return np.concatenate(parts)


def concept_activity(
    sae: object,
    x: np.ndarray | Iterable[Tensor],
    groups: Sequence[tuple[int, ...]],
    thresholds: Sequence[float | None] | None = None,
    *,
    chunk_rows: int = 4096,
    device: str | torch.device = "cpu",
) -> ConceptActivity:
    """Where each concept (``groups``: each one's latents) is active on the rows of ``x`` (raw
    embeddings ``[n, d]``, or an iterable of such tensors); ``thresholds[c]`` fixes concept
    ``c``'s threshold (None: Otsu's, over these rows)."""
    if isinstance(x, np.ndarray):
        array = x

        def chunks() -> Iterable[Tensor]:
            for lo in range(0, len(array), chunk_rows):
                block = np.ascontiguousarray(array[lo : lo + chunk_rows], dtype=np.float32)
                yield torch.from_numpy(block).to(device)

        source: Iterable[Tensor] = chunks()
    else:
        source = x
    groups = tuple(tuple(int(j) for j in g) for g in groups)
    activation = summed_activations(sae, source, groups)
    fixed = list(thresholds) if thresholds is not None else [None] * len(groups)
    cut = np.array([np.nan if t is None else float(t) for t in fixed], dtype=np.float64)
    otsu = np.isnan(cut)
    if otsu.all():  # the usual case: no copy of the activation matrix
        cut = otsu_thresholds(activation)
    elif otsu.any():
        cut[otsu] = otsu_thresholds(activation[:, otsu])
    return ConceptActivity(groups, activation, cut)


# ------------------------------------------------------------------------------------------
# Which concepts: the bank's validated ones, and a concept by name
# ------------------------------------------------------------------------------------------


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
