"""``msae-audit discover`` as a library call: loaded inputs in, the typed result out.

For every validated concept of the bank, the groups its activity defines (target class × concept
active or not), how the classifier does on them, and how much removing the concept (the
audit's edit) repairs the worst of them — with the audit's bootstrap interval, relocation null
and Benjamini–Hochberg over the whole bank. No attribute column is read: the groups come from
the concepts.

From files to report files in one call: :func:`audit.report.discover_files`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptBank
from audit.concepts.activity import ACTIVE_RULE, ConceptActivity, otsu_thresholds, validated_groups
from audit.discover.config import DiscoverSettings, EveryRow
from audit.discover.effects import (
    ConceptEffect,
    add_intervals,
    add_null,
    concept_effects,
    evaluate_exactly,
)
from audit.discover.export import export_head
from audit.discover.findings import examples, finding, ranked
from audit.discover.judge import judged
from audit.discover.result import (
    ConceptExamples,
    DiscoverData,
    DiscoveredConcept,
    DiscoverFamily,
    DiscoverResult,
    DiscoverSettingsRecord,
)
from audit.discover.scan import ConceptScan, Family, family_means, scan_concepts
from audit.discover.serialize import SCHEMA, SCHEMA_VERSION
from audit.errors import InputError
from audit.fairness.classifiers import Classifier
from audit.fairness.config import GateConfig
from audit.fairness.run import StageClock
from audit.fairness.serialize import canonical
from audit.fairness.stages.assemble import classifier_record, tool_versions
from audit.fairness.stages.context import AuditContext, Progress, prepare
from audit.fairness.stages.integrity import check_integrity, refusal
from audit.fairness.stages.names import name_check_stage
from audit.sae import SparseAutoencoder
from audit.store import EmbeddingStore

NULL = (
    "the concept's activation values relocated to random members of the same target class "
    "(its own values, direction and classifier); the groups stay where the concept really is; "
    "a concept below a stronger flagged one is also tested with that one's edits applied first"
)
NULL_RULE = (
    "drawn for the concepts that pass every other flag condition (ΔWGA ≥ min_dwga, interval "
    "above 0, tested, exact, not allowlisted; at most null_rows, largest ΔWGA first); the "
    "others get p = 1, never smaller than the null's p, so every p stays valid and BH "
    "conservative"
)


@dataclass(frozen=True)
class Measured:
    """What the stages measured, before it is judged."""

    concepts: tuple[DiscoveredConcept, ...]
    family: DiscoverFamily
    examples: tuple[ConceptExamples, ...]
    decisions: np.ndarray  # the classifier's own 0/1 decisions on the audited rows


def run_discover(
    store: EmbeddingStore,
    labels: pd.DataFrame,
    sae: SparseAutoencoder,
    bank: ConceptBank,
    classifier: Classifier | str,
    settings: DiscoverSettings,
    gate: GateConfig | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    gate_path: str | None = None,
    export_path: str | os.PathLike[str] | None = None,
    refit: bool = False,
) -> tuple[DiscoverResult, dict[str, float]]:
    """Discover shortcuts among the bank's validated concepts; returns the result and the
    seconds each stage took. ``gate_path`` is the gate file the re-check commands name;
    ``export_path`` asks for a head without the flagged concepts (:mod:`.export`)."""
    gate = gate or GateConfig()
    extra = _check_extra(extra)
    clock = StageClock()
    ctx = prepare(
        store, labels, sae, bank, classifier, settings.base, gate, progress, attribute=EveryRow()
    )
    clock.lap("inputs")
    ctx = _classes_named(ctx)
    integrity = check_integrity(ctx)
    clock.lap("integrity")
    inputs = {
        **(provenance or {}),
        "classifier": {**(provenance or {}).get("classifier", {}), **ctx.classifier_info},
    }
    if integrity.passed:
        measured = _measure(ctx, settings, inputs, gate_path, clock)
        error = None
    else:
        measured, error = None, refusal(integrity)
    result = _result(ctx, settings, integrity, measured, inputs, extra, gate_path, error)
    result = judged(result, ctx, measured, gate)
    if export_path is not None and measured is not None:
        result = export_head(ctx, store, result, Path(export_path), refit)
        clock.lap("export")
    return result, clock.timings


def activity_of(scan: ConceptScan, family: Family, threshold: float | None) -> ConceptActivity:
    """Each concept's activity on the audited rows: its threshold (Otsu's over these rows, or
    the one given) — the tool's one definition."""
    cut = (
        otsu_thresholds(scan.sums) if threshold is None else np.full(family.size, float(threshold))
    )
    return ConceptActivity(tuple(g.latents for g in family.groups), scan.sums, cut)


def _measure(
    ctx: AuditContext, settings: DiscoverSettings, inputs: dict, gate_path: str | None,
    clock: StageClock,
) -> Measured:  # fmt: skip
    family = Family.of(validated_groups(ctx.bank, ctx.sae.n_latents))
    rows = ctx.space.rows.count
    values = None
    if ctx.settings.ablation == "mean":
        values = family_means(ctx, family, ctx.tick("mean activations", rows))
    scan = scan_concepts(ctx, family, values, ctx.tick("remove every concept", rows))
    clock.lap("scan")
    activity = activity_of(scan, family, settings.threshold)
    effects = concept_effects(ctx, family, scan, activity, settings.min_rows)
    evaluate_exactly(ctx, scan, effects)
    clock.lap("exact")
    add_intervals(ctx, effects)
    clock.lap("bootstrap")
    with_null, max_draws = add_null(
        ctx, scan, effects, settings.max_target_auc, ctx.tick("null", len(effects))
    )
    clock.lap("null")
    names = name_check_stage(ctx, [(g.latents, g.image) for g in family.groups], activity)
    clock.lap("name checks")
    concepts = ranked(
        ctx,
        [finding(ctx, e, settings.max_target_auc, names.get(e.group.latents)) for e in effects],
        inputs,
        gate_path,
    )
    shown = _shown(concepts, ctx.settings.dose_top)
    by_name = {str(e.group.name): (r, e) for r, e in enumerate(effects)}
    decisions = ctx.decisions(scan.base.margin)
    slices = tuple(
        examples(ctx, by_name[c.name][1], scan.sums[:, by_name[c.name][0]], scan.base.margin,
                 decisions, ctx.settings.examples)
        for c in shown
    )  # fmt: skip
    clock.lap("examples")
    return Measured(concepts, _family(ctx, effects, with_null, max_draws), slices, decisions)


def _shown(concepts: tuple[DiscoveredConcept, ...], top: int) -> list[DiscoveredConcept]:
    """The concepts given example rows: the flagged ones, else the top tested ones."""
    flagged = [c for c in concepts if c.flagged][:top]
    return flagged or [c for c in concepts if c.tested][:top]


def _family(
    ctx: AuditContext, effects: list[ConceptEffect], with_null: int, max_draws: int
) -> DiscoverFamily:
    return DiscoverFamily(
        size=len(effects),
        tested=sum(1 for e in effects if e.tested),
        with_null=with_null,
        exact=sum(1 for e in effects if e.exact),
        null_draws_max=max_draws,
        min_attainable_p=1.0 / (max_draws + 1),
        null=NULL,
        null_rule=NULL_RULE,
        ablation=ctx.settings.ablation,
        bootstrap_samples=ctx.gate.bootstrap_samples,
        bootstrap_seed=ctx.gate.bootstrap_seed_for(ctx.settings.seed),
    )


def _classes_named(ctx: AuditContext) -> AuditContext:
    """The surrogate's groups are the target classes here (discover has no attribute): name
    them as discover's class groups are ("Male=1"), not by the placeholder attribute that makes
    them ("Male=1, rows=all"), in its record, the integrity check and every report."""
    if ctx.stand_in is None:
        return ctx
    record = ctx.stand_in.record
    suffix = f", {EveryRow.name}={EveryRow.VALUE}"

    def named(keys: Mapping[str, Any]) -> dict[str, Any]:
        return {k.removesuffix(suffix): v for k, v in keys.items()}

    record = replace(
        record, agreement_per_group=named(record.agreement_per_group),
        group_sizes=named(record.group_sizes), worst_group=record.worst_group.removesuffix(suffix),
    )  # fmt: skip
    return replace(ctx, stand_in=replace(ctx.stand_in, record=record))


def _result(
    ctx: AuditContext, settings: DiscoverSettings, integrity: Any, measured: Measured | None,
    inputs: dict, extra: dict, gate_path: str | None, error: str | None,
) -> DiscoverResult:  # fmt: skip
    s, gate = ctx.settings, ctx.gate
    own = getattr(ctx, "own_model", False)
    activity = (
        ACTIVE_RULE
        if settings.threshold is None
        else f"summed activation of the concept's latents above {settings.threshold:g}"
    )
    data = DiscoverData(
        rows_total=int(ctx.rows_total), rows_audited=int(ctx.selection.audit.size),
        split=ctx.selection.source, target=s.target, positive_class=ctx.cells.target_values[1],
        classifier_kind=ctx.effect.kind, attribution="surrogate" if own else "classifier",
        activity=activity, activity_rows=int(ctx.selection.audit.size),
    )  # fmt: skip
    record = DiscoverSettingsRecord(
        s.target, s.ablation, s.split, s.classifier_input, settings.threshold, settings.min_rows,
        settings.max_target_auc,
        gate.min_dwga, gate.max_q, gate.allowlist, gate.bootstrap_samples,
        gate.bootstrap_seed_for(s.seed), s.null_rows, s.null_min_draws, s.null_atoms, s.shortlist,
    )  # fmt: skip
    notes = _notes(ctx, own)
    return DiscoverResult(
        schema=SCHEMA, version=SCHEMA_VERSION, verdict="pass", exit_code=0,
        tool=tool_versions(), seed=s.seed, inputs=inputs, settings=record,
        gate=gate.describe(), data=data, notes=notes, integrity=integrity, classes=(),
        accuracy=0.0, worst_group=None, worst_group_accuracy=None,
        concepts_computed=measured is not None,
        concepts=measured.concepts if measured else (),
        family=measured.family if measured else None,
        examples=measured.examples if measured else (), flagged_concepts=0, checks=(),
        gate_file=gate_path, export=None, error=error, extra=extra,
        classifier=classifier_record(ctx),
        surrogate=ctx.stand_in.record if ctx.stand_in is not None else None,
    )  # fmt: skip


def _notes(ctx: AuditContext, own: bool) -> tuple[str, ...]:
    notes = list(ctx.bank.notes())
    if own:
        notes.append(
            "the classifier is your own model: group accuracies are its own decisions; every "
            "edit (ΔWGA, null, flags) runs on a surrogate fit to its decisions, so removing a "
            "concept is causal for the surrogate and only as good as their agreement for the "
            "model"
        )
    if not ctx.effect.exact:
        notes.append(
            f"non-linear classifier: every concept screened to first order, the "
            f"{ctx.settings.shortlist} with the largest screened ΔWGA evaluated exactly by "
            "decode-and-rerun; the others count in the BH family with p = 1"
        )
    return tuple(notes)


def _check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    from dataclasses import fields

    if not extra:
        return {}
    reserved = {f.name for f in fields(DiscoverResult)} - {"extra"}
    clash = sorted(set(extra) & reserved)
    if clash:
        raise InputError(f"extra fields may not replace discover fields: {', '.join(clash)}")
    canonical(dict(extra))  # raises for values JSON cannot hold
    return dict(extra)
