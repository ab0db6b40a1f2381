"""Predictions files (``--predictions PRED.csv``): the user's model as the decisions it wrote,
in any framework. Columns ``id`` (the store's metadata id) and ``score`` (a logit or a
probability of the positive class) or ``label`` (0/1); the reader is
:mod:`audit.models.predictions`. Decisions come from the file; edits from its surrogate
(:mod:`.own`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from audit.errors import InputError
from audit.fairness.classifiers.linear import LinearHead
from audit.fairness.classifiers.own import DecisionRequest, OwnModel
from audit.fileio import file_sha256
from audit.models import ModelDecisions, load_predictions

SUFFIXES = (".csv",)


@dataclass(frozen=True, eq=False)
class PredictionsClassifier(OwnModel):
    source: str
    sha256: str
    head: LinearHead | None = None
    kind: str = "predictions"
    input: str = "predictions"

    def decide(self, request: DecisionRequest) -> ModelDecisions:
        if "id" not in request.labels.columns:
            raise InputError(
                f"{self.source}: predictions are matched to rows by id, but the labels have no "
                "'id' column"
            )
        return load_predictions(self.source, request.labels["id"].tolist())

    def with_head(self, head: LinearHead) -> PredictionsClassifier:
        return replace(self, head=head)

    def record(self) -> dict[str, Any]:
        return {"path": self.source, "sha256": self.sha256, "format": "CSV"}


def load_predictions_classifier(p: Path, dim: int, input: str) -> PredictionsClassifier:
    """A predictions file (read when the audit knows the store's ids)."""
    if p.is_dir():
        raise InputError(f"predictions file {p} is a folder")
    return PredictionsClassifier(str(p), file_sha256(p))
