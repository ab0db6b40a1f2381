"""Running an audit: loaded inputs in, the typed result out (:func:`run_audit`).

From files to report files in one call: :func:`audit.report.audit_files`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from audit.concepts import ConceptBank
from audit.errors import InputError
from audit.fairness.classifiers import Classifier
from audit.fairness.config import AuditSettings, GateConfig
from audit.fairness.groups import group_report
from audit.fairness.records import SlicedErrors
from audit.fairness.result import AuditResult, GroupMetrics, Integrity
from audit.fairness.serialize import canonical
from audit.fairness.stages.assemble import Attribution, assemble
from audit.fairness.stages.choose import choose_stage
from audit.fairness.stages.context import AuditContext, Progress, prepare
from audit.fairness.stages.direction import direction_stage
from audit.fairness.stages.errors import activity_stage, errors_stage
from audit.fairness.stages.findings import findings_stage
from audit.fairness.stages.focus import focus_stage
from audit.fairness.stages.integrity import base_margins, check_integrity, refusal
from audit.fairness.stages.names import name_check_stage
from audit.fairness.stages.null import null_stage
from audit.fairness.stages.scan import scan_stage
from audit.sae import SparseAutoencoder
from audit.store import EmbeddingStore

#: Top-level fields of the audit JSON that ``extra`` may not replace.
RESERVED_KEYS = frozenset(f.name for f in dataclasses.fields(AuditResult)) - {"extra"}


class StageClock:
    """Seconds per stage (the audit's and discover's ``timings``)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now


@dataclass(frozen=True)
class _Outcome:
    """Stages 2–6: what the result is assembled from."""

    metrics: GroupMetrics
    attribution: Attribution
    errors: SlicedErrors | None


def _attribute(ctx: AuditContext, clock: StageClock) -> _Outcome:
    """Stages 2–6: the group metrics, every concept finding and the sliced errors."""
    screened = scan_stage(ctx)
    clock.lap("scan")
    direction = direction_stage(ctx, screened)
    clock.lap("attribute direction")
    chosen = choose_stage(ctx, screened)
    clock.lap("activations")
    rows = {r.latents: r for r in [*screened.tested, *chosen.listed]}
    activity = activity_stage(ctx, list(rows.values()), screened.scan)
    clock.lap("concept activity")
    names = name_check_stage(
        ctx, [(r.latents, r.image) for r in rows.values() if r.tested], activity
    )
    clock.lap("name checks")
    null = null_stage(ctx, screened, chosen)
    clock.lap("null")
    concepts, family = findings_stage(ctx, screened, chosen, null, activity, names)
    clock.lap("bootstrap")
    doses, examples = focus_stage(ctx, screened, chosen, concepts)
    clock.lap("dose-response")
    errors = errors_stage(ctx, ctx.decisions(screened.scan.base.margin), activity, names)
    clock.lap("sliced errors")
    attribution = Attribution(
        True, concepts, family, doses, examples, chosen.notes, direction=direction
    )
    return _Outcome(screened.metrics, attribution, errors)


def _refused(ctx: AuditContext, integrity: Integrity, clock: StageClock) -> _Outcome:
    """No concept attributed: the group metrics, and the sliced errors whenever the SAE
    reconstructs this data (they are the model's own decisions and need no surrogate)."""
    decisions = ctx.decisions(base_margins(ctx))
    # The sliced errors need the SAE to reconstruct this data, not a classifier that agrees on x̂.
    errors = errors_stage(ctx, decisions) if integrity.cosine_passed else None
    clock.lap("sliced errors")
    refused = Attribution(False, error=refusal(integrity))
    return _Outcome(group_report(ctx.cells, decisions), refused, errors)


def run_audit(
    store: EmbeddingStore,
    labels: pd.DataFrame,
    sae: SparseAutoencoder,
    bank: ConceptBank,
    classifier: Classifier | str,
    settings: AuditSettings,
    gate: GateConfig | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[AuditResult, dict[str, float]]:
    """Run the audit; returns the result and the seconds each stage took. (The JSON rounds its
    numbers to 6 decimals; :func:`~audit.fairness.serialize.published` gives the result as
    written, which is what reports render.)

    ``classifier`` is a loaded classifier or ``"probe"``; ``provenance`` describes the inputs
    (paths, hashes); ``extra`` adds top-level JSON fields (e.g. ``{"demo": {...}}``).
    """
    gate = gate or GateConfig()
    extra = _check_extra(extra)
    clock = StageClock()
    ctx = prepare(store, labels, sae, bank, classifier, settings, gate, progress)
    clock.lap("inputs")
    integrity = check_integrity(ctx)
    clock.lap("integrity")
    outcome = _attribute(ctx, clock) if integrity.passed else _refused(ctx, integrity, clock)
    result = assemble(
        ctx, integrity, outcome.metrics, outcome.attribution, provenance or {}, extra,
        outcome.errors,
    )  # fmt: skip
    return result, clock.timings


def _check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if not extra:
        return {}
    if not isinstance(extra, Mapping):
        raise InputError("extra must be a mapping of additional top-level JSON fields")
    clash = sorted(set(extra) & RESERVED_KEYS)
    if clash:
        raise InputError(f"extra fields may not replace audit fields: {', '.join(clash)}")
    canonical(dict(extra))  # raises for values JSON cannot hold
    return dict(extra)
