"""Stage 5a: one finding per reported concept — ΔWGA with its bootstrap interval, p and q,
per-group effects and activations — flagged under the gate and ranked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from audit.concepts.activity import ConceptActivity
from audit.concepts.namecheck import NameCheck
from audit.fairness.checks import flag_concepts
from audit.fairness.reliance import (
    ConceptRow,
    beyond_record,
    row_interval,
)
from audit.fairness.result import ConceptFinding, Family
from audit.fairness.stages.choose import Chosen
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.names import name_evidence
from audit.fairness.stages.null import NullTests
from audit.fairness.stages.scan import Screened


def _finding(
    ctx: AuditContext, sc: Screened, chosen: Chosen, null: NullTests, row: ConceptRow,
    present: list[int], counts: np.ndarray, rate: np.ndarray, name_check: NameCheck | None,
) -> ConceptFinding:  # fmt: skip
    """``rate``: the share of each cell where the concept is active."""
    cells, key = ctx.cells, row.latents
    boot_seed = ctx.gate.bootstrap_seed_for(ctx.settings.seed)
    ci = row_interval(chosen.effects.pairs[key], ctx.gate.bootstrap_samples, boot_seed, row)
    act_sum = sc.scan.act_sum[:, list(key)].sum(1)
    used, band = null.draws.get(key, (0, None))
    s = chosen.effects.summaries[key]
    return ConceptFinding(
        rank=0, latent=row.latent, latents=key, name=row.name if row.tested else None,
        label=row.label, tested=row.tested, closest=row.closest, score=row.score,
        delta_wga=s.delta_wga, wga_after=s.wga_after, delta_accuracy=s.delta_accuracy,
        flip_rate_by_group=s.flip_rate_by_group, flip_rate=s.flip_rate,
        delta_accuracy_overall=s.delta_accuracy_overall, collateral_damage=s.collateral_damage,
        ci=ci, p=null.p_of(key) if row.tested else None,
        q=float(null.q[key]) if row.tested else None, null_draws=used, null_band=band,
        mean_activation={cells.cell_name(c): act_sum[c] / counts[c] for c in present},
        activation_rate={cells.cell_name(c): rate[c] for c in present},
        exact=True, allowlisted=False, flagged=False, beyond=beyond_record(null.beyond.get(key)),
        evidence=name_evidence(row.image, name_check),
    )  # fmt: skip


def _rank_key(c: ConceptFinding) -> tuple:
    """Largest ΔWGA, then the largest CI lower bound, the smallest q, the lowest latent."""
    return (-round(c.delta_wga, 9), -round(c.ci[0], 9), 1.0 if c.q is None else c.q, c.latent)


def findings_stage(
    ctx: AuditContext,
    sc: Screened,
    chosen: Chosen,
    null: NullTests,
    activity: ConceptActivity,
    name_checks: Mapping[tuple[int, ...], NameCheck] | None = None,
) -> tuple[tuple[ConceptFinding, ...], Family]:
    """``activity`` covers every listed row (where each concept is active); ``name_checks``
    the names checked again on the audited rows."""
    counts = np.bincount(ctx.cells.cell, minlength=ctx.cells.n_cells)
    present = [c for c in range(ctx.cells.n_cells) if counts[c]]
    tick = ctx.tick("bootstrap", len(chosen.listed))
    # Where each listed concept is active, counted per cell for all of them in one pass.
    cell_of = np.eye(ctx.cells.n_cells, dtype=np.float32)[ctx.cells.cell]
    columns = [activity.index(r.latents) for r in chosen.listed]
    rates = activity.active_counts(cell_of, columns) / np.maximum(counts, 1)[:, None]
    found = []
    for i, r in enumerate(chosen.listed):
        check = (name_checks or {}).get(r.latents)
        found.append(_finding(ctx, sc, chosen, null, r, present, counts, rates[:, i], check))
        if tick:
            tick(1)
    ranked = sorted(flag_concepts(tuple(found), ctx.gate), key=_rank_key)
    family = Family(
        size=null.family_size,
        with_null=null.with_null,
        null_draws_max=null.max_draws,
        min_attainable_p=1.0 / (null.max_draws + 1),
        null="relocation within target class; concepts below a stronger flagged one also tested "
        "beyond it (docs/audit-method.md, 'The relocation null', 'Beyond stronger concepts')",
        ablation=ctx.settings.ablation,
        bootstrap_samples=ctx.gate.bootstrap_samples,
        bootstrap_seed=ctx.gate.bootstrap_seed_for(ctx.settings.seed),
    )
    return tuple(replace(c, rank=i) for i, c in enumerate(ranked, 1)), family
