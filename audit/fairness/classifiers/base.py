"""The interface every classifier kind implements.

A classifier is reduced to one decision margin on embeddings: ``margin(x) > 0`` predicts the
positive class. How an edit of the embeddings moves that margin is its :class:`EditEffect`
(a closed form for linear heads; decode-and-rerun by default).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from audit.fairness.edits import EditEffect


class Classifier(ABC):
    """A binary classifier on ``[B, d]`` embeddings.

    Attributes every kind sets: ``kind`` (how reports name it: ``linear``, ``probe``,
    ``torchscript``) and ``input`` (``raw`` or ``l2``: what the classifier reads).
    """

    kind: str
    input: str

    @property
    def l2(self) -> bool:
        return self.input == "l2"

    @abstractmethod
    def margin(self, x: Tensor) -> Tensor:
        """``[B]`` scores whose sign is the decision."""

    def decisions(self, x: Tensor) -> Tensor:
        """``[B]`` 0/1 predictions."""
        return (self.margin(x) > 0).to(torch.int8)

    @abstractmethod
    def to(self, device: torch.device | str) -> Classifier:
        """The classifier on ``device``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Its provenance for the audit JSON (kind, input, path, hash …)."""

    def edit_effect(self, u: Tensor) -> EditEffect:
        """How edits along the directions ``u`` move the margin: decode-and-rerun unless the
        kind knows better."""
        from audit.fairness.classifiers.rerun import RerunEffect

        return RerunEffect(self, u)
