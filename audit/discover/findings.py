"""From each concept's numbers to the reported rows: groups with Wilson intervals, flags, ranks,
the re-check command of each flagged concept, and example rows of the top concepts' groups."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from audit.concepts.namecheck import NameCheck
from audit.discover.effects import ConceptEffect
from audit.discover.recheck import concept_gate_path, recheck_command
from audit.discover.result import (
    ConceptExamples,
    ConceptGroupAccuracy,
    DiscoveredConcept,
    SliceExample,
)
from audit.fairness.checks import is_allowlisted, meets_flag_rule
from audit.fairness.groups import wilson_interval
from audit.fairness.records import name_refuted
from audit.fairness.reliance import beyond_record
from audit.fairness.stages.context import AuditContext
from audit.fairness.stages.names import name_evidence


def _groups(e: ConceptEffect) -> tuple[ConceptGroupAccuracy, ...]:
    """The concept's non-empty groups: accuracy from the classifier's own decisions (an own
    model's, not its surrogate's), accuracy after the edit from the classifier it runs on."""
    out = []
    for c, pairs in enumerate(e.pairs):
        n = int(pairs.sum())
        if n == 0:
            continue
        edited_right = int(pairs[0] + pairs[1])  # before the edit, on what the edit runs on
        correct = edited_right if e.own is None else int(e.own[c][0] + e.own[c][1])
        out.append(
            ConceptGroupAccuracy(
                name=e.cells.cell_name(c),
                target=e.cells.target_values[e.cells.cell_target(c)],
                active=bool(e.cells.cell_attribute(c) == 1),
                n=n,
                correct=correct,
                accuracy=correct / n,
                ci=wilson_interval(correct, n),
                accuracy_after=float(pairs[0] + pairs[2]) / n,
                surrogate_accuracy=None if e.own is None else edited_right / n,
                surrogate_agreement=None if e.agree is None else int(e.agree[c]) / n,
            )
        )
    return tuple(out)


def _surrogate_wga(groups: tuple[ConceptGroupAccuracy, ...]) -> float | None:
    """The surrogate's WGA before the edit (None without a surrogate)."""
    values = [g.surrogate_accuracy for g in groups if g.surrogate_accuracy is not None]
    return min(values) if values else None


def finding(
    ctx: AuditContext, e: ConceptEffect, max_target_auc: float, name_check: NameCheck | None = None
) -> DiscoveredConcept:
    """``name_check``: the concept's name checked on the audited rows (a refuted name is not
    flagged)."""
    groups = _groups(e)
    worst = min(groups, key=lambda g: (g.accuracy, g.name))
    allowed = is_allowlisted(e.group.name, ctx.gate.allowlist)
    is_target = e.target_auc >= max_target_auc
    evidence = name_evidence(e.group.image, name_check)
    flagged = (
        e.tested and e.exact and not is_target
        and meets_flag_rule(e.summary.delta_wga, e.ci[0], e.q, ctx.gate)
        and not name_refuted(evidence)
    )  # fmt: skip
    n = max(1, int(e.pairs.sum()))
    return DiscoveredConcept(
        rank=1, name=str(e.group.name), latents=e.group.latents, threshold=e.threshold,
        active_rate=int(e.pairs[1::2].sum()) / n, groups=groups, worst_group=worst.name,
        worst_group_accuracy=worst.accuracy, wga_after=e.summary.wga_after,
        delta_wga=e.summary.delta_wga, ci=e.ci,
        delta_accuracy_overall=e.summary.delta_accuracy_overall, flip_rate=e.summary.flip_rate,
        tested=e.tested, exact=e.exact, target_auc=e.target_auc, target_concept=is_target, p=e.p, q=e.q, null_draws=e.null_draws,
        null_band=e.null_band, allowlisted=allowed, flagged=bool(flagged and not allowed),
        beyond=beyond_record(e.beyond), recheck=None,
        surrogate_worst_group_accuracy=_surrogate_wga(groups), evidence=evidence,
    )  # fmt: skip


def rank_key(c: DiscoveredConcept) -> tuple:
    """Tested concepts that are not the target's own first; then the audit's order: largest
    ΔWGA, largest CI lower bound, smallest q, lowest latent."""
    return (
        not c.tested or c.target_concept,
        -round(c.delta_wga, 9),
        -round(c.ci[0], 9),
        c.q,
        c.latents[0],
    )


def ranked(
    ctx: AuditContext,
    concepts: list[DiscoveredConcept],
    inputs: dict,
    gate_path: str | None,
) -> tuple[DiscoveredConcept, ...]:
    """Ranks, and the re-check command of every flagged concept, each with its own gate file
    (:func:`~audit.discover.recheck.concept_gate_path`: it fails while that concept is
    flagged, whatever the others do)."""
    out = []
    for i, c in enumerate(sorted(concepts, key=rank_key), 1):
        own_gate = concept_gate_path(gate_path, i) if c.flagged and gate_path else None
        command = (
            recheck_command(inputs, ctx.settings, c.name, c.threshold, own_gate)
            if c.flagged
            else None
        )
        out.append(replace(c, rank=i, recheck=command, recheck_gate=own_gate))
    return tuple(out)


def examples(
    ctx: AuditContext, e: ConceptEffect, sums: np.ndarray, margins: np.ndarray,
    decisions: np.ndarray, k: int,
) -> ConceptExamples:  # fmt: skip
    """Up to ``k`` rows of each group: errors first (of the classifier's own ``decisions``),
    then the most (active groups) or least (inactive groups) active."""
    cells, y = e.cells, ctx.cells.y
    correct = (decisions == 1) == (y == 1)
    cell = cells.cell
    meta = ctx.labels
    by_group: dict[str, tuple[SliceExample, ...]] = {}
    for c in range(cells.n_cells):
        idx = np.nonzero(cell == c)[0]
        if idx.size == 0:
            continue
        sign = -1.0 if cells.cell_attribute(c) == 1 else 1.0
        order = idx[np.lexsort((idx, sign * sums[idx], correct[idx]))][:k]
        items = []
        for pos in order:
            row = int(ctx.selection.audit[pos])
            items.append(
                SliceExample(
                    row=row, group=cells.cell_name(c), activation=float(sums[pos]),
                    margin=float(margins[pos]), correct=bool(correct[pos]),
                    id=_text(meta, "id", row), path=_text(meta, "path", row),
                )
            )  # fmt: skip
        by_group[cells.cell_name(c)] = tuple(items)
    return ConceptExamples(str(e.group.name), by_group)


def _text(meta, column: str, row: int) -> str | None:  # type: ignore[no-untyped-def]
    if column not in meta.columns:
        return None
    value = meta[column].iloc[row]
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
