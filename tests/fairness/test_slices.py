"""Concept-sliced errors: golden values by hand, a planted slice found, and the concept
activity read from an SAE and a bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import fisher_exact

from audit.concepts import Concept, ConceptBank
from audit.fairness.slices import (
    ConceptActivity,
    SliceSettings,
    concept_activity,
    named_concepts,
    sliced_errors,
)
from audit.fairness.stats import bh_qvalues


def test_golden_accuracies_p_and_q():
    """Class 1: concept active on 30 rows (12 correct), inactive on 30 (27 correct); class 0:
    active on 25 (20 correct), inactive on 25 (20 correct)."""
    y = np.array([1] * 60 + [0] * 50)
    active = np.array([True] * 30 + [False] * 30 + [True] * 25 + [False] * 25)
    correct = np.array(
        [True] * 12 + [False] * 18 + [True] * 27 + [False] * 3 + ([True] * 20 + [False] * 5) * 2
    )
    decisions = np.where(correct, y, 1 - y)
    activity = ConceptActivity(["stripes"], [(4,)], active[:, None])
    out = sliced_errors(activity, y, decisions, ("square", "circle"), SliceSettings(bootstrap=4000))
    by_class = {s.target_class: s for s in out}
    one, zero = by_class[1], by_class[0]
    assert (one.n_active, one.n_inactive, one.target_value) == (30, 30, "circle")
    assert one.accuracy_active == pytest.approx(0.4) and one.accuracy_inactive == pytest.approx(0.9)
    assert one.difference == pytest.approx(-0.5)
    p1 = fisher_exact([[12, 18], [27, 3]]).pvalue
    p0 = fisher_exact([[20, 5], [20, 5]]).pvalue
    assert one.p == pytest.approx(p1) and zero.p == pytest.approx(p0) == pytest.approx(1.0)
    np.testing.assert_allclose([one.q, zero.q], bh_qvalues([p1, p0]))
    assert one.flagged and not zero.flagged
    assert out[0] is one  # flagged first
    lo, hi = one.ci
    assert lo < -0.5 < hi and hi < -0.25  # ±2 SE ≈ ±0.21 around −0.5
    assert zero.difference == 0.0 and zero.ci[0] < 0 < zero.ci[1]
    assert one.to_dict()["latents"] == [4]


def test_bootstrap_of_counts_matches_index_resampling():
    """The binomial draws equal resampling the rows of each slice with replacement."""
    rng = np.random.default_rng(1)
    on = rng.random(80) < 0.55
    off = rng.random(120) < 0.8
    y = np.ones(200, dtype=int)
    active = np.r_[np.ones(80, bool), np.zeros(120, bool)]
    decisions = np.where(np.r_[on, off], 1, 0)
    activity = ConceptActivity(["c"], [(0,)], active[:, None])
    ci = sliced_errors(activity, y, decisions, settings=SliceSettings(bootstrap=20000))[0].ci
    draws = [
        on[rng.integers(0, 80, 80)].mean() - off[rng.integers(0, 120, 120)].mean()
        for _ in range(20000)
    ]
    np.testing.assert_allclose(ci, np.quantile(draws, [0.025, 0.975]), atol=0.01)


def test_planted_slice_is_found_and_a_bystander_is_not():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    shortcut = rng.random(n) < 0.5
    bystander = rng.random(n) < 0.5
    # The model errs on class-1 rows without the shortcut concept (30 % errors), else 3 %.
    error = np.where((y == 1) & ~shortcut, rng.random(n) < 0.3, rng.random(n) < 0.03)
    decisions = np.where(error, 1 - y, y)
    activity = ConceptActivity(
        ["shortcut", "bystander"], [(1,), (2,)], np.stack([shortcut, bystander], 1)
    )
    out = sliced_errors(activity, y, decisions)
    flagged = [(s.concept, s.target_class) for s in out if s.flagged]
    assert flagged == [("shortcut", 1)]
    assert out[0].difference > 0.2  # more accurate where the shortcut is present


def test_small_slices_are_listed_but_not_tested():
    y = np.array([1] * 40)
    active = np.array([True] * 5 + [False] * 35)
    activity = ConceptActivity(["rare"], [(0,)], active[:, None])
    out = sliced_errors(activity, y, y.copy(), settings=SliceSettings(min_rows=10))
    rare = next(s for s in out if s.target_class == 1)
    assert rare.n_active == 5 and rare.p is None and rare.q is None and rare.ci is None
    assert not rare.flagged and rare.accuracy_active == 1.0
    empty = next(s for s in out if s.target_class == 0)
    assert empty.n_active == 0 and empty.accuracy_active is None and empty.difference is None


class _IdentitySAE(torch.nn.Module):
    """encode(x) = relu(x): latent j is active where embedding column j is positive."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _bank() -> ConceptBank:
    concepts = [
        Concept(0, "Red", 0.5, "red", validated=True),
        Concept(1, "stripes", 0.5, "stripes", validated=True),
        Concept(2, "red", 0.4, "red", validated=True),
        Concept(3, "blue", 0.2, "blue", validated=False),  # not validated: not a concept here
        Concept(4, None, 0.1, "tree"),
    ]
    return ConceptBank("t", {"fingerprint": "x"}, concepts)


def test_named_concepts_merge_names_and_skip_unvalidated():
    names, latents = named_concepts(_bank())
    assert names == ["Red", "stripes"]
    assert latents == [(0, 2), (1,)]


def test_activity_is_any_latent_of_the_name_above_zero():
    x = np.array(
        [
            [1.0, -1.0, -1.0, 1.0, 1.0],
            [-1.0, 0.0, 0.5, 1.0, 1.0],
            [-1.0, 2.0, 0.0, 1.0, 1.0],
            [0.0, -1.0, -3.0, 1.0, 1.0],
        ],
        dtype=np.float32,
    )
    activity = concept_activity(_IdentitySAE(), x, _bank(), chunk_rows=3)
    assert activity.names == ["Red", "stripes"]
    np.testing.assert_array_equal(
        activity.active, [[True, False], [True, False], [False, True], [False, False]]
    )
