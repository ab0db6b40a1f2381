"""The user's own model (an image model or a predictions file): its decisions on the rows the
audit needs, and the surrogate that stands in for it on the embeddings.

Rows: the audited rows, and — when the labels have a train split (and the audit is not of the
train split itself) — up to ``surrogate_rows`` train rows, a seeded sample, for the surrogate
to be fit on and judged on the audited rows it never saw. A predictions file needs a decision
for every audited row; the surrogate is fit on the train rows it covers (cross-fitted on the
audited rows when it covers too few: fewer than two of either decision). The model's decisions
on the audited rows must not be constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from audit.fairness.classifiers.own import DecisionRequest, OwnModel
from audit.fairness.config import AuditSettings, GateConfig
from audit.fairness.groups import Cells
from audit.fairness.records import SurrogateRecord
from audit.fairness.selection import RowSelection, split_column
from audit.fairness.surrogate import Surrogate, fit_surrogate
from audit.models import ModelDecisions, check_varied
from audit.store import EmbeddingStore, id_text

#: Random stream of the surrogate's train-row sample.
SAMPLE_STREAM = 11


@dataclass(frozen=True)
class StandIn:
    """The own model bound to its surrogate, and what the audit reads from it."""

    classifier: OwnModel  # margin and edits: the surrogate's head
    decisions: np.ndarray  # [n_audited] int8: the model's own decisions
    surrogate: Surrogate
    record: SurrogateRecord
    info: dict[str, Any]  # the classifier's provenance (file, format, how scores were read)


def surrogate_train_rows(
    labels: pd.DataFrame, audited: np.ndarray, settings: AuditSettings
) -> np.ndarray | None:
    """The train-split rows the model is asked about for the surrogate (None: no train split,
    or the train split is what is audited)."""
    column = split_column(labels)
    if column is None:
        return None
    train = np.setdiff1d(np.nonzero(column == "train")[0], audited)
    if train.size == 0 or settings.surrogate_rows == 0:
        return None
    if train.size > settings.surrogate_rows:
        rng = np.random.default_rng(np.random.SeedSequence([settings.seed, SAMPLE_STREAM]))
        train = np.sort(rng.choice(train, settings.surrogate_rows, replace=False))
    return train


def _fit_rows(decided: ModelDecisions, train: np.ndarray | None) -> np.ndarray | None:
    """The train rows the model decided, if they hold at least two of each decision."""
    if train is None:
        return None
    covered = train[np.isin(train, decided.rows)]
    if covered.size == 0:
        return None
    counts = np.bincount(decided.take(covered), minlength=2)
    return covered if counts.min() >= 2 else None


def stand_in(
    own: OwnModel,
    store: EmbeddingStore,
    labels: pd.DataFrame,
    cells_all: Cells,
    selection: RowSelection,
    settings: AuditSettings,
    gate: GateConfig,
    progress: Callable[[str, int, int], None] | None = None,
) -> StandIn:
    """Ask the model for its decisions, check them, fit the surrogate and bind it."""
    from audit.device import resolve_device

    audited = selection.audit
    train = surrogate_train_rows(labels, audited, settings)
    request = DecisionRequest(
        labels=labels,
        store_path=str(store.path),
        rows=audited if train is None else np.union1d(audited, train),
        image_size=settings.image_size,
        batch_size=settings.image_batch_size,
        workers=settings.workers,
        device=str(resolve_device(settings.device)),
        progress=(lambda done, total: progress("score images", done, total)) if progress else None,
    )
    decided = own.decide(request)
    ids = id_text(labels["id"]).tolist() if "id" in labels.columns else None
    decisions = decided.take(audited, ids)
    check_varied(decisions, str(own.describe().get("path")), cells_all.target_values)
    fit = _fit_rows(decided, train)
    surrogate = fit_surrogate(
        store.take(audited), decisions, cells_all.subset(audited),
        None if fit is None else store.take(fit), None if fit is None else decided.take(fit),
        c=settings.probe_c, seed=settings.seed,
    )  # fmt: skip
    info = {
        **own.describe(),
        **own.details(request),
        "scores": decided.score_kind,
        "rows_decided": len(decided),
    }
    record = surrogate.record(gate.min_surrogate_agreement, gate.min_surrogate_group_agreement)
    return StandIn(own.with_head(surrogate.head), decisions, surrogate, record, info)
