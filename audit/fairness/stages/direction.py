"""Stage 2b: the attribute's own direction removed from the embeddings, without the SAE — the
size of the shortcut the concepts are measured against."""

from __future__ import annotations

import numpy as np

from audit.fairness.reliance import bootstrap_ci, pair_summary
from audit.fairness.reliance.direction import (
    DIRECTION_BOOTSTRAP_STREAM,
    remove_attribute_direction,
)
from audit.fairness.result import AttributeDirection
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.scan import Screened

METHOD = (
    "cross-fitted halves (each target × attribute cell split in half): per class, "
    "mean(x | value) − mean(x | first value), averaged over classes, orthonormalised; each "
    "row's coordinates along them set to the other half's mean (x' = x − ((x − m) U) Uᵀ), the "
    "classifier rerun"
)


def direction_stage(ctx: AuditContext, screened: Screened) -> AttributeDirection | None:
    edit = remove_attribute_direction(
        ctx.space, ctx.classifier, ctx.cells, screened.scan.base.margin, ctx.settings.seed
    )
    if edit is None:
        return None
    summary = pair_summary(edit.pairs, ctx.cells)
    boot_seed = ctx.gate.bootstrap_seed_for(ctx.settings.seed)
    rng = np.random.default_rng(np.random.SeedSequence([boot_seed, DIRECTION_BOOTSTRAP_STREAM]))
    ci = bootstrap_ci(edit.pairs, ctx.gate.bootstrap_samples, rng)
    return AttributeDirection(
        directions=edit.directions,
        delta_wga=summary.delta_wga,
        ci=ci,
        wga_after=summary.wga_after,
        delta_accuracy_overall=summary.delta_accuracy_overall,
        method=METHOD,
    )
