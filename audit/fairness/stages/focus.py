"""Stage 5b: steering curves and example rows for the top flagged concepts (else the top named
one), and the most-activating rows of every other concept of the report's top table."""

from __future__ import annotations

import numpy as np
import torch

from audit.fairness.reliance import (
    ConceptRow,
    RowData,
    ablation_coefficients,
    dose_response,
    most_activating,
    row_margins,
    top_examples,
)
from audit.fairness.result import ConceptFinding, DoseResponse, ExampleRow, Examples
from audit.fairness.stages.choose import Chosen
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.scan import Screened

#: Concepts of the report's top table (ranked first): each gets its most-activating rows.
TABLE_CONCEPTS = 25
#: The rows behind ``attribute_share``: the top 2 % by activation, at least 20.
SHARE_FRACTION, SHARE_MIN_ROWS = 0.02, 20


def attribute_share(ctx: AuditContext, data: RowData) -> dict[str, float] | None:
    """Share of each attribute value among the concept's most-activating rows."""
    k = max(SHARE_MIN_ROWS, int(np.ceil(SHARE_FRACTION * data.z.shape[0])))
    top = np.array(most_activating(data, k), dtype=np.int64)
    if top.size < SHARE_MIN_ROWS:
        return None  # too few active rows to say
    cells = ctx.cells
    counts = np.bincount(cells.attribute[top], minlength=cells.n_values)
    return {
        f"{cells.attribute_name}={v}": round(float(c) / top.size, 6)
        for v, c in zip(cells.attribute_values, counts, strict=True)
    }


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
    focused = {c.latents for c in focus}
    table = [c for c in concepts[:TABLE_CONCEPTS] if c.latents not in focused]
    columns = chosen.columns.with_latents(
        ctx.space, ctx.sae, {j for c in [*focus, *table] for j in c.latents},
        ctx.effect.projections,
    )  # fmt: skip
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
                attribute_share=attribute_share(ctx, data),
            )
        )
    for c in table:
        examples.append(
            _top_activating(ctx, sc, by_key[c.latents], c, columns.of(by_key[c.latents]))
        )
    return tuple(doses), tuple(examples)


def _top_activating(
    ctx: AuditContext, sc: Screened, row: ConceptRow, c: ConceptFinding, data: RowData
) -> Examples:
    """The most-activating rows of a concept outside the focus, with their edited margins
    (evaluated on those rows only)."""
    top = np.array(most_activating(data, ctx.settings.examples), dtype=np.int64)
    after = sc.scan.base.margin.copy()
    if top.size:
        s = sc.setting
        coeff = ablation_coefficients(s.values, row, data)[top]
        xu = None if data.x_dot_u is None else s.space.from_numpy(data.x_dot_u[top])
        with torch.no_grad():
            moved = s.effect.margins(
                s.space, s.base, top, row.latents, s.space.from_numpy(coeff), xu
            )
        after[top] = moved.cpu().numpy().astype(np.float64)
    rows = tuple(_example(ctx, sc, int(i), data, after) for i in top)
    return Examples(
        label=c.label, latents=c.latents, top_activating=rows, flipped=(),
        attribute_share=attribute_share(ctx, data),
    )  # fmt: skip
