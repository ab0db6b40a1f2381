"""Pass 2: per-sample activations of the latents that need them (exact edits, the null, steering
curves and examples), gathered once into an immutable column table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from audit.fairness.edits import Workspace
from audit.fairness.reliance.rows import ConceptRow
from audit.sae import SparseAutoencoder


@dataclass(frozen=True)
class RowData:
    """Per-sample values of one concept row."""

    z: np.ndarray  # [N, |S|] activations of the row's latents
    x_dot_u: np.ndarray | None  # [N, |S|] x · u_j (heads on L2 inputs)


def extract_columns(
    space: Workspace,
    sae: SparseAutoencoder,
    latents: list[int],
    projections: bool,
    tick: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``z[:, latents]`` for every audited row (and ``x · u_j`` when ``projections``)."""
    out = np.zeros((space.rows.count, len(latents)), dtype=np.float32)
    xu_out = np.zeros_like(out) if projections else None
    if not latents:
        return out, xu_out
    cols = torch.tensor(latents, dtype=torch.long, device=space.device)
    u = sae.decoder_directions().detach()[latents].to(space.dtype)
    encode = sae.column_encoder(cols)
    for lo, block in space.rows.chunks(space.chunk):
        x = space.tensor(block)
        with torch.no_grad():
            out[lo : lo + len(block)] = encode(x).cpu().numpy()
            if xu_out is not None:
                xu_out[lo : lo + len(block)] = (x @ u.T).cpu().numpy()
        if tick:
            tick(len(block))
    return out, xu_out


@dataclass(frozen=True)
class Columns:
    """Activation columns gathered so far (``with_latents`` returns a larger table)."""

    where: dict[int, int] = field(default_factory=dict)
    z: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    xu: np.ndarray | None = None

    def with_latents(
        self,
        space: Workspace,
        sae: SparseAutoencoder,
        latents: set[int],
        projections: bool,
        tick: Callable[[int], None] | None = None,
    ) -> Columns:
        missing = sorted(set(latents) - set(self.where))
        if not missing and self.where:
            return self
        z, xu = extract_columns(space, sae, missing, projections, tick)
        base_z = self.z if self.where else np.zeros((space.rows.count, 0), dtype=np.float32)
        offset = base_z.shape[1]
        where = {**self.where, **{j: offset + i for i, j in enumerate(missing)}}
        xu_all = xu if self.xu is None or xu is None else np.concatenate([self.xu, xu], axis=1)
        return Columns(where, np.concatenate([base_z, z], axis=1), xu_all)

    def has(self, row: ConceptRow) -> bool:
        return set(row.latents) <= set(self.where)

    def of(self, row: ConceptRow) -> RowData:
        idx = [self.where[j] for j in row.latents]
        return RowData(self.z[:, idx], None if self.xu is None else self.xu[:, idx])
