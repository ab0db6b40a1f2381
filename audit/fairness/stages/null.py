"""Stage 4: p-values against the relocation null for the top named concepts, and
Benjamini–Hochberg q-values over every validated name (the tested family)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.fairness.reliance import relocation_null, row_rng
from audit.fairness.stages.choose import Chosen, null_candidates
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.scan import Key, Screened
from audit.fairness.stats import bh_qvalues, null_draws_for_family

#: Random stream of the null draws (the bootstrap uses stream 1).
NULL_STREAM = 2


@dataclass(frozen=True)
class NullTests:
    family_size: int
    with_null: int
    max_draws: int
    p: dict[Key, float]  # concepts given a null; the rest have p = 1
    draws: dict[Key, tuple[int, tuple[float, float]]]  # (draws made, central 95 % of the null)
    q: dict[Key, float]  # every tested concept

    def p_of(self, key: Key) -> float:
        return self.p.get(key, 1.0)


def null_stage(ctx: AuditContext, sc: Screened, chosen: Chosen) -> NullTests:
    settings = ctx.settings
    family = len(sc.tested)
    # Enough draws that the smallest p-value, 1 / (M + 1), survives BH over the whole family.
    max_draws = null_draws_for_family(family, ctx.gate.max_q, settings.null_min_draws)
    candidates = null_candidates(list(chosen.tested), chosen.effects, settings.null_rows)
    tick = ctx.tick("null", len(candidates))
    p, draws = {}, {}
    for r in candidates:
        s = chosen.effects.summaries[r.latents]
        p[r.latents], used, band = relocation_null(
            sc.setting, r, chosen.columns.of(r), s.delta_wga, s.wga_after, max_draws,
            row_rng(settings.seed, NULL_STREAM, r), settings.null_atoms,
        )  # fmt: skip
        draws[r.latents] = (used, band)
        if tick:
            tick(1)
    all_p = np.array([p.get(r.latents, 1.0) for r in sc.tested])
    q = dict(zip([r.latents for r in sc.tested], bh_qvalues(all_p), strict=True))
    return NullTests(family, len(candidates), max_draws, p, draws, q)
