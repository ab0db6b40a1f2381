"""Stage 6: where each concept is active, and the concept-sliced errors of the classifier's own
decisions — an image model's or a predictions file's own, not its surrogate's. Associations,
not causes (:mod:`audit.fairness.slices`); "active" is :mod:`audit.concepts.activity`'s."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from torch import Tensor

from audit.concepts.activity import (
    ConceptActivity,
    concept_activity,
    otsu_thresholds,
    summed_activations,
)
from audit.concepts.namecheck import NameCheck
from audit.fairness.records import SlicedErrors
from audit.fairness.reliance import ConceptRow, build_concept_rows
from audit.fairness.reliance.scan import Scan
from audit.fairness.slices import SliceSettings, sliced_errors, with_name_evidence
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.names import name_check_stage, name_evidence


def activity_stage(
    ctx: AuditContext, rows: Sequence[ConceptRow], scan: Scan | None = None
) -> ConceptActivity:
    """Each row's summed activation on the audited rows, and where it is active. The concepts
    ``scan`` kept come from its pass; only the others are encoded here."""
    kept = scan.kept_sums if scan is not None else None
    known = scan.kept if scan is not None and kept is not None else ()
    have = set(known)
    missing = [r.latents for r in rows if r.latents not in have]
    if kept is not None and not missing:
        return ConceptActivity(known, kept, otsu_thresholds(kept))
    tick = ctx.tick("concept activity", ctx.space.rows.count)

    def chunks() -> Iterator[Tensor]:
        for _, block in ctx.space.rows.chunks(ctx.space.chunk):
            yield ctx.space.tensor(block)
            if tick:
                tick(len(block))

    if kept is None:
        return concept_activity(ctx.sae, chunks(), missing)
    sums = np.concatenate([kept, summed_activations(ctx.sae, chunks(), missing)], axis=1)
    return ConceptActivity((*known, *missing), sums, otsu_thresholds(sums))


def tested_rows(ctx: AuditContext) -> list[ConceptRow]:
    """The bank's validated concepts (the audit's tested family)."""
    return [r for r in build_concept_rows(ctx.bank, ctx.sae.n_latents) if r.tested]


def errors_stage(
    ctx: AuditContext,
    decisions: np.ndarray,
    activity: ConceptActivity | None = None,
    name_checks: Mapping[tuple[int, ...], NameCheck] | None = None,
) -> SlicedErrors:
    """The sliced errors of ``decisions`` (the audited rows') over every validated concept;
    ``activity`` may already hold them, and ``name_checks`` the names checked on the audited
    rows (both are computed otherwise). A concept whose name does not hold is not flagged."""
    rows = tested_rows(ctx)
    if activity is None or not all(r.latents in activity.latents for r in rows):
        activity = activity_stage(ctx, rows)
    if name_checks is None:
        name_checks = name_check_stage(ctx, [(r.latents, r.image) for r in rows], activity)
    columns = [activity.index(r.latents) for r in rows]
    whose = {
        "image": "the image model's own",
        "predictions": "the predictions file's",
    }.get(str(ctx.classifier_info.get("kind")), "the classifier's own")
    settings = SliceSettings(
        bootstrap=ctx.gate.bootstrap_samples, seed=ctx.gate.bootstrap_seed_for(ctx.settings.seed)
    )
    errors = sliced_errors(
        [str(r.name) for r in rows], activity, ctx.cells.y, decisions, ctx.cells.target_values,
        settings, whose, columns,
    )  # fmt: skip
    evidence = {r.latents: name_evidence(r.image, name_checks.get(r.latents)) for r in rows}
    return with_name_evidence(errors, {k: e for k, e in evidence.items() if e is not None})
