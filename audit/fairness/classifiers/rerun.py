"""Decode-and-rerun: the effect of an edit on any classifier, by running it on the edited
embeddings. The all-latent scan screens with the first-order version of the edit (the input
gradient in place of a linear head's weights); a shortlist is then evaluated exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from audit.errors import InputError
from audit.fairness.edits import (
    Baseline,
    ChunkScan,
    EditEffect,
    NameGroups,
    ScanChunk,
    Workspace,
    flip_counts,
)

if TYPE_CHECKING:
    from audit.fairness.classifiers.base import Classifier


class RerunEffect(EditEffect):
    kind = "rerun"
    exact = False

    def __init__(self, classifier: Classifier, u: Tensor) -> None:
        super().__init__(u)
        self.classifier = classifier

    def gradient(self, x: Tensor) -> Tensor:
        """The margin's input gradient at each row (zeros when it is not differentiable)."""
        x_req = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                return torch.autograd.grad(self.classifier.margin(x_req).sum(), x_req)[0]
        except (RuntimeError, InputError):
            # Not differentiable (or failing only with gradients on): the screen sees no
            # effect. A module that fails outright already failed on the base margins.
            return torch.zeros_like(x)

    def scan(
        self, chunk: ScanChunk, groups: NameGroups, values: Tensor | None, out: Tensor
    ) -> ChunkScan:
        grad = self.gradient(chunk.x)
        with torch.no_grad():
            gu = grad @ self.u.T
            c = -chunk.z if values is None else values[None, :] - chunk.z
            n = chunk.z.shape[1]
            out[:, :n] += flip_counts(chunk.margin[:, None] + c * gu, chunk.margin, chunk.onehot)
            if groups.latents:
                after = chunk.margin[:, None] + (c * gu) @ groups.matrix
                out[:, n:] += flip_counts(after, chunk.margin, chunk.onehot)
        return ChunkScan(0)

    def margins(
        self,
        space: Workspace,
        base: Baseline,
        positions: np.ndarray,
        latents: tuple[int, ...],
        coeff: Tensor,
        x_dot_u: Tensor | None = None,
    ) -> Tensor:
        """Reruns the classifier on the rows the edit changes; the others keep their margin."""
        u = self.u[list(latents)]
        out = space.from_numpy(base.margin[positions]).clone()
        changed = torch.nonzero((coeff != 0).any(1)).flatten().cpu().numpy()
        for lo in range(0, changed.size, space.chunk):
            sel = changed[lo : lo + space.chunk]
            x = space.x(positions[sel]) + coeff[sel] @ u
            with torch.no_grad():
                out[sel] = self.classifier.margin(x)
        return out
