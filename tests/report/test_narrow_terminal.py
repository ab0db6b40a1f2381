"""The concept-sliced errors table in an 80-column terminal (most CI logs): every flag stays
readable, however the columns wrap. (Discover's group tables: tests/discover/test_own_model.py.)"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from rich.console import Console

from audit.fairness.slices import sliced_errors
from audit.report.classifier_sections import errors_table
from tests.fairness.test_slices import activity_of

WIDTH = 80


def _render(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=WIDTH, color_system=None).print(renderable)
    return out.getvalue()


def test_the_sliced_errors_table_keeps_its_flag_column(rng):
    n = 400
    y = rng.integers(0, 2, n)
    active = rng.random((n, 3)) < 0.5
    decisions = np.where(active[:, 0], 1, y)  # concept 0 pushes decisions to "positive"
    errors = sliced_errors(["red", "masculine face", "green"], activity_of(active), y, decisions)
    assert errors.concepts[0].flagged
    result = SimpleNamespace(concept_errors=errors, data=SimpleNamespace(target="is_circle"))
    text = _render(errors_table(result))  # type: ignore[arg-type]
    assert all(len(line) <= WIDTH for line in text.splitlines())
    header = next(line for line in text.splitlines() if line.startswith("┃") and "concept" in line)
    assert "flag" in header
    firsts = [line for line in text.splitlines() if line.startswith("│") and line[1:4].strip()]
    flags = [line.rstrip().split("│")[-2].strip() for line in firsts]  # each concept's
    assert flags == ["yes" if c.flagged else "no" for c in errors.concepts]


def test_each_class_column_says_which_class_it_is(rng):
    """Both per-class columns name their class in full: a header cut to "is_circle=…" left the
    reader guessing which class the second column was."""
    n = 400
    y = rng.integers(0, 2, n)
    active = rng.random((n, 3)) < 0.5
    errors = sliced_errors(["red", "masculine face", "green"], activity_of(active), y, y)
    for target in ("is_circle", "Wearing_Necktie_and_Hat"):
        result = SimpleNamespace(concept_errors=errors, data=SimpleNamespace(target=target))
        text = _render(errors_table(result))  # type: ignore[arg-type]
        assert "…" not in text, text
        assert all(len(line) <= WIDTH for line in text.splitlines())
        header = "".join(  # the header's cells, read column by column across its lines
            "".join(line.split("┃")[5 + k].strip() for line in text.splitlines() if "┃" in line)
            for k in range(2)
        )
        assert f"{target}=0" in header and f"{target}=1" in header, text
