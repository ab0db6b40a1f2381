"""The audit's fixed inputs, checked and placed on the device: what every stage reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from audit.concepts import ConceptBank
from audit.errors import InputError
from audit.fairness.attributes import (
    Attribute,
    GroupingInputs,
    build_cells,
    cut_on_audited_rows,
)
from audit.fairness.classifiers import Classifier, fit_probe
from audit.fairness.classifiers.own import OwnModel
from audit.fairness.config import (
    ABLATIONS,
    EMBEDDING_INPUTS,
    AuditSettings,
    GateConfig,
    parse_class_names,
)
from audit.fairness.edits import AuditedRows, EditEffect, Workspace
from audit.fairness.groups import Cells
from audit.fairness.selection import RowSelection, select_rows
from audit.fairness.stages.standin import StandIn, stand_in
from audit.sae import SparseAutoencoder, sae_fingerprint
from audit.store import EmbeddingStore

#: ``progress(stage, done, total)``: how long-running stages report (e.g. to progress bars).
Progress = Callable[[str, int, int], None]
Tick = Callable[[int], None] | None


@dataclass(frozen=True)
class AuditContext:
    """Everything the stages share; nothing in it changes during the audit."""

    settings: AuditSettings
    gate: GateConfig
    labels: pd.DataFrame  # every row of the store
    rows_total: int
    selection: RowSelection
    cells: Cells  # of the audited rows
    space: Workspace
    sae: SparseAutoencoder
    bank: ConceptBank
    classifier: Classifier
    classifier_info: dict[str, Any]  # its provenance for the JSON
    effect: EditEffect
    progress: Progress | None = None
    stand_in: StandIn | None = None  # the user's own model: its decisions and surrogate

    @property
    def own_model(self) -> bool:
        """The classifier is the user's own model, examined through a surrogate."""
        return self.stand_in is not None

    def decisions(self, margins: np.ndarray) -> np.ndarray:
        """The classifier's own 0/1 decisions on the audited rows: an own model's, else the
        sign of its ``margins``."""
        if self.stand_in is not None:
            return self.stand_in.decisions
        return (margins > 0).astype(np.int8)

    def tick(self, stage: str, total: int) -> Tick:
        """A counter for one stage's progress (None without a progress callback)."""
        progress = self.progress
        if progress is None:
            return None
        progress(stage, 0, total)
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            progress(stage, done, total)

        return tick


def _check_inputs(
    store: EmbeddingStore, labels: pd.DataFrame, sae: SparseAutoencoder, bank: ConceptBank,
    settings: AuditSettings,
) -> None:  # fmt: skip
    if settings.ablation not in ABLATIONS:
        raise InputError(f"--ablation must be zero or mean, got {settings.ablation!r}")
    parse_class_names(settings.class_names)  # a malformed entry fails before any work
    if len(labels) != store.count:
        raise InputError(f"labels have {len(labels)} rows but the embeddings have {store.count}")
    if sae.d_in != store.dim:
        raise InputError(
            f"the SAE expects {sae.d_in}-dimensional embeddings, the store has {store.dim}"
        )
    bank.check_sae(sae_fingerprint(sae), n_latents=sae.n_latents)


def _check_class_names(settings: AuditSettings, cells: Cells) -> None:
    """A class name for a value no group has is a typo the reports would silently ignore."""
    known = cells.value_keys()
    unknown = [k for k in parse_class_names(settings.class_names) if k not in known]
    if unknown:
        raise InputError(
            f"--class-names names {', '.join(unknown)}, which no group has; the groups' values "
            f"are {', '.join(known)}"
        )


def _fit_probe(
    store: EmbeddingStore, cells: Cells, train: np.ndarray, settings: AuditSettings
) -> tuple[Classifier, dict[str, Any]]:
    head = fit_probe(
        store.take(train), cells.y[train], settings.classifier_input, settings.seed,
        settings.probe_c,
    )  # fmt: skip
    info = {
        "kind": "probe",
        "input": settings.classifier_input,
        "train_rows": int(train.size),
        "c": settings.probe_c,
        "weight_norm": float(head.weight.norm()),
    }
    return head, info


def _classifier(
    store: EmbeddingStore, labels: pd.DataFrame, cells_all: Cells, selection: RowSelection,
    classifier: Classifier | str, settings: AuditSettings, gate: GateConfig,
    progress: Progress | None,
) -> tuple[Classifier, dict[str, Any], StandIn | None]:  # fmt: skip
    """The classifier the edits run on, its provenance and (own models) the stand-in."""
    if isinstance(classifier, str):
        if settings.classifier_input not in EMBEDDING_INPUTS:
            raise InputError("--classifier probe reads embeddings: --classifier-input raw or l2")
        assert selection.train is not None
        head, info = _fit_probe(store, cells_all, selection.train, settings)
        return head, info, None
    if isinstance(classifier, OwnModel):
        found = stand_in(classifier, store, labels, cells_all, selection, settings, gate, progress)
        return found.classifier, found.info, found
    return classifier, classifier.describe(), None


def prepare(
    store: EmbeddingStore,
    labels: pd.DataFrame,
    sae: SparseAutoencoder,
    bank: ConceptBank,
    classifier: Classifier | str,
    settings: AuditSettings,
    gate: GateConfig,
    progress: Progress | None = None,
    attribute: Attribute | None = None,
) -> AuditContext:
    """Validate the inputs, choose the rows, fit the probe if asked, move everything to the
    device. ``attribute`` replaces ``settings.spurious`` (``msae-audit discover`` passes its
    own)."""
    from audit.device import resolve_device

    _check_inputs(store, labels, sae, bank, settings)
    device = resolve_device(settings.device)
    inputs = GroupingInputs(store, sae, bank, device, settings.chunk_rows)
    cells_all = build_cells(labels, settings.target, attribute or settings.spurious, inputs)
    _check_class_names(settings, cells_all)
    probe = isinstance(classifier, str)
    if probe and classifier != "probe":
        raise InputError(f"--classifier must be a file or 'probe', got {classifier!r}")
    selection = select_rows(labels, cells_all, settings.split, probe, settings.seed)
    if selection.audit.size == 0:
        raise InputError("no rows to audit")
    cells_all = cut_on_audited_rows(cells_all, selection.audit)
    classifier, info, own = _classifier(
        store, labels, cells_all, selection, classifier, settings, gate, progress
    )
    sae = sae.to(device).eval()
    classifier = classifier.to(device)
    space = Workspace(AuditedRows.of_store(store, selection.audit), device, settings.chunk_rows)
    effect = classifier.edit_effect(sae.decoder_directions().detach().to(space.dtype))
    return AuditContext(
        settings, gate, labels, store.count, selection, cells_all.subset(selection.audit),
        space, sae, bank, classifier, info, effect, progress, own,
    )  # fmt: skip
