"""Stage 5c: the typed audit result, judged under the gate."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from audit import __version__
from audit.fairness.checks import judge
from audit.fairness.config import parse_class_names
from audit.fairness.records import ClassifierRecord, SlicedErrors
from audit.fairness.result import (
    AttributeDirection,
    AuditData,
    AuditResult,
    ConceptFinding,
    DoseResponse,
    Examples,
    Family,
    GroupMetrics,
    Integrity,
    SettingsRecord,
)
from audit.fairness.serialize import SCHEMA, SCHEMA_VERSION
from audit.fairness.stages.context import AuditContext


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "msae_audit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__.split("+")[0],
        # From the package metadata: importing scikit-learn only to read its version costs
        # seconds when the audit did not fit a probe.
        "scikit_learn": version("scikit-learn"),
    }


@dataclass(frozen=True)
class Attribution:
    """The concept part of a result (empty when the integrity check refused it)."""

    computed: bool
    concepts: tuple[ConceptFinding, ...] = ()
    family: Family | None = None
    dose_response: tuple[DoseResponse, ...] = ()
    examples: tuple[Examples, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    direction: AttributeDirection | None = None  # the attribute's own direction removed


def classifier_record(ctx: AuditContext) -> ClassifierRecord:
    """The classifier block: what was audited and where its numbers come from."""
    info = ctx.classifier_info
    kind = str(info.get("kind", ctx.classifier.kind))
    if ctx.own_model:
        whose = "the image model's own" if kind == "image" else "the predictions file's"
        attribution = (
            "a surrogate: logistic regression on the CLIP embeddings fit to the model's "
            "decisions (ablations are causal for the surrogate; they stand for the model as far "
            "as the two agree)"
        )
    else:
        whose, attribution = "the classifier's own", "the classifier itself, on edited embeddings"
    size = info.get("image_size")
    return ClassifierRecord(
        kind=kind,  # type: ignore[arg-type]
        input=str(info.get("input", ctx.settings.classifier_input)),
        decisions=whose,
        attribution=attribution,
        path=info.get("path"),
        sha256=info.get("sha256"),
        format=info.get("format"),
        scores=info.get("scores"),
        image_size=tuple(int(v) for v in size) if size else None,
        rows_decided=info.get("rows_decided"),
    )


def assemble(
    ctx: AuditContext,
    integrity: Integrity,
    metrics: GroupMetrics,
    attribution: Attribution,
    provenance: Mapping[str, Any],
    extra: Mapping[str, Any],
    errors: SlicedErrors | None = None,
) -> AuditResult:
    """Everything in one :class:`AuditResult`, flagged and judged under the gate."""
    settings, gate = ctx.settings, ctx.gate
    inputs = {
        **provenance,
        "classifier": {**provenance.get("classifier", {}), **ctx.classifier_info},
    }
    data = AuditData(
        rows_total=int(ctx.rows_total),
        rows_audited=int(ctx.selection.audit.size),
        split=ctx.selection.source,
        target=settings.target,
        spurious=ctx.cells.attribute_spec or settings.spurious,
        positive_class=ctx.cells.target_values[1],
        classifier_kind=ctx.effect.kind,
        class_names=parse_class_names(settings.class_names) or None,
    )
    result = AuditResult(
        schema=SCHEMA, version=SCHEMA_VERSION, verdict="pass", exit_code=0,
        tool=tool_versions(), seed=settings.seed, inputs=inputs,
        settings=SettingsRecord.of(settings, gate), gate=gate.describe(), data=data,
        notes=ctx.bank.notes() + attribution.notes, integrity=integrity, groups=metrics.groups,
        empty_groups=metrics.empty_groups, attribute_groups=metrics.attribute_groups,
        accuracy=metrics.accuracy, worst_group=metrics.worst_group,
        worst_group_accuracy=metrics.worst_group_accuracy, accuracy_gap=metrics.accuracy_gap,
        equalized_odds_difference=metrics.equalized_odds_difference,
        demographic_parity_difference=metrics.demographic_parity_difference,
        concepts_computed=attribution.computed, concepts=(), family=attribution.family,
        dose_response=attribution.dose_response, examples=attribution.examples,
        flagged_concepts=0, checks=(), classifier=classifier_record(ctx),
        surrogate=ctx.stand_in.record if ctx.stand_in is not None else None,
        concept_errors=errors, error=attribution.error, extra=dict(extra),
        attribute_direction=attribution.direction,
    )  # fmt: skip
    return judge(result, attribution.concepts, gate)
