"""When a concept is active: Otsu's cut by hand and against a brute-force search, summed
activations of several latents, fixed thresholds, and a real SAE's column encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.concepts.activity import (
    ConceptActivity,
    concept_activity,
    otsu_threshold,
    otsu_thresholds,
    summed_activations,
)


def _between(values: np.ndarray, t: float) -> float:
    low, high = values[values <= t], values[values > t]
    if not low.size or not high.size:
        return -1.0
    w = low.size / values.size
    return w * (1 - w) * (low.mean() - high.mean()) ** 2


def test_otsu_by_hand():
    """{0, 0, 1} vs {9, 10}: means 1/3 and 9.5, weights 3/5 and 2/5; the best cut lies between
    1 and 9, so the threshold is their midpoint."""
    assert otsu_threshold(np.array([0.0, 9.0, 0.0, 10.0, 1.0])) == 5.0
    assert otsu_threshold(np.array([2.0, 2.0, 2.0])) == 2.0  # no cut: nothing above it
    assert otsu_threshold(np.array([])) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False, width=32), min_size=2, max_size=40))
def test_otsu_maximises_the_between_group_variance(values):
    v = np.array(values, dtype=np.float64)
    t = otsu_threshold(v)
    distinct = np.unique(v)
    if distinct.size < 2:
        assert t == v.max()
        return
    best = max(_between(v, c) for c in (distinct[:-1] + distinct[1:]) / 2)
    assert _between(v, t) == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert v.min() <= t < v.max()


def _otsu_one_column(values: np.ndarray) -> float:
    """The plain per-column Otsu (sort, every distinct cut, the best one's midpoint)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    cuts = np.nonzero(v[1:] > v[:-1])[0]
    if cuts.size == 0:
        return float(v[-1])
    cumulative, left, n = np.cumsum(v), cuts + 1, v.size
    mean_low = cumulative[cuts] / left
    mean_high = (cumulative[-1] - cumulative[cuts]) / (n - left)
    best = cuts[int(np.argmax((left / n) * (1 - left / n) * (mean_low - mean_high) ** 2))]
    return float((v[best] + v[best + 1]) / 2)


@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_column_blocks_give_each_column_s_own_cut_exactly(n):
    """Every column at once, in blocks of a few columns, equals one column at a time bit for
    bit: ReLU-like float32 columns with ties and zeros, a constant and an all-zero column, one
    with negative values, one with -0.0 and one with a single positive value."""
    rng = np.random.default_rng(n)
    columns = np.maximum(rng.standard_normal((n, 23)).astype(np.float32) - 0.5, 0)
    columns[:, 3] = 1.5
    columns[:, 4] = 0.0
    columns[: n // 2, 5] = np.round(columns[: n // 2, 5], 1)
    columns[:, 6] = rng.standard_normal(n)  # negative values: no zero run at the bottom
    columns[::2, 7] = -0.0
    columns[:, 8] = 0.0
    columns[n // 2, 8] = 2.0  # one positive value
    expected = [_otsu_one_column(columns[:, c]) for c in range(23)]
    for block_values in (n, 3 * n, 1 << 22):
        for workers in (1, 3):
            found = otsu_thresholds(columns, block_values=block_values, workers=workers)
            assert found.tolist() == expected


def test_active_counts_equal_the_boolean_matrix_product():
    rng = np.random.default_rng(3)
    activation = rng.exponential(size=(101, 6)).astype(np.float32)
    thresholds = rng.uniform(0.5, 1.5, 6)
    activity = ConceptActivity(tuple((c,) for c in range(6)), activation, thresholds)
    weights = rng.random((101, 3)) < 0.5
    expected = weights.T.astype(np.int64) @ activity.active.astype(np.int64)
    for chunk_rows in (1, 7, 8192):
        counts = activity.active_counts(weights, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(counts, expected)
        some = activity.active_counts(weights, [4, 0, 4], chunk_rows=chunk_rows)
        np.testing.assert_array_equal(some, expected[:, [4, 0, 4]])


class _ReluSAE:
    """encode(x) = relu(x), with the audit's column encoder."""

    def column_encoder(self, cols: torch.Tensor):
        return lambda x: torch.relu(x)[:, cols]


def test_summed_activation_of_several_latents_and_the_cut():
    x = np.array(
        [[3.0, 1.0, -1.0], [2.0, 2.0, 0.0], [-1.0, 0.1, 0.5], [0.0, 0.2, 4.0], [-2.0, 0.0, 0.1]],
        dtype=np.float32,
    )
    chunks = [torch.from_numpy(x[:2]), torch.from_numpy(x[2:])]
    sums = summed_activations(_ReluSAE(), chunks, [(0, 1), (2,)])
    np.testing.assert_allclose(sums, [[4.0, 0.0], [4.0, 0.0], [0.1, 0.5], [0.2, 4.0], [0.0, 0.1]])
    activity = concept_activity(_ReluSAE(), x, [(0, 1), (2,)], chunk_rows=2)
    np.testing.assert_allclose(activity.thresholds, [2.1, 2.25], rtol=1e-6)  # midpoints
    np.testing.assert_array_equal(activity.active[:, 0], [True, True, False, False, False])
    np.testing.assert_array_equal(activity.active[:, 1], [False, False, False, True, False])
    fixed = concept_activity(_ReluSAE(), x, [(0, 1), (2,)], thresholds=[None, 0.0])
    np.testing.assert_array_equal(fixed.active[:, 1], [False, False, True, True, True])
    assert fixed.thresholds[0] == activity.thresholds[0] and fixed.index((2,)) == 1
    assert fixed.index([0, 1]) == 0  # any sequence of the latents
    with pytest.raises(ValueError, match="no concept with latents"):
        fixed.index((1,))


def test_a_real_sae_column_encoder_gives_its_inference_code():
    from audit.sae import SAEConfig
    from audit.sae.registry import build_sae

    torch.manual_seed(0)
    sae = build_sae(SAEConfig(arch="matryoshka", d_in=8, n_latents=16, k_list=(4, 16))).eval()
    x = torch.randn(50, 8)
    groups = [(1, 5), (7,)]
    with torch.no_grad():
        z = sae.encode(x)
    want = np.stack([z[:, [1, 5]].sum(1).numpy(), z[:, 7].numpy()], 1)
    np.testing.assert_allclose(summed_activations(sae, [x], groups), want, rtol=1e-5, atol=1e-6)
