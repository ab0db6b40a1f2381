"""What ``msae-audit discover`` needs besides the audit's settings, and the attribute it audits
with: every row in one group per target class (each concept then splits the classes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from audit.errors import InputError
from audit.fairness.attributes import Attribute, AttributeCodes, GroupingData
from audit.fairness.config import AuditSettings

#: How discover's ``settings.spurious`` reads: there is no labelled attribute.
EVERY_CONCEPT = "(each validated concept)"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DiscoverSettings:
    """The audit's settings (``base``: seed, ablation, split, classifier input, statistics) and
    discover's own."""

    base: AuditSettings
    threshold: float | None = _setting(
        None,
        "Summed activation above which a concept is active, for every concept "
        "(default: Otsu's threshold of each concept over the audited rows).",
    )
    max_target_auc: float = _setting(
        0.9,
        "A concept whose summed activation separates the target classes with ROC AUC at least "
        "this (either direction) is the target's own concept (removing it removes the task): "
        "listed, never flagged.",
    )
    min_rows: int = _setting(
        20, "Smallest concept-defined group a concept is tested with (fewer: listed, p = 1)."
    )

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise InputError(f"--threshold must be a finite number, got {self.threshold}")
        if self.min_rows < 1:
            raise InputError(f"--min-rows must be at least 1, got {self.min_rows}")
        if not 0.5 < self.max_target_auc <= 1.0:
            raise InputError(f"--max-target-auc must be in (0.5, 1], got {self.max_target_auc}")

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def default(cls, name: str) -> Any:
        return next(f.default for f in fields(cls) if f.name == name)


@dataclass(frozen=True)
class EveryRow(Attribute):
    """One group per target class: the cells discover starts from."""

    name: str = "rows"
    VALUE: ClassVar[str] = "all"

    def code(self, data: GroupingData, target: str) -> AttributeCodes:
        return AttributeCodes(np.zeros(len(data.labels), dtype=np.int16), (self.VALUE,), None)
