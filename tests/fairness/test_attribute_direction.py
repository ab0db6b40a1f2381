"""The attribute's own direction removed from the embeddings (no SAE): the within-class basis,
equality with a plain re-implementation, planted worlds, and the result and reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.fairness import AuditSettings, parse_result, run_audit
from audit.fairness.attributes import build_cells
from audit.fairness.classifiers import LinearHead
from audit.fairness.edits import AuditedRows, Workspace
from audit.fairness.reliance.direction import (
    attribute_basis,
    halves,
    remove_attribute_direction,
)
from audit.fairness.serialize import dumps
from audit.fairness.stats import pair_counts
from tests.fairness.planted import planted_bias_world
from tests.fairness.test_planted import memory_store


def _cell_stats(x: np.ndarray, cell: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.stack([x[cell == c].sum(0) for c in range(n_cells)])
    return sums, np.bincount(cell, minlength=n_cells).astype(float)


def test_the_basis_is_the_within_class_shift_not_the_target_s_direction():
    """The attribute is correlated with the class (80 % of class 1 has it, 20 % of class 0), so
    the pooled mean difference leans towards the class's direction e0; the within-class shifts
    are exactly along e1."""
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    a = (rng.random(n) < np.where(y == 1, 0.8, 0.2)).astype(int)
    x = rng.normal(0, 0.3, (n, 3))
    x[:, 0] += 3.0 * y
    x[:, 1] += 1.0 * a
    cell = 2 * y + a
    u = attribute_basis(*_cell_stats(x, cell, 4), n_values=2)
    assert u.shape == (3, 1)
    assert abs(u[1, 0]) > 0.999  # e1
    pooled = x[a == 1].mean(0) - x[a == 0].mean(0)
    assert abs(pooled[0]) / np.linalg.norm(pooled) > 0.7  # what a pooled difference would take


def test_a_three_valued_attribute_spans_two_directions_whatever_value_comes_first():
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.integers(0, 2, n)
    a = rng.integers(0, 3, n)
    x = rng.normal(0, 0.2, (n, 5))
    x[:, 0] += 2.0 * y
    x[:, 1] += np.array([0.0, 1.0, 0.0])[a]
    x[:, 2] += np.array([0.0, 0.0, 1.5])[a]
    projections = []
    for order in ([0, 1, 2], [2, 0, 1]):
        recoded = np.argsort(order)[a]  # value order[i] becomes i
        u = attribute_basis(*_cell_stats(x, 3 * y + recoded, 6), n_values=3)
        assert u.shape == (5, 2)
        projections.append(u @ u.T)
    np.testing.assert_allclose(projections[0], projections[1], atol=1e-10)
    np.testing.assert_allclose(projections[0][[1, 2], [1, 2]], 1.0, atol=0.02)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=300), st.integers(0, 2**32 - 1))
def test_the_halves_split_every_cell_in_half(cells, seed):
    cell = np.array(cells, dtype=np.int64)
    half = halves(cell, seed)
    assert set(np.unique(half)) <= {0, 1}
    for c in np.unique(cell):
        size, on_one = int((cell == c).sum()), int(half[cell == c].sum())
        assert on_one in (size // 2, (size + 1) // 2)
    np.testing.assert_array_equal(half, halves(cell, seed))  # seeded


def test_the_halves_are_random_within_a_cell():
    cell = np.zeros(200, dtype=np.int64)
    splits = {tuple(np.nonzero(halves(cell, seed))[0][:5]) for seed in range(5)}
    assert len(splits) == 5  # not the first rows of the cell every time
    # Each row lands on either side about equally often over seeds.
    share = np.mean([halves(cell, seed) for seed in range(400)], axis=0)
    assert share.min() > 0.35 and share.max() < 0.65


def test_no_basis_without_two_values_in_one_class():
    sums, counts = np.ones((4, 3)), np.array([5.0, 0.0, 0.0, 7.0])  # (0, v0) and (1, v1) only
    assert attribute_basis(sums, counts, n_values=2).shape == (3, 0)


def _space(x: np.ndarray, chunk: int = 333) -> Workspace:
    rows = AuditedRows(lambda lo, hi: x[lo:hi], lambda pos: x[np.asarray(pos)], len(x))
    return Workspace(rows, torch.device("cpu"), chunk=chunk, dtype=torch.float64)


def _naive(x, head, y, a, n_values, seed):
    """Literally: per half, the per-class mean differences, QR, edit the other half, rerun."""
    cell = y * n_values + a
    half = halves(cell, seed)
    after = np.empty(len(x))
    for h in (0, 1):
        other = half != h
        diffs = []
        for v in range(1, n_values):
            per_class = [
                x[other & (y == t) & (a == v)].mean(0) - x[other & (y == t) & (a == 0)].mean(0)
                for t in (0, 1)
            ]
            diffs.append(np.mean(per_class, 0))
        u = np.linalg.qr(np.stack(diffs, 1))[0]
        m = x[other].mean(0)
        mine = half == h
        edited = x[mine] - ((x[mine] - m) @ u) @ u.T
        after[mine] = head.margin(torch.from_numpy(edited)).numpy()
    before = head.margin(torch.from_numpy(x)).numpy()
    return pair_counts((before > 0) == (y == 1), (after > 0) == (y == 1), cell, 2 * n_values)


@pytest.mark.parametrize("n_values", [2, 3])
def test_equals_the_plain_recipe(n_values):
    rng = np.random.default_rng(2)
    n = 1500
    y = rng.integers(0, 2, n)
    a = rng.integers(0, n_values, n)
    x = (
        rng.normal(0, 1.0, (n, 6))
        + 0.8 * y[:, None] * np.eye(6)[0]
        + 0.9 * a[:, None] * np.eye(6)[1]
    )
    head = LinearHead(torch.tensor([1.0, 0.7, 0.2, 0.0, -0.1, 0.3], dtype=torch.float64), -0.6)
    labels = pd.DataFrame({"t": y, "a": a})
    cells = build_cells(labels, "t", "a")
    base = head.margin(torch.from_numpy(x)).numpy()
    edit = remove_attribute_direction(_space(x), head, cells, base, seed=5)
    assert edit is not None and edit.directions == n_values - 1
    assert edit.pairs[:, 1:3].sum() > 20  # decisions do change
    np.testing.assert_array_equal(edit.pairs, _naive(x, head, y, a, n_values, 5))


def _planted_audit(bias: bool):
    world = planted_bias_world(n_samples=3000, seed=4, bias=bias)
    settings = AuditSettings("Male", "Blond_Hair", ablation="mean")
    result, _ = run_audit(memory_store(world.embeddings), world.labels, world.sae, world.bank, world.head,
                          settings)  # fmt: skip
    return result


def test_a_classifier_that_reads_the_attribute_gains_a_classifier_that_does_not_does_not():
    biased, fair = _planted_audit(True), _planted_audit(False)
    d = biased.attribute_direction
    assert d is not None and d.directions == 1
    assert d.delta_wga > 0.1 and d.ci[0] > 0.05, d
    assert d.delta_wga >= biased.concepts[0].delta_wga - 0.05  # the concept carries about all of it
    f = fair.attribute_direction
    assert f is not None and abs(f.delta_wga) < 0.02 and f.ci[0] <= 0 <= f.ci[1] + 1e-9, f


def test_the_result_round_trips_and_every_report_says_it():
    from rich.console import Console

    from audit.report.html import render_html
    from audit.report.markdown import md_escape, render_markdown
    from audit.report.terminal import render_terminal
    from audit.report.wording import direction_note

    result = _planted_audit(True)
    again = parse_result(json.loads(dumps(result)))
    assert again.attribute_direction == parse_result(json.loads(dumps(again))).attribute_direction
    assert again.attribute_direction.delta_wga == pytest.approx(
        result.attribute_direction.delta_wga, abs=1e-6
    )
    note = direction_note(again)
    assert note.startswith("Without the SAE: removing the Blond_Hair direction")
    console = Console(record=True, width=300)
    render_terminal(again, console)
    assert note in console.export_text()
    assert md_escape(note) in render_markdown(again)
    assert note in render_html(again)


def test_the_note_says_when_no_flagged_concept_carries_it():
    from dataclasses import replace

    from audit.report.wording import direction_note

    result = _planted_audit(True)
    assert "No flagged concept carries it" not in direction_note(result)  # the concept is flagged
    unflagged = replace(result, flagged_concepts=0)
    assert "No flagged concept carries it" in direction_note(unflagged)
    small = replace(
        unflagged, attribute_direction=replace(result.attribute_direction, ci=(0.0, 0.2))
    )
    assert "No flagged concept carries it" not in direction_note(small)  # not clearly there
