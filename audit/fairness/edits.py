"""The latent edit, and the interface through which each classifier kind reports its effect.

**The edit.** For a sample with code ``z = encode(x)``, setting latent ``j`` to ``v`` keeps the
SAE's reconstruction error::

    x' = x + post(dec(z with z_j := v)) − post(dec(z)) = x + (v − z_j) · u_j,   u_j = W_dec[j] / s

(post-processing is affine, so only the changed latent's decoder row survives). ``v`` is the
latent's mean over the audited rows (``mean`` ablation, the default: it reveals a classifier
that leans on a concept's absence as well as one that leans on its presence), 0 (``zero``: only
presence) or ``α · z_j`` (steering). The code is never re-encoded after the edit. Latents that share a name are edited
together: ``x' = x + Σ_j c_j u_j`` with ``c_j = v_j − z_j``.

**Effects.** An :class:`EditEffect` answers two questions for one classifier kind: during the
all-latent scan, which samples' decisions flip when each latent (and each name group) is
ablated; and, exactly, the margins of ``x + Σ_j c_j u_j`` for given samples. Linear heads have
closed forms (:mod:`audit.fairness.classifiers.linear`); any other classifier is screened to
first order and evaluated by decode-and-rerun (:mod:`audit.fairness.classifiers.rerun`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from audit.store import EmbeddingStore

# ------------------------------------------------------------------------------------------
# Where edits are evaluated
# ------------------------------------------------------------------------------------------


class AuditedRows:
    """The audited rows of a store, read in chunks or by position."""

    def __init__(
        self,
        read_block: Callable[[int, int], np.ndarray],
        take: Callable[[np.ndarray], np.ndarray],
        count: int,
    ):
        self._read_block = read_block
        self._take = take
        self.count = count

    @classmethod
    def of_store(cls, store: EmbeddingStore, rows: np.ndarray) -> AuditedRows:
        """A view of ``rows`` (sorted store row numbers); contiguous rows are read as blocks."""
        contiguous = rows.size > 0 and rows[-1] - rows[0] + 1 == rows.size
        first = int(rows[0]) if rows.size else 0

        def read_block(lo: int, hi: int) -> np.ndarray:
            if contiguous:
                return store.read(first + lo, first + hi)
            return store.take(rows[lo:hi])

        def take(positions: np.ndarray) -> np.ndarray:
            return store.take(rows[np.asarray(positions, dtype=np.int64)])

        return cls(read_block, take, int(rows.size))

    def chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, self.count, chunk):
            yield lo, self._read_block(lo, min(self.count, lo + chunk))

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self._take(positions)


@dataclass(frozen=True)
class Workspace:
    """The audited rows on a device: every pass reads them through here."""

    rows: AuditedRows
    device: torch.device
    chunk: int = 4096
    dtype: torch.dtype = torch.float32

    def x(self, positions: np.ndarray) -> Tensor:
        return self.tensor(self.rows.take(positions))

    def tensor(self, block: np.ndarray) -> Tensor:
        # A copy: store blocks can be read-only memory maps.
        return torch.tensor(block, device=self.device, dtype=self.dtype)

    def from_numpy(self, values: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(self.device, self.dtype)


@dataclass(frozen=True)
class Baseline:
    """The classifier on the audited rows before any edit (from the scan)."""

    margin: np.ndarray  # [N] float64
    state: Mapping[str, np.ndarray] = field(default_factory=dict)  # per-row values edits reuse


# ------------------------------------------------------------------------------------------
# The scan's view of one chunk
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NameGroups:
    """Latents that share a name, laid out for batched edits (columns ``n …`` of the scan)."""

    latents: tuple[tuple[int, ...], ...]
    matrix: Tensor  # [n, R] 0/1: latent j belongs to group r
    flat: Tensor  # the groups' latents, concatenated
    group_of: Tensor  # for each entry of ``flat``, its group

    @classmethod
    def build(
        cls, groups: list[tuple[int, ...]], n: int, device: torch.device, dtype: torch.dtype
    ) -> NameGroups:
        matrix = torch.zeros((n, len(groups)), device=device, dtype=dtype)
        for r, latents in enumerate(groups):
            matrix[list(latents), r] = 1.0
        flat = torch.tensor([j for s in groups for j in s], dtype=torch.long, device=device)
        group_of = torch.tensor(
            [r for r, s in enumerate(groups) for _ in s], dtype=torch.long, device=device
        )
        return cls(tuple(groups), matrix, flat, group_of)


@dataclass(frozen=True)
class ScanChunk:
    """One chunk of the all-latent scan, its rows sorted by ``|margin|``."""

    x: Tensor  # [B, d] embeddings
    margin: Tensor  # [B] margins before any edit
    z: Tensor  # [B, n] codes
    onehot: Tensor  # [strata, B] stratum of each row (2 · cell + correct before)
    strata: Tensor  # [B] the same as indices
    order: np.ndarray  # chunk row i is original row order[i]


@dataclass(frozen=True)
class ChunkScan:
    """What an effect's scan of one chunk returns besides the flip counts."""

    checked: int  # (sample, latent) pairs evaluated
    state: Mapping[str, np.ndarray] = field(default_factory=dict)  # per-row, original order


def flip_counts(after: Tensor, margin: Tensor, onehot: Tensor) -> Tensor:
    """Per-stratum counts of decisions that change: ``[strata, cols]``."""
    flip = (after > 0) != (margin > 0)[:, None]
    return onehot @ flip.to(onehot.dtype)


def unsort(values: Tensor, order: np.ndarray) -> np.ndarray:
    """Chunk values back in the chunk's original row order."""
    return values.cpu().numpy()[np.argsort(order, kind="stable")]


# ------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------


class EditEffect(ABC):
    """How one classifier's margin moves when embeddings move along decoder directions.

    Built from the classifier and the decoder directions ``u`` (``[n, d]``, raw embedding
    space).
    """

    #: How the audit JSON names the method (``data.classifier_kind``).
    kind: ClassVar[str]
    #: Whether the scan's single-latent flips are exact (else a first-order screen, and a
    #: shortlist is evaluated exactly).
    exact: ClassVar[bool]
    #: Whether exact edits want ``x · u_j`` of the edited latents (collected with activations).
    projections: ClassVar[bool] = False

    def __init__(self, u: Tensor) -> None:
        self.u = u

    @abstractmethod
    def scan(
        self, chunk: ScanChunk, groups: NameGroups, values: Tensor | None, out: Tensor
    ) -> ChunkScan:
        """Add each stratum's flip counts to ``out`` (``[strata, n + R]``: every latent, then
        every name group, set to its ablation value ``values``, None meaning 0)."""

    @abstractmethod
    def margins(
        self,
        space: Workspace,
        base: Baseline,
        positions: np.ndarray,
        latents: tuple[int, ...],
        coeff: Tensor,
        x_dot_u: Tensor | None = None,
    ) -> Tensor:
        """Exact margins of ``x_i + Σ_j coeff_ij u_j`` for the rows at ``positions``."""

    def base_state(self, x: Tensor) -> dict[str, np.ndarray]:
        """Per-row values of ``x`` that :meth:`margins` reads from ``Baseline.state`` (what
        the scan records; none by default)."""
        return {}

    def relocated_successes(
        self, base: Baseline, z: np.ndarray, latents: tuple[int, ...], y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """An exact shortcut for the relocation null's per-sample success counts, or None to use
        the generic quantile-atom computation."""
        return None
