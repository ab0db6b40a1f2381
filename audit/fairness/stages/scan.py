"""Stage 2: ablate every latent and every name group in one pass; the group metrics of the
classifier's own decisions come from the same pass (an own model's: from its decisions; the
pass runs on its surrogate)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.fairness.groups import group_report
from audit.fairness.reliance import (
    ConceptRow,
    EditSetting,
    PairSummary,
    Scan,
    ablation_values,
    build_concept_rows,
    pair_summary,
    scan_latents,
)
from audit.fairness.result import GroupMetrics
from audit.fairness.stages.context import AuditContext

Key = tuple[int, ...]  # a concept row's latents


@dataclass(frozen=True)
class Effects:
    """Each concept row's pair counts (✓✓, ✓✗, ✗✓, ✗✗ per cell) and what they say."""

    pairs: dict[Key, np.ndarray]
    summaries: dict[Key, PairSummary]

    @classmethod
    def of(cls, pairs: dict[Key, np.ndarray], ctx: AuditContext) -> Effects:
        return cls(pairs, {k: pair_summary(p, ctx.cells) for k, p in pairs.items()})

    def with_pairs(self, updates: dict[Key, np.ndarray], ctx: AuditContext) -> Effects:
        fresh = Effects.of(updates, ctx)
        return Effects({**self.pairs, **fresh.pairs}, {**self.summaries, **fresh.summaries})

    def delta(self, row: ConceptRow) -> float:
        return self.summaries[row.latents].delta_wga

    def by_delta(self, rows: list[ConceptRow]) -> list[ConceptRow]:
        """Largest ΔWGA first (ties: lowest latent)."""
        return sorted(rows, key=lambda r: (-self.delta(r), r.latent))


@dataclass(frozen=True)
class Screened:
    """The outcome of the all-latent pass."""

    rows: tuple[ConceptRow, ...]
    scan: Scan
    setting: EditSetting
    effects: Effects
    metrics: GroupMetrics

    @property
    def tested(self) -> list[ConceptRow]:
        return [r for r in self.rows if r.tested]


def scan_stage(ctx: AuditContext) -> Screened:
    space = ctx.space
    values, codes = ablation_values(
        space, ctx.sae, ctx.settings.ablation, ctx.tick("mean activations", space.rows.count)
        if ctx.settings.ablation == "mean" else None,
    )  # fmt: skip
    rows = build_concept_rows(ctx.bank, ctx.sae.n_latents)
    groups = [r.latents for r in rows if len(r.latents) > 1]
    scan = scan_latents(
        space, ctx.classifier, ctx.sae, ctx.cells, ctx.effect, values, groups,
        ctx.tick("ablate every latent", space.rows.count),
        keep=tuple(sorted(r.latents for r in rows if r.tested)),  # ascending: a faster gather
        codes=codes,
    )  # fmt: skip
    setting = EditSetting(space, ctx.cells, ctx.effect, scan.base, values)
    effects = Effects.of({r.latents: scan.row_pairs(r) for r in rows}, ctx)
    metrics = group_report(ctx.cells, ctx.decisions(scan.base.margin))
    return Screened(tuple(rows), scan, setting, effects, metrics)
