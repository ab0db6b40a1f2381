"""The user's own model as a classifier kind: known by its decisions on the store's rows,
examined on the embeddings through a surrogate.

An image model (:mod:`.image`) or a predictions file (:mod:`.predictions`) does not act on
CLIP embeddings, so it cannot say how its decision changes when a concept is edited out of an
embedding. It is a :class:`~audit.fairness.classifiers.base.Classifier` all the same:

* :meth:`OwnModel.decide` gives its decisions on store rows — what the group metrics, the worst
  group, the gaps and the gate are computed from;
* once a surrogate head is bound (:meth:`OwnModel.with_head`: a logistic regression on the
  embeddings fit to those decisions, :mod:`audit.fairness.surrogate`), ``margin`` and
  ``edit_effect`` are the surrogate's — a linear head, so every edit has its closed form.

The audit binds the surrogate in :func:`audit.fairness.stages.standin.stand_in`; any other user
of the classifier interface (discovery, a head export) gets the same object.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from audit.fairness.classifiers.base import Classifier
from audit.fairness.classifiers.linear import LinearHead
from audit.fairness.edits import EditEffect
from audit.models import ModelDecisions


@dataclass(frozen=True)
class DecisionRequest:
    """What an own model needs to decide some store rows."""

    labels: pd.DataFrame  # the store's metadata (ids, image paths) or the labels table
    store_path: str  # relative image paths are relative to it
    rows: np.ndarray  # store rows to decide (sorted)
    image_size: int | None = None
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    progress: Callable[[int, int], None] | None = None


class OwnModel(Classifier):
    """A classifier known by its decisions; ``margin`` and edits are its surrogate head's."""

    kind: str
    input: str
    head: LinearHead | None = None

    @abstractmethod
    def decide(self, request: DecisionRequest) -> ModelDecisions:
        """The model's decisions on ``request.rows`` (a predictions file may cover fewer: the
        caller asks :class:`ModelDecisions` for the rows it needs)."""

    @abstractmethod
    def record(self) -> dict[str, Any]:
        """What the model is (file, hash, format) for the audit JSON's classifier block."""

    @abstractmethod
    def with_head(self, head: LinearHead) -> OwnModel:
        """The same model with ``head`` as its surrogate."""

    def details(self, request: DecisionRequest) -> dict[str, Any]:
        """How ``request`` was answered, for the classifier block (e.g. the image size)."""
        return {}

    def _head(self) -> LinearHead:
        if self.head is None:
            raise RuntimeError(f"the {self.kind} classifier has no surrogate yet (stand_in)")
        return self.head

    def margin(self, x: Tensor) -> Tensor:
        return self._head().margin(x)

    def to(self, device: torch.device | str) -> OwnModel:
        return self if self.head is None else self.with_head(self.head.to(device))

    def edit_effect(self, u: Tensor) -> EditEffect:
        return self._head().edit_effect(u)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "input": self.input, **self.record()}
