"""The user's own model, reduced to per-row decisions: an image model on pixels
(:mod:`~audit.models.image_model`, scored by :mod:`~audit.models.image_scoring`) or a
predictions file (:mod:`~audit.models.predictions`). Both return
:class:`~audit.models.outputs.ModelDecisions`.
"""

from audit.models.image_model import ImageModel, load_image_model
from audit.models.image_scoring import image_paths, score_images
from audit.models.outputs import ModelDecisions, check_varied, interpret_scores
from audit.models.predictions import load_predictions

__all__ = [
    "ImageModel",
    "ModelDecisions",
    "check_varied",
    "image_paths",
    "interpret_scores",
    "load_image_model",
    "load_predictions",
    "score_images",
]
