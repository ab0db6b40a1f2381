"""Concept-sliced errors: golden values by hand and a planted shortcut found (where concepts
are active is :mod:`audit.concepts.activity`'s job, tested in tests/concepts)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import fisher_exact

from audit.concepts.activity import ConceptActivity
from audit.fairness.slices import SliceSettings, sliced_errors
from audit.fairness.stats import bh_qvalues


def activity_of(active: np.ndarray) -> ConceptActivity:
    """Concepts active exactly where ``active [n, C]`` says (activation 1, threshold 0.5)."""
    active = np.asarray(active, dtype=bool).reshape(len(active), -1)
    latents = tuple((c,) for c in range(active.shape[1]))
    return ConceptActivity(latents, active.astype(np.float32), np.full(active.shape[1], 0.5))


def test_golden_accuracies_p_and_q():
    """Class 1: concept active on 30 rows (12 correct), inactive on 30 (27 correct); class 0:
    active on 25 (20 correct), inactive on 25 (20 correct)."""
    y = np.array([1] * 60 + [0] * 50)
    active = np.array([True] * 30 + [False] * 30 + [True] * 25 + [False] * 25)
    correct = np.array(
        [True] * 12 + [False] * 18 + [True] * 27 + [False] * 3 + ([True] * 20 + [False] * 5) * 2
    )
    decisions = np.where(correct, y, 1 - y)
    report = sliced_errors(
        ["stripes"], activity_of(active), y, decisions, ("square", "circle"),
        SliceSettings(bootstrap=4000),
    )  # fmt: skip
    (stripes,) = report.concepts
    one, zero = stripes.slices
    assert (one.n_active, one.n_inactive, one.target) == (30, 30, "circle")
    assert one.accuracy_active == pytest.approx(0.4) and one.accuracy_inactive == pytest.approx(0.9)
    assert one.difference == pytest.approx(-0.5)
    p1 = fisher_exact([[12, 18], [27, 3]]).pvalue
    p0 = fisher_exact([[20, 5], [20, 5]]).pvalue
    assert one.p == pytest.approx(p1) and zero.p == pytest.approx(p0) == pytest.approx(1.0)
    np.testing.assert_allclose([one.q, zero.q], bh_qvalues([p1, p0]))
    assert one.flagged and not zero.flagged and stripes.flagged
    lo, hi = one.ci
    assert lo < -0.5 < hi and hi < -0.25  # ±2 SE ≈ ±0.21 around −0.5
    assert zero.difference == 0.0 and zero.ci[0] < 0 < zero.ci[1]
    # Shift toward "circle" where stripes are present: (−0.5 − 0) / 2.
    assert stripes.shift == pytest.approx(-0.25)
    assert stripes.shift_ci[0] < -0.25 < stripes.shift_ci[1]
    assert stripes.rank == 1 and stripes.latents == (0,) and stripes.active_rate == 0.5
    assert report.tested == 2 and "association" in report.relation


def test_bootstrap_of_counts_matches_index_resampling():
    """The binomial draws equal resampling the rows of each slice with replacement."""
    rng = np.random.default_rng(1)
    on = rng.random(80) < 0.55
    off = rng.random(120) < 0.8
    y = np.ones(200, dtype=int)
    active = np.r_[np.ones(80, bool), np.zeros(120, bool)]
    decisions = np.where(np.r_[on, off], 1, 0)
    out = sliced_errors(
        ["c"], activity_of(active), y, decisions, settings=SliceSettings(bootstrap=20000)
    )
    ci = out.concepts[0].slices[0].ci
    draws = [
        on[rng.integers(0, 80, 80)].mean() - off[rng.integers(0, 120, 120)].mean()
        for _ in range(20000)
    ]
    np.testing.assert_allclose(ci, np.quantile(draws, [0.025, 0.975]), atol=0.01)


def test_a_planted_shortcut_ranks_above_the_concepts_that_merely_mark_errors():
    """A model that decides "positive" wherever the shortcut is present (and otherwise gets
    30 % wrong): the shortcut raises accuracy in class 1 and lowers it in class 0. A marker
    present only on half of the shortcut-free rows is associated with the errors too (its
    absence means the shortcut is more likely present) but shifts decisions less; a bystander
    marks nothing."""
    rng = np.random.default_rng(0)
    n = 6000
    y = rng.integers(0, 2, n)
    shortcut = rng.random(n) < 0.5
    marker = ~shortcut & (rng.random(n) < 0.5)
    bystander = rng.random(n) < 0.5
    noisy = np.where(rng.random(n) < 0.3, 1 - y, y)
    decisions = np.where(shortcut, 1, noisy)
    activity = activity_of(np.stack([bystander, marker, shortcut], 1))
    out = sliced_errors(["bystander", "marker", "shortcut"], activity, y, decisions).concepts
    assert [c.name for c in out] == ["shortcut", "marker", "bystander"]
    assert [c.rank for c in out] == [1, 2, 3]
    shortcut_errors, marker_errors, bystander_errors = out
    one, zero = shortcut_errors.slices
    assert one.flagged and zero.flagged and one.difference > 0.2 and zero.difference < -0.5
    # Exact values: shortcut (0.3 + 0.7) / 2 = 0.5; marker ((0.7 − 0.9) + (0.3 − 0.767)) / 2 = −1/3.
    assert shortcut_errors.shift == pytest.approx(0.5, abs=0.03)
    assert marker_errors.shift == pytest.approx(-1 / 3, abs=0.03)
    assert shortcut_errors.shift_ci[0] > max(abs(v) for v in marker_errors.shift_ci)
    assert not bystander_errors.flagged


def test_small_slices_are_listed_but_not_tested():
    y = np.array([1] * 40)
    active = np.array([True] * 5 + [False] * 35)
    report = sliced_errors(
        ["rare"], activity_of(active), y, y.copy(), settings=SliceSettings(min_rows=10)
    )
    (out,) = report.concepts
    assert report.tested == 0
    rare, empty = out.slices
    assert rare.n_active == 5 and rare.p is None and rare.q is None and rare.ci is None
    assert not rare.flagged and rare.accuracy_active == 1.0
    assert empty.n_active == 0 and empty.accuracy_active is None and empty.difference is None
    assert out.shift is None and out.shift_ci is None and not out.flagged


def test_every_slice_counts_what_its_masks_count():
    """The counts of all concepts at once (one pass over the rows) equal each concept's own
    boolean masks, class by class, with thresholds between the activations."""
    rng = np.random.default_rng(5)
    n, concepts = 700, 9
    activation = rng.exponential(size=(n, concepts)).astype(np.float32)
    thresholds = rng.uniform(0.2, 2.0, concepts)
    activity = ConceptActivity(tuple((c,) for c in range(concepts)), activation, thresholds)
    y = rng.integers(0, 2, n)
    decisions = np.where(rng.random(n) < 0.8, y, 1 - y)
    report = sliced_errors([f"c{c}" for c in range(concepts)], activity, y, decisions)
    correct = decisions == y
    for found in report.concepts:
        (c,) = found.latents
        active = activation[:, c] > thresholds[c]
        assert found.active_rate == active.mean()
        for piece, cls in zip(found.slices, (1, 0), strict=True):
            on, off = (y == cls) & active, (y == cls) & ~active
            assert (piece.n_active, piece.n_inactive) == (on.sum(), off.sum())
            assert piece.accuracy_active == correct[on].mean()
            assert piece.accuracy_inactive == correct[off].mean()


def test_a_concepts_interval_does_not_depend_on_the_other_concepts():
    """Renaming, reordering or dropping other concepts leaves a concept's bootstrap intervals
    as they were: each concept draws from its own stream, keyed by its latents."""
    rng = np.random.default_rng(7)
    n, concepts = 600, 5
    activity = activity_of(rng.random((n, concepts)) < 0.4)
    y = rng.integers(0, 2, n)
    decisions = np.where(rng.random(n) < 0.75, y, 1 - y)

    def intervals(names, columns):
        report = sliced_errors(names, activity, y, decisions, columns=columns)
        return {c.latents: (c.shift_ci, [s.ci for s in c.slices]) for c in report.concepts}

    everything = intervals([f"c{c}" for c in range(concepts)], range(concepts))
    renamed = intervals(["zz", "c1", "aa", "c3", "c4"], range(concepts))
    reordered = intervals(["c4", "c2", "c0"], [4, 2, 0])
    assert renamed == everything
    assert reordered == {k: everything[k] for k in reordered}
