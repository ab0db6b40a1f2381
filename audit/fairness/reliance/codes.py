"""The audited rows' SAE codes, kept sparse from the mean-ablation pass for the scan.

Mean ablation needs every latent's mean code before the scan can count a single flip, so the
rows are encoded twice — at CelebA scale (200 000 × 768 → 6 144 latents) the two encodings
are most of the scan's time on a CPU. The first pass keeps its codes instead, as each row's
non-zero entries (int32 latent indices and float values: ~8 bytes per active latent), and the
scan rebuilds each chunk's dense code from them, which costs a fraction of an encoding. The
codes are kept only up to a memory budget; past it they are dropped and the scan encodes
again, as before.

>>> import torch
>>> kept = KeptCodes(n_latents=4, budget_bytes=1 << 20)
>>> kept.add(torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
True
>>> kept.chunk(0)
tensor([[0., 2., 0., 1.],
        [0., 0., 0., 0.]])
"""

from __future__ import annotations

import torch
from torch import Tensor

# Kept codes may use this much memory (at 160 active latents per row, 800 000 rows).
KEPT_CODES_BYTES = 1 << 30


class KeptCodes:
    """Dense code chunks stored sparse, in the order they were added (the row chunks of one
    pass over the audited rows)."""

    def __init__(
        self,
        n_latents: int,
        budget_bytes: int = KEPT_CODES_BYTES,
        layout: tuple[int, int] | None = None,
    ) -> None:
        self.n_latents = n_latents
        self.budget_bytes = budget_bytes
        self.layout = layout  # (rows, rows per chunk) of the pass that kept them
        self.bytes = 0
        self.dropped = False
        # Per chunk: active latents per row, their latent indices, their values (row-major).
        self._chunks: list[tuple[Tensor, Tensor, Tensor]] = []

    def add(self, z: Tensor) -> bool:
        """Keep chunk ``z`` ``[rows, n]``; False (and nothing kept at all) once over budget."""
        if self.dropped:
            return False
        active = z != 0
        per_row = active.sum(1)
        latents = active.nonzero()[:, 1].to(torch.int32)
        values = z[active]
        self.bytes += (
            per_row.numel() * 8 + latents.numel() * 4 + values.numel() * values.element_size()
        )
        if self.bytes > self.budget_bytes:
            self._chunks, self.dropped = [], True
            return False
        self._chunks.append((per_row, latents, values))
        return True

    @property
    def chunks(self) -> int:
        return len(self._chunks)

    def chunk(self, index: int) -> Tensor:
        """Chunk ``index`` as the dense code it was added as."""
        per_row, latents, values = self._chunks[index]
        dense = values.new_zeros((len(per_row), self.n_latents))
        rows = torch.repeat_interleave(torch.arange(len(per_row), device=values.device), per_row)
        dense[rows, latents.long()] = values
        return dense
