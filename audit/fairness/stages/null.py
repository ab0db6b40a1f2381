"""Stage 4: p-values against the relocation null for the top named concepts, each concept below a
flagged one also tested beyond it (:mod:`audit.fairness.reliance.beyond`), and
Benjamini–Hochberg q-values over every validated name (the tested family)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.fairness.checks import meets_flag_rule
from audit.fairness.reliance import (
    NULL_STREAM,
    Beyond,
    ConceptRow,
    beyond_tests,
    relocation_null,
    row_interval,
    row_rng,
)
from audit.fairness.stages.choose import Chosen, null_candidates
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.scan import Key, Screened
from audit.fairness.stats import bh_qvalues, null_draws_for_family


@dataclass(frozen=True)
class NullTests:
    family_size: int
    with_null: int
    max_draws: int
    p: dict[Key, float]  # concepts given a null; the rest have p = 1
    draws: dict[Key, tuple[int, tuple[float, float]]]  # (draws made, central 95 % of the null)
    q: dict[Key, float]  # every tested concept
    beyond: dict[Key, Beyond]  # concepts tested beyond stronger flagged ones

    def p_of(self, key: Key) -> float:
        return self.p.get(key, 1.0)


def null_stage(ctx: AuditContext, sc: Screened, chosen: Chosen) -> NullTests:
    settings = ctx.settings
    family = len(sc.tested)
    # Enough draws to resolve p-values at the smallest BH threshold over the whole family.
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
    q = _qvalues(sc, p)
    beyond = _beyond(ctx, sc, chosen, candidates, q, max_draws)
    if beyond:
        p = {k: max(v, beyond[k].p) if k in beyond else v for k, v in p.items()}
        q = _qvalues(sc, p)
    return NullTests(family, len(candidates), max_draws, p, draws, q, beyond)


def _qvalues(sc: Screened, p: dict[Key, float]) -> dict[Key, float]:
    all_p = np.array([p.get(r.latents, 1.0) for r in sc.tested])
    return dict(zip([r.latents for r in sc.tested], bh_qvalues(all_p), strict=True))


def _beyond(
    ctx: AuditContext, sc: Screened, chosen: Chosen, candidates: list[ConceptRow],
    q: dict[Key, float], max_draws: int,
) -> dict[Key, Beyond]:  # fmt: skip
    """Each concept that meets the flag rule alone, below another that does, tested with the
    edits of those above it applied first."""
    settings, effects = ctx.settings, chosen.effects
    boot_seed = ctx.gate.bootstrap_seed_for(settings.seed)

    def strong(r: ConceptRow) -> bool:
        s = effects.summaries[r.latents]
        if not meets_flag_rule(s.delta_wga, 1.0, q[r.latents], ctx.gate):
            return False  # the bootstrap below is the expensive part: only when it can matter
        ci = row_interval(effects.pairs[r.latents], ctx.gate.bootstrap_samples, boot_seed, r)
        return meets_flag_rule(s.delta_wga, ci[0], q[r.latents], ctx.gate)

    alone = [r for r in candidates if strong(r)]  # candidates come largest ΔWGA first
    return beyond_tests(
        [(r, sc.setting, chosen.columns.of(r)) for r in alone],
        max_draws,
        settings.seed,
        settings.null_atoms,
    )
