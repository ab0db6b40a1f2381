"""Predictions files: the user's model as a CSV from any framework.

``PRED.csv`` has a column ``id`` (the store's metadata id of the row) and either

* ``score`` — a logit or a probability of the positive class per row; which one is decided
  for the whole column (probabilities when every score lies in [0, 1], see
  :mod:`audit.models.outputs`), or
* ``label`` — the model's decision, 0 or 1 (1 = the positive class of the audit's target).

With both columns the score decides and every label must agree with it. Other columns are
ignored. Each id appears once and must be a row of the store; store rows without a prediction
are allowed here (the audit asks for the rows it needs with :meth:`ModelDecisions.take`).
Ids are compared as text, after the same CSV parsing as the store's ``metadata.csv``; whole
numbers written as floats (``7.0``, as pandas writes an integer column with an empty cell)
are the integers they hold, on either side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.models.outputs import ModelDecisions, check_varied, interpret_scores


def load_predictions(path: str | os.PathLike[str], store_ids: Sequence[object]) -> ModelDecisions:
    """Read ``path`` and align it to the store rows whose ids are ``store_ids`` (in row order;
    text or numbers, as the store's metadata column holds them)."""
    from audit.store import id_text, read_labels_csv

    p = Path(path)
    frame = read_labels_csv(p)
    where = str(p)
    if "id" not in frame.columns:
        raise InputError(
            f"{where}: needs an 'id' column (the store's row ids); found {_cols(frame)}"
        )
    if "score" not in frame.columns and "label" not in frame.columns:
        raise InputError(f"{where}: needs a 'score' or a 'label' column; found {_cols(frame)}")
    if frame.empty:
        raise InputError(f"{where}: no predictions")
    ids = _ids(frame, where)
    rows = _store_rows(ids, id_text(pd.Series(list(store_ids))), where)
    if "score" in frame.columns:
        scores = _numbers(frame["score"], ids, where, "score")
        decisions, margins, kind = interpret_scores(scores, where)
        if "label" in frame.columns:
            _labels_agree(_labels(frame["label"], ids, where), decisions, ids, where)
    else:
        decisions, margins, kind = _labels(frame["label"], ids, where), None, "label"
    check_varied(decisions, where)
    order = np.argsort(rows, kind="stable")
    return ModelDecisions(
        rows[order], decisions[order], None if margins is None else margins[order], kind
    )


def _cols(frame: pd.DataFrame) -> str:
    return ", ".join(map(str, frame.columns[:10])) or "no columns"


def _line(position: int) -> int:
    return position + 2  # the header is line 1


def _ids(frame: pd.DataFrame, where: str) -> np.ndarray:
    from audit.store import id_text

    raw = frame["id"]
    if raw.isna().any():
        raise InputError(f"{where}: line {_line(int(raw.isna().to_numpy().argmax()))} has no id")
    ids = id_text(raw)
    duplicated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = ids[int(duplicated.argmax())]
        lines = [_line(i) for i in np.nonzero(ids == first)[0][:3]]
        raise InputError(
            f"{where}: id {first!r} appears more than once (lines {', '.join(map(str, lines))}); "
            f"{int(pd.Series(ids).duplicated().sum())} duplicate ids in all"
        )
    return ids


def _store_rows(ids: np.ndarray, store_ids: np.ndarray, where: str) -> np.ndarray:
    store = pd.Index(store_ids)
    if not store.is_unique:
        first = store[store.duplicated()][0]
        raise InputError(
            f"the store's ids are not unique (id {first!r} repeats): predictions cannot be matched"
        )
    rows = store.get_indexer(ids)
    unknown = rows < 0
    if unknown.any():
        raise InputError(
            f"{where}: {int(unknown.sum())} ids are not rows of the store "
            f"(first: {ids[int(unknown.argmax())]!r} on line {_line(int(unknown.argmax()))})"
        )
    return rows.astype(np.int64)


def _numbers(column: pd.Series, ids: np.ndarray, where: str, name: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(bad.argmax())
        raise InputError(
            f"{where}: {int(bad.sum())} {name}s are not finite numbers (first: "
            f"{_shown(column.iloc[i])} for id {ids[i]!r}); a {name} is a logit or a probability"
        )
    return values


def _shown(value: object) -> str:
    """A CSV cell as the user wrote it: ``nan``, ``2``, ``'high'`` (not NumPy's reprs,
    ``np.float64(nan)``, ``np.int64(2)``).

    >>> _shown(np.float64("nan")), _shown(np.int64(2)), _shown("high")
    ('nan', '2', "'high'")
    """
    return repr(value.item() if isinstance(value, np.generic) else value)


def _labels(column: pd.Series, ids: np.ndarray, where: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        i = int(bad.argmax())
        raise InputError(
            f"{where}: labels must be 0 or 1; {int(bad.sum())} are not (first: "
            f"{_shown(column.iloc[i])} for id {ids[i]!r})"
        )
    return values.astype(np.int8)


def _labels_agree(labels: np.ndarray, decisions: np.ndarray, ids: np.ndarray, where: str) -> None:
    differ = labels != decisions
    if differ.any():
        i = int(differ.argmax())
        raise InputError(
            f"{where}: 'label' disagrees with 'score' on {int(differ.sum())} rows (first: id "
            f"{ids[i]!r}); keep one column"
        )
