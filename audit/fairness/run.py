"""Running an audit: loaded inputs in, the typed result out (:func:`run_audit`).

From files to report files in one call: :func:`audit.report.audit_files`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptBank
from audit.errors import InputError
from audit.fairness.classifiers import Classifier
from audit.fairness.config import AuditSettings, GateConfig
from audit.fairness.groups import group_report
from audit.fairness.result import AuditResult, GroupMetrics
from audit.fairness.serialize import canonical
from audit.fairness.stages.assemble import Attribution, assemble
from audit.fairness.stages.choose import choose_stage
from audit.fairness.stages.context import AuditContext, Progress, prepare
from audit.fairness.stages.findings import findings_stage
from audit.fairness.stages.focus import focus_stage
from audit.fairness.stages.integrity import base_margins, check_integrity, refusal
from audit.fairness.stages.null import null_stage
from audit.fairness.stages.scan import scan_stage
from audit.sae import SparseAutoencoder
from audit.store import EmbeddingStore

#: Top-level fields of the audit JSON that ``extra`` may not replace.
RESERVED_KEYS = frozenset(f.name for f in dataclasses.fields(AuditResult)) - {"extra"}


class _Clock:
    """Seconds per stage."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now


def _attribute(ctx: AuditContext, clock: _Clock) -> tuple[GroupMetrics, Attribution]:
    """Stages 2–5: the group metrics and every concept finding."""
    screened = scan_stage(ctx)
    clock.lap("scan")
    chosen = choose_stage(ctx, screened)
    clock.lap("activations")
    null = null_stage(ctx, screened, chosen)
    clock.lap("null")
    concepts, family = findings_stage(ctx, screened, chosen, null)
    clock.lap("bootstrap")
    doses, examples = focus_stage(ctx, screened, chosen, concepts)
    clock.lap("dose-response")
    return screened.metrics, Attribution(True, concepts, family, doses, examples, chosen.notes)


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
    clock = _Clock()
    ctx = prepare(store, labels, sae, bank, classifier, settings, gate, progress)
    clock.lap("inputs")
    integrity = check_integrity(ctx)
    clock.lap("integrity")
    if integrity.passed:
        metrics, attribution = _attribute(ctx, clock)
    else:
        metrics = group_report(ctx.cells, (base_margins(ctx) > 0).astype(np.int8))
        attribution = Attribution(False, error=refusal(integrity))
    result = assemble(ctx, integrity, metrics, attribution, provenance or {}, extra)
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
