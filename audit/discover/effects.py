"""Per concept: its groups (target × active), the pair counts of removing it, ΔWGA with its
bootstrap interval, and — where a flag is possible — the relocation null.

Everything after the pass is the audit's machinery applied with each concept's own cells:
:func:`~audit.fairness.reliance.pair_summary`, :func:`~audit.fairness.reliance.bootstrap_ci`,
:func:`~audit.fairness.reliance.exact_pairs` (decode-and-rerun) and
:func:`~audit.fairness.reliance.relocation_null`.

**Where the null is drawn.** A concept is flagged only when ΔWGA ≥ ``min_dwga``, its interval
lies above 0, it is not allowlisted and its q-value is small. The null is drawn for the
concepts that pass the first three (at most ``null_rows``, largest ΔWGA first); every other
concept gets ``p = 1``. ``p = 1`` is never smaller than the p-value the null would give, so each
reported p is still a valid p-value (``P(p ≤ α) ≤ α`` under the null), and Benjamini–Hochberg
over all validated concepts stays conservative: a q-value can only be larger than with every
null drawn, never smaller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.concepts import ConceptGroup
from audit.concepts.activity import ConceptActivity
from audit.concepts.auc import column_aucs
from audit.discover.scan import ConceptScan, Family
from audit.fairness.attributes import CONCEPT_VALUES
from audit.fairness.checks import is_allowlisted, meets_flag_rule
from audit.fairness.groups import Cells
from audit.fairness.reliance import (
    NULL_STREAM,
    Beyond,
    Columns,
    ConceptRow,
    EditSetting,
    PairSummary,
    beyond_tests,
    exact_pairs,
    pair_summary,
    relocation_null,
    row_interval,
    row_rng,
)
from audit.fairness.stages.context import AuditContext
from audit.fairness.stats import bh_qvalues, null_draws_for_family

#: Rows per block when counting pairs (bounds the temporary index arrays).
COUNT_BLOCK = 16384


def concept_row(group: ConceptGroup) -> ConceptRow:
    return ConceptRow(group.latents, group.name, group.label, True, group.closest, group.score)


def concept_cells(ctx: AuditContext, name: str, active: np.ndarray) -> Cells:
    """The audited rows' cells target × (concept active)."""
    base = ctx.cells
    return Cells(
        base.y, active.astype(np.int16), base.target_name, name, base.target_values,
        CONCEPT_VALUES, 1,
    )  # fmt: skip


def count_pairs(y: np.ndarray, before_ok: np.ndarray, active: np.ndarray, after_ok: np.ndarray):
    """``[R, 4, 4]``: per concept, per cell (``2·y + active``), the pairs (✓✓, ✓✗, ✗✓, ✗✗)."""
    n, size = active.shape
    out = np.zeros(16 * size, dtype=np.int64)
    offset = 16 * np.arange(size, dtype=np.int32)[None, :]
    for lo in range(0, n, COUNT_BLOCK):
        hi = min(n, lo + COUNT_BLOCK)
        cell = 2 * y[lo:hi, None].astype(np.int32) + active[lo:hi]
        kind = 2 * (~before_ok[lo:hi, None]) + (~after_ok[lo:hi])
        out += np.bincount((4 * cell + kind + offset).ravel(), minlength=16 * size)
    return out.reshape(size, 4, 4)


@dataclass
class ConceptEffect:
    """One concept's numbers (filled in as the stages go)."""

    group: ConceptGroup
    threshold: float
    cells: Cells
    pairs: np.ndarray  # [4, 4]
    summary: PairSummary
    tested: bool
    exact: bool
    target_auc: float = 0.5
    # The user's own model only: per cell, (model ✓/✗) × (surrogate ✓/✗) before the edit. The
    # groups' accuracies are the model's (SPEC §9); ``pairs`` stay the surrogate's, whose edit
    # ΔWGA measures.
    own: np.ndarray | None = None  # [4, 4]
    # …and per cell, the rows where the held-out surrogate decides like the model (the
    # surrogate record's agreement, per concept group).
    agree: np.ndarray | None = None  # [4]
    ci: tuple[float, float] = (0.0, 0.0)
    p: float = 1.0
    q: float = 1.0
    null_draws: int = 0
    null_band: tuple[float, float] | None = None
    beyond: Beyond | None = None  # its effect beyond the stronger concepts that are flagged

    @property
    def row(self) -> ConceptRow:
        return concept_row(self.group)

    def setting(self, ctx: AuditContext, scan: ConceptScan) -> EditSetting:
        return EditSetting(ctx.space, self.cells, ctx.effect, scan.base, scan.values)


def target_auc(y: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """``[R]``: how well each concept's summed activation separates the target classes, as
    ``max(AUC, 1 − AUC)`` (Mann–Whitney, ties averaged)."""
    pos = y == 1
    if pos.all() or not pos.any():
        return np.full(sums.shape[1], 0.5)
    auc = column_aucs(sums, pos)
    return np.maximum(auc, 1.0 - auc)


def concept_effects(
    ctx: AuditContext, family: Family, scan: ConceptScan, activity: ConceptActivity,
    min_rows: int,
) -> list[ConceptEffect]:  # fmt: skip
    """Groups, pair counts and ΔWGA of every concept (screened ones are marked inexact)."""
    y = ctx.cells.y
    aucs = target_auc(y, scan.sums)
    # Right before the edit, for the classifier the edits run on (an own model's surrogate).
    before_ok = (scan.base.margin > 0) == (y == 1)
    active, thresholds = activity.active, activity.thresholds
    pairs = count_pairs(y, before_ok, active, scan.after_ok)
    model_ok = (ctx.decisions(scan.base.margin) == 1) == (y == 1)  # an own model's decisions
    own = own_model_pairs(ctx, model_ok, before_ok, active)
    agree = held_out_agreement(ctx, model_ok, active)
    out = []
    for r, group in enumerate(family.groups):
        cells = concept_cells(ctx, str(group.name), active[:, r])
        tested = bool(pairs[r].sum(1).min() >= min_rows)
        out.append(
            ConceptEffect(group, float(thresholds[r]), cells, pairs[r],
                          pair_summary(pairs[r], cells), tested, scan.exact, float(aucs[r]),
                          own=None if own is None else own[r],
                          agree=None if agree is None else agree[r])
        )  # fmt: skip
    return out


def own_model_pairs(
    ctx: AuditContext, model_ok: np.ndarray, surrogate_ok: np.ndarray, active: np.ndarray
) -> np.ndarray | None:
    """The user's own model: ``[R, 4, 4]`` per concept and cell, (model right or wrong) ×
    (surrogate right or wrong) on the unedited rows; None for a classifier on embeddings,
    whose decisions are the ones the edits run on."""
    if not ctx.own_model:
        return None
    return count_pairs(ctx.cells.y, model_ok, active, surrogate_ok[:, None])


def held_out_agreement(
    ctx: AuditContext, model_ok: np.ndarray, active: np.ndarray
) -> np.ndarray | None:
    """The user's own model: ``[R, 4]`` per concept and cell, the rows where the surrogate's
    held-out decision (train-split head, or each row's cross-fitted head: what
    ``surrogate.agreement`` measures) equals the model's; None without a surrogate."""
    if ctx.stand_in is None:
        return None
    y = ctx.cells.y
    held_out_ok = (ctx.stand_in.surrogate.decisions == 1) == (y == 1)
    pairs = count_pairs(y, model_ok, active, held_out_ok[:, None])
    return pairs[:, :, 0] + pairs[:, :, 3]  # both right or both wrong: the same decision


def evaluate_exactly(ctx: AuditContext, scan: ConceptScan, effects: list[ConceptEffect]) -> None:
    """Non-linear classifiers: decode-and-rerun for the ``shortlist`` tested concepts with the
    largest screened ΔWGA (the others keep p = 1)."""
    if scan.exact:
        return
    tested = sorted((e for e in effects if e.tested), key=lambda e: -e.summary.delta_wga)
    chosen = tested[: ctx.settings.shortlist]
    columns = _columns(ctx, chosen)
    for e in chosen:
        e.pairs, _ = exact_pairs(e.setting(ctx, scan), e.row, columns.of(e.row))
        e.summary = pair_summary(e.pairs, e.cells)
        e.exact = True


def add_intervals(ctx: AuditContext, effects: list[ConceptEffect]) -> None:
    seed = ctx.gate.bootstrap_seed_for(ctx.settings.seed)
    for e in effects:
        e.ci = row_interval(e.pairs, ctx.gate.bootstrap_samples, seed, e.row)


def can_be_flagged(ctx: AuditContext, e: ConceptEffect, max_target_auc: float) -> bool:
    """Every flag condition but the q-value."""
    return (
        e.tested
        and e.exact
        and e.target_auc < max_target_auc
        and meets_flag_rule(e.summary.delta_wga, e.ci[0], 0.0, ctx.gate)
        and not is_allowlisted(e.group.name, ctx.gate.allowlist)
    )


def add_null(
    ctx: AuditContext,
    scan: ConceptScan,
    effects: list[ConceptEffect],
    max_target_auc: float,
    tick=None,
) -> tuple[int, int]:
    """p-values where a flag is possible, q-values over every concept. Returns
    ``(concepts given a null, the most draws per concept)``."""
    settings = ctx.settings
    max_draws = null_draws_for_family(len(effects), ctx.gate.max_q, settings.null_min_draws)
    candidates = sorted(
        (e for e in effects if can_be_flagged(ctx, e, max_target_auc)),
        key=lambda e: -e.summary.delta_wga,
    )[: settings.null_rows]
    columns = _columns(ctx, candidates)
    for e in candidates:
        e.p, e.null_draws, e.null_band = relocation_null(
            e.setting(ctx, scan), e.row, columns.of(e.row), e.summary.delta_wga,
            e.summary.wga_after, max_draws, row_rng(settings.seed, NULL_STREAM, e.row),
            settings.null_atoms,
        )  # fmt: skip
        if tick:
            tick(1)
    _add_q(effects)
    # Concepts below a stronger one that would be flagged: also tested beyond it (the audit's
    # rule, audit.fairness.reliance.beyond); the p-value is the larger of the two.
    strong = [e for e in candidates if meets_flag_rule(e.summary.delta_wga, e.ci[0], e.q, ctx.gate)]
    beyond = beyond_tests(
        [(e.row, e.setting(ctx, scan), columns.of(e.row)) for e in strong],
        max_draws, settings.seed, settings.null_atoms,
    )  # fmt: skip
    if beyond:
        for e in strong:
            e.beyond = beyond.get(e.row.latents)
            e.p = max(e.p, e.beyond.p) if e.beyond else e.p
        _add_q(effects)
    return len(candidates), max_draws


def _add_q(effects: list[ConceptEffect]) -> None:
    for e, q in zip(effects, bh_qvalues([e.p for e in effects]), strict=True):
        e.q = float(q)


def _columns(ctx: AuditContext, effects: list[ConceptEffect]) -> Columns:
    latents = {j for e in effects for j in e.group.latents}
    return Columns().with_latents(ctx.space, ctx.sae, latents, ctx.effect.projections)
