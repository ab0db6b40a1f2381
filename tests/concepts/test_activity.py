"""When a concept is active: Otsu's threshold (against brute force), summed activations of a
concept's latents, names resolved with close matches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.concepts import Concept, ConceptBank
from audit.concepts.activity import (
    ConceptColumns,
    activity_thresholds,
    concept_activity,
    concept_sums,
    find_concept,
    otsu_threshold,
    validated_groups,
)
from audit.errors import InputError
from audit.sae import SAEConfig, build_sae


def _brute_force_otsu(values: np.ndarray) -> tuple[float, float]:
    """The largest between-class variance over every cut, and the threshold's side values."""
    v = np.sort(values.astype(np.float64))
    best, where = -1.0, (v[-1], v[-1])
    for t in np.unique(v)[:-1]:
        low, high = v[v <= t], v[v > t]
        score = low.size * high.size * (low.mean() - high.mean()) ** 2
        if score > best + 1e-9 * max(1.0, best):
            best, where = score, (t, high.min())
    return best, where


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(0, 5, allow_nan=False, allow_infinity=False, width=32), min_size=2, max_size=40
    )
)
def test_otsu_cut_maximises_the_between_class_variance(values):
    v = np.array(values)
    t = otsu_threshold(v)
    best, (below, above) = _brute_force_otsu(v)
    if best < 0:  # all equal: nothing is active
        assert not (v > t).any()
        return
    low, high = v[v <= t], v[v > t]
    assert low.size and high.size
    score = low.size * high.size * (low.mean() - high.mean()) ** 2
    assert score == pytest.approx(best, rel=1e-6, abs=1e-9)
    # Halfway between the sides, rounded as the JSON writes it.
    assert t == pytest.approx((below + above) / 2, abs=1e-6)


def test_otsu_splits_a_two_mode_mixture_between_its_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.05, 900), rng.normal(1.5, 0.2, 100)])
    t = otsu_threshold(values)
    assert 0.4 < t < 1.0
    assert ((values > t) == (np.arange(1000) >= 900)).mean() > 0.99


def _bank() -> ConceptBank:
    concepts = [
        Concept(0, "red", 0.5, "red", validated=True),
        Concept(1, "stripes", 0.5, "stripes", validated=True),
        Concept(2, "red", 0.4, "red", validated=True),
        Concept(3, "blue", 0.2, "blue", validated=False),
        Concept(4, None, 0.1, "tree"),
    ]
    return ConceptBank("t", {"fingerprint": "x"}, concepts)


def _identity_sae(d: int = 5):
    """An SAE whose code is relu(x): latent j is embedding column j."""
    model = build_sae(SAEConfig(arch="relu", d_in=d, n_latents=d, l1=0.0))
    with torch.no_grad():
        model.W_enc.copy_(torch.eye(d))
        model.W_dec.copy_(torch.eye(d))
        model.b_enc.zero_()
        model.b_pre.zero_()
        model.set_preprocessing(torch.zeros(d), 1.0)
    return model.eval()


def test_a_concept_is_its_latents_summed_over_the_threshold():
    x = np.array(
        [
            [1.0, -1.0, 0.5, 1.0, 1.0],
            [-1.0, 0.0, 0.5, 1.0, 1.0],
            [-1.0, 2.0, 0.0, 1.0, 1.0],
            [0.2, -1.0, 0.1, 1.0, 1.0],
        ],
        dtype=np.float32,
    )
    groups = validated_groups(_bank())
    assert [(g.name, g.latents) for g in groups] == [("red", (0, 2)), ("stripes", (1,))]
    sums = concept_sums(_identity_sae(), x, 4, ConceptColumns.of([g.latents for g in groups]),
                        chunk_rows=3)  # fmt: skip
    np.testing.assert_allclose(sums, [[1.5, 0], [0.5, 0], [0, 2], [0.3, 0]], atol=1e-6)
    given_t = concept_activity(_identity_sae(), x, _bank(), threshold=0.4)
    assert given_t.rule == "given" and given_t.thresholds.tolist() == [0.4, 0.4]
    np.testing.assert_array_equal(
        given_t.active, [[True, False], [True, False], [False, True], [False, False]]
    )
    otsu = concept_activity(_identity_sae(), x, _bank())
    assert otsu.rule == "otsu"
    np.testing.assert_allclose(otsu.thresholds, activity_thresholds(sums))
    # red: {0, 0.3, 0.5} against {1.5}; stripes: {0, 0, 0} against {2}.
    np.testing.assert_array_equal(otsu.active[:, 0], [True, False, False, False])
    np.testing.assert_array_equal(otsu.active[:, 1], [False, False, True, False])


def test_names_resolve_case_insensitively_and_unknown_names_list_close_ones():
    assert find_concept(_bank(), " RED ").latents == (0, 2)
    assert find_concept(_bank(), "blue").latents == (3,)  # named but not validated
    with pytest.raises(InputError, match="close names: red") as err:
        find_concept(_bank(), "rde")
    assert "'rde' is not in bank 't'" in str(err.value)
    with pytest.raises(InputError, match="validated names include: red, stripes"):
        find_concept(_bank(), "zzzzzz")
