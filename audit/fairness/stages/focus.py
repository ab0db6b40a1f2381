"""Stage 5b: steering curves and example rows for the top flagged concepts (else the top named
one)."""

from __future__ import annotations

import numpy as np

from audit.fairness.reliance import (
    ConceptRow,
    RowData,
    ablation_coefficients,
    dose_response,
    row_margins,
    top_examples,
)
from audit.fairness.result import ConceptFinding, DoseResponse, ExampleRow, Examples
from audit.fairness.stages.choose import Chosen
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.scan import Screened


def _worst_cell(ctx: AuditContext, worst_group: str) -> int:
    names = [ctx.cells.cell_name(c) for c in range(ctx.cells.n_cells)]
    return names.index(worst_group) if worst_group in names else 0


def _example(
    ctx: AuditContext, sc: Screened, pos: int, data: RowData, after: np.ndarray
) -> ExampleRow:
    row = int(ctx.selection.audit[pos])
    labels = ctx.labels

    def column(name: str) -> str | None:
        return str(labels[name].iloc[row]) if name in labels.columns else None

    return ExampleRow(
        row=row,
        group=ctx.cells.cell_name(int(ctx.cells.cell[pos])),
        activation=float(data.z[pos].sum()),
        margin_before=float(sc.scan.base.margin[pos]),
        margin_after=float(after[pos]),
        id=column("id"),
        path=column("path"),
    )


def focus_stage(
    ctx: AuditContext, sc: Screened, chosen: Chosen, concepts: tuple[ConceptFinding, ...]
) -> tuple[tuple[DoseResponse, ...], tuple[Examples, ...]]:
    flagged = [c for c in concepts if c.flagged][: ctx.settings.dose_top]
    focus = flagged or [c for c in concepts if c.tested][:1]
    columns = chosen.columns.with_latents(
        ctx.space, ctx.sae, {j for c in focus for j in c.latents}, ctx.effect.projections
    )
    by_key: dict[tuple[int, ...], ConceptRow] = {r.latents: r for r in sc.rows}
    worst = _worst_cell(ctx, sc.metrics.worst_group)
    doses, examples = [], []
    for c in focus:
        row = by_key[c.latents]
        data = columns.of(row)
        doses.append(dose_response(sc.setting, row, data, c.name, c.flagged))
        after = chosen.afters.get(row.latents)
        if after is None:
            coeff = ablation_coefficients(sc.setting.values, row, data)
            after = row_margins(sc.setting, row, data, coeff)
        top, flips = top_examples(
            sc.scan.base, ctx.cells, data, after, worst, ctx.settings.examples
        )
        examples.append(
            Examples(
                label=c.label,
                latents=c.latents,
                top_activating=tuple(_example(ctx, sc, i, data, after) for i in top),
                flipped=tuple(_example(ctx, sc, i, data, after) for i in flips),
            )
        )
    return tuple(doses), tuple(examples)
