"""One pass over the audited rows for every validated concept at once: the classifier's margins,
each concept's summed activation (its activity) and each row's decision after the concept is
removed.

Removing concept ``C`` is the audit's edit, ``x' = x + Σ_{j∈C} (v_j − z_j) u_j`` (``v`` the
ablation value: 0, or the latent's mean over the audited rows). Per classifier kind:

* linear head on raw embeddings: ``m' = m + Σ_{j∈C} (v_j − z_j) g_j`` with ``g_j = w · u_j`` —
  every concept of every row in one ``[B, L] × [L, R]`` product, exact;
* other exact kinds (a linear head on L2-normalised inputs): the kind's own exact margins, one
  concept at a time;
* any other classifier: the first-order screen ``m + Σ (v_j − z_j) ∇m · u_j``; the concepts
  that matter are then evaluated exactly by decode-and-rerun (:mod:`audit.discover.effects`).

Only the family's latents are encoded (``L`` columns of the code, not all ``n``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.concepts import ConceptGroup
from audit.concepts.activity import group_sums
from audit.fairness.edits import Baseline
from audit.fairness.stages.context import AuditContext

Tick = Callable[[int], None] | None


@dataclass(frozen=True)
class Family:
    """The validated concepts (the tested family) and their latents laid out as code columns:
    ``latents`` (every concept's, concatenated) and ``owner`` (column ``l`` belongs to concept
    ``owner[l]``)."""

    groups: tuple[ConceptGroup, ...]
    latents: tuple[int, ...]
    owner: tuple[int, ...]

    @classmethod
    def of(cls, groups: list[ConceptGroup]) -> Family:
        latents = tuple(j for g in groups for j in g.latents)
        owner = tuple(r for r, g in enumerate(groups) for _ in g.latents)
        return cls(tuple(groups), latents, owner)

    @property
    def size(self) -> int:
        return len(self.groups)

    def encoder(self, sae: object, device: torch.device) -> Callable[[Tensor], Tensor]:
        """``x ↦ z[:, latents]``: the code of just the family's latents."""
        cols = torch.tensor(self.latents, dtype=torch.long, device=device)
        return sae.column_encoder(cols)  # type: ignore[attr-defined]

    def owner_matrix(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``[L, R]`` 0/1: column ``l`` belongs to concept ``r``."""
        matrix = torch.zeros((len(self.latents), self.size), device=device, dtype=dtype)
        rows = torch.arange(len(self.latents), device=device)
        matrix[rows, torch.tensor(self.owner, dtype=torch.long, device=device)] = 1.0
        return matrix


@dataclass(frozen=True)
class ConceptScan:
    """What the pass measured, per audited row."""

    base: Baseline  # margins before any edit (and per-row values exact edits reuse)
    sums: np.ndarray  # [N, R] float32 summed activation of each concept
    after_ok: np.ndarray  # [N, R] bool: decision correct after removing each concept
    exact: bool  # after_ok is exact (else a first-order screen)
    values: Tensor | None  # [n] ablation values (None: zero)


def family_means(ctx: AuditContext, family: Family, tick: Tick = None) -> Tensor:
    """``[n]``: each family latent's mean activation over the audited rows (others 0)."""
    space = ctx.space
    encode = family.encoder(ctx.sae, space.device)
    total = torch.zeros(len(family.latents), dtype=torch.float64, device=space.device)
    for _, block in space.rows.chunks(space.chunk):
        with torch.no_grad():
            total += encode(space.tensor(block)).sum(0, dtype=torch.float64)
        if tick:
            tick(len(block))
    values = torch.zeros(ctx.sae.n_latents, dtype=space.dtype, device=space.device)
    index = torch.tensor(family.latents, dtype=torch.long, device=space.device)
    return values.index_put_((index,), (total / max(1, space.rows.count)).to(space.dtype))


class _Editor:
    """Margins after removing each concept, for one chunk (see the module docstring)."""

    def __init__(self, ctx: AuditContext, family: Family, values: Tensor | None) -> None:
        space = ctx.space
        self.ctx, self.family = ctx, family
        self.index = torch.tensor(family.latents, dtype=torch.long, device=space.device)
        self.owner = family.owner_matrix(space.device, space.dtype)
        self.v = None if values is None else values[self.index]
        effect = ctx.effect
        self.u = effect.u[self.index]
        self.g = effect.g[self.index] if effect.kind == "linear_raw" else None  # type: ignore[attr-defined]
        self.gradient = None if effect.exact else getattr(effect, "gradient", None)
        self.spans = np.cumsum([0] + [len(g.latents) for g in family.groups])

    @property
    def exact(self) -> bool:
        return self.ctx.effect.exact or self.gradient is None

    def margins(
        self, x: Tensor, m: Tensor, z: Tensor, base: Baseline, positions: np.ndarray
    ) -> Tensor:
        c = -z if self.v is None else self.v[None, :] - z
        if self.g is not None:
            return m[:, None] + (c * self.g[None, :]) @ self.owner
        if self.gradient is not None:
            gu = self.gradient(x) @ self.u.T
            return m[:, None] + (c * gu) @ self.owner
        out = torch.empty((len(m), self.family.size), dtype=m.dtype, device=m.device)
        space, effect = self.ctx.space, self.ctx.effect
        for r, group in enumerate(self.family.groups):
            cols = slice(int(self.spans[r]), int(self.spans[r + 1]))
            xu = x @ self.u[cols].T if effect.projections else None
            out[:, r] = effect.margins(space, base, positions, group.latents, c[:, cols], xu)
        return out


def scan_concepts(
    ctx: AuditContext, family: Family, values: Tensor | None, tick: Tick = None
) -> ConceptScan:
    """The pass: margins, summed activations and decisions after each concept's removal."""
    space, classifier = ctx.space, ctx.classifier
    count, size = space.rows.count, family.size
    margins = np.empty(count, dtype=np.float64)
    state: dict[str, np.ndarray] = {}
    base = Baseline(margins, state)
    sums = np.zeros((count, size), dtype=np.float32)
    after_ok = np.zeros((count, size), dtype=bool)
    editor = _Editor(ctx, family, values)
    encode = family.encoder(ctx.sae, space.device)
    owner = torch.tensor(family.owner, dtype=torch.long, device=space.device)
    y = torch.from_numpy(ctx.cells.y.astype(np.int64)).to(space.device)
    for lo, block in space.rows.chunks(space.chunk):
        hi = lo + len(block)
        x = space.tensor(block)
        with torch.no_grad():
            m = classifier.margin(x)
            z = encode(x)
        margins[lo:hi] = m.cpu().numpy()
        for key, part in ctx.effect.base_state(x).items():
            state.setdefault(key, np.empty(count, dtype=part.dtype))[lo:hi] = part
        after = editor.margins(x, m, z, base, np.arange(lo, hi))
        with torch.no_grad():
            sums[lo:hi] = group_sums(z, owner, size).cpu().numpy()
            after_ok[lo:hi] = ((after > 0) == (y[lo:hi, None] == 1)).cpu().numpy()
        if tick:
            tick(len(block))
    return ConceptScan(base, sums, after_ok, editor.exact, values)
