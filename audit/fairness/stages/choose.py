"""Stage 3: which concepts are reported, with exact numbers.

Linear heads: every named concept (the scan was exact), plus the unnamed latents with the
largest ΔWGA > 0. Other classifiers: the scan was a first-order screen, so a shortlist of named
concepts and unnamed latents is evaluated exactly by decode-and-rerun and re-ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.fairness.reliance import Columns, ConceptRow, exact_pairs
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.scan import Effects, Key, Screened


@dataclass(frozen=True)
class Chosen:
    tested: tuple[ConceptRow, ...]  # named concepts reported (in the BH family)
    untested: tuple[ConceptRow, ...]  # unnamed latents listed for discovery
    effects: Effects  # exact for every listed row
    columns: Columns  # per-sample activations gathered so far
    afters: dict[Key, np.ndarray]  # margins after ablation, where decode-and-rerun made them
    notes: tuple[str, ...]

    @property
    def listed(self) -> list[ConceptRow]:
        return [*self.tested, *self.untested]


def null_candidates(tested: list[ConceptRow], effects: Effects, limit: int) -> list[ConceptRow]:
    """The named concepts given a Monte-Carlo p-value: the largest ΔWGA > 0 (p = 1 for the
    rest, a valid and conservative choice)."""
    return [r for r in effects.by_delta(tested) if effects.delta(r) > 0][:limit]


def _needed_columns(ctx: AuditContext, sc: Screened, listed: list[ConceptRow]) -> set[int]:
    """Latents whose activations later stages read: exact reruns, name groups, the top named
    concept and (linear heads) the null's candidates."""
    exact = ctx.effect.exact
    needs = set() if exact else set(listed)
    needs |= {r for r in listed if len(r.latents) > 1}
    if sc.tested:
        needs.add(sc.effects.by_delta(sc.tested)[0])
    if exact:
        tested = [r for r in listed if r.tested]
        needs |= set(null_candidates(tested, sc.effects, ctx.settings.null_rows))
    return {j for r in needs for j in r.latents}


def choose_stage(ctx: AuditContext, sc: Screened) -> Chosen:
    settings, effects = ctx.settings, sc.effects
    untested = [r for r in sc.rows if not r.tested]
    notes: tuple[str, ...] = ()
    if ctx.effect.exact:
        tested = sc.tested
        untested = [r for r in effects.by_delta(untested) if effects.delta(r) > 0]
        untested = untested[: settings.unnamed_top]
    else:
        tested = effects.by_delta(sc.tested)[: settings.shortlist]
        untested = effects.by_delta(untested)[: settings.unnamed_top]
        notes = (
            f"non-linear classifier: {len(tested)} of {len(sc.tested)} named concepts "
            "shortlisted by a first-order screen and evaluated exactly by decode-and-rerun; "
            "the others count in the BH family with p = 1",
        )
    listed = tested + untested
    columns = Columns().with_latents(
        ctx.space, ctx.sae, _needed_columns(ctx, sc, listed), ctx.effect.projections,
        ctx.tick("activations", ctx.space.rows.count),
    )  # fmt: skip
    afters: dict[Key, np.ndarray] = {}
    if not ctx.effect.exact:
        pairs = {}
        for r in listed:
            pairs[r.latents], afters[r.latents] = exact_pairs(sc.setting, r, columns.of(r))
        effects = effects.with_pairs(pairs, ctx)
        tested = effects.by_delta(tested)
        untested = [r for r in effects.by_delta(untested) if effects.delta(r) > 0]
    return Chosen(tuple(tested), tuple(untested), effects, columns, afters, notes)
