"""Stage 6: where each concept is active, and the concept-sliced errors of the classifier's own
decisions — an image model's or a predictions file's own, not its surrogate's. Associations,
not causes (:mod:`audit.fairness.slices`); "active" is :mod:`audit.concepts.activity`'s."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch import Tensor

from audit.concepts.activity import ConceptActivity, concept_activity
from audit.fairness.records import SlicedErrors
from audit.fairness.reliance import ConceptRow, build_concept_rows
from audit.fairness.slices import SliceSettings, sliced_errors
from audit.fairness.stages.context import AuditContext


def activity_stage(ctx: AuditContext, rows: Sequence[ConceptRow]) -> ConceptActivity:
    """Each row's summed activation on the audited rows, and where it is active."""
    tick = ctx.tick("concept activity", ctx.space.rows.count)

    def chunks() -> Iterator[Tensor]:
        for _, block in ctx.space.rows.chunks(ctx.space.chunk):
            yield ctx.space.tensor(block)
            if tick:
                tick(len(block))

    return concept_activity(ctx.sae, chunks(), [r.latents for r in rows])


def tested_rows(ctx: AuditContext) -> list[ConceptRow]:
    """The bank's validated concepts (the audit's tested family)."""
    return [r for r in build_concept_rows(ctx.bank, ctx.sae.n_latents) if r.tested]


def errors_stage(
    ctx: AuditContext, decisions: np.ndarray, activity: ConceptActivity | None = None
) -> SlicedErrors:
    """The sliced errors of ``decisions`` (the audited rows') over every validated concept;
    ``activity`` may already hold them (it is computed otherwise)."""
    rows = tested_rows(ctx)
    if activity is None or not all(r.latents in activity.latents for r in rows):
        activity = activity_stage(ctx, rows)
    index = [activity.index(r.latents) for r in rows]
    own = ConceptActivity(
        tuple(r.latents for r in rows), activity.activation[:, index], activity.thresholds[index]
    )
    whose = {
        "image": "the image model's own",
        "predictions": "the predictions file's",
    }.get(str(ctx.classifier_info.get("kind")), "the classifier's own")
    settings = SliceSettings(
        bootstrap=ctx.gate.bootstrap_samples, seed=ctx.gate.bootstrap_seed_for(ctx.settings.seed)
    )
    return sliced_errors(
        [str(r.name) for r in rows], own, ctx.cells.y, decisions, ctx.cells.target_values,
        settings, whose,
    )  # fmt: skip
