"""Image models (``--classifier MODEL.pt|.pt2 --classifier-input image``): the user's
TorchScript or ``torch.export`` model on the images of the store's rows.

The model takes float32 ``[B, 3, H, W]`` in [0, 1] (it normalises itself) and returns ``[B]``,
``[B, 1]`` or ``[B, 2]`` scores (:mod:`audit.models.image_model`). Each row's image is the
labels' ``path`` column (relative paths: relative to the store folder; for ``celeba``, the
CelebA root's image of the row); the images are streamed through a DataLoader
(:mod:`audit.models.image_scoring`). Decisions come from the model; edits from its surrogate
(:mod:`.own`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from audit.fairness.classifiers.linear import LinearHead
from audit.fairness.classifiers.own import DecisionRequest, OwnModel
from audit.models import ImageModel, ModelDecisions, image_paths, load_image_model
from audit.models.image_model import EXPORT_SUFFIXES, TORCHSCRIPT_SUFFIXES

SUFFIXES = (*TORCHSCRIPT_SUFFIXES, *EXPORT_SUFFIXES)
FORMAT_NAMES = {"torchscript": "TorchScript", "torch.export": "torch.export"}


@dataclass(frozen=True, eq=False)
class ImageClassifier(OwnModel):
    model: ImageModel
    head: LinearHead | None = None
    kind: str = "image"
    input: str = "image"

    def decide(self, request: DecisionRequest) -> ModelDecisions:
        from audit.models import score_images

        paths = image_paths(request.labels, request.store_path)
        return score_images(
            self.model, paths, request.rows, image_size=request.image_size,
            batch_size=request.batch_size, num_workers=request.workers, device=request.device,
            progress=request.progress, allow_constant=True,
        )  # fmt: skip

    def with_head(self, head: LinearHead) -> ImageClassifier:
        return replace(self, head=head)

    def details(self, request: DecisionRequest) -> dict[str, Any]:
        size = request.image_size
        used = (size, size) if size else self.model.fixed_size
        return {"image_size": list(used) if used else None}

    def record(self) -> dict[str, Any]:
        return {
            "path": self.model.source,
            "sha256": self.model.sha256,
            "format": FORMAT_NAMES.get(self.model.format, self.model.format),
        }


def load_image_classifier(p: Path, dim: int, input: str) -> ImageClassifier:
    """An image model from a TorchScript or ``.pt2`` file (``dim`` is the embeddings', unused:
    the model reads pixels)."""
    return ImageClassifier(load_image_model(p))
