"""Golden values for every metric in audit.metrics, and plain reference implementations."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from audit import metrics
from audit.metrics import (
    ReconstructionAccumulator,
    SpreadAccumulator,
    cknna,
    dead_latents,
    decoder_orthogonality,
    frac_zeros,
    fvu,
    fvu_per_sample,
    l0,
    lp_agreement,
    lp_kl,
    mean_cosine,
    per_sample_fvu,
    probe_kl,
    progressive_ks,
)


def test_docstring_examples_hold():
    import importlib
    import pkgutil

    attempted = 0
    for info in pkgutil.iter_modules(metrics.__path__):
        result = doctest.testmod(importlib.import_module(f"audit.metrics.{info.name}"))
        assert result.failed == 0, info.name
        attempted += result.attempted
    assert attempted >= 15


# -- sparsity --------------------------------------------------------------------------------


def test_l0_and_fraction_of_zeros_by_hand():
    codes = np.array([[0.0, 0.5, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 0.0, 0.0], [0.0] * 5])
    # Non-zeros per row 2, 3, 0 → L0 = 5/3; zeros 10 of 15 → 2/3.
    assert l0(codes) == pytest.approx(5 / 3, abs=1e-15)
    assert frac_zeros(codes) == pytest.approx(2 / 3, abs=1e-15)
    assert frac_zeros(codes) == pytest.approx(1 - l0(codes) / codes.shape[1], abs=1e-15)
    assert dead_latents((codes != 0).sum(0)) == 1  # column 3 never fires


# -- reconstruction ------------------------------------------------------------------------


def test_fvu_perfect_mean_and_hand_value():
    x = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0], [-2.0, 2.0]])
    assert fvu(x, x) == 0.0
    assert fvu(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(1.0, abs=1e-15)
    # x̄ = (1, 2); Σ‖x − x̄‖² = (0+0) + (4+4) + (1+4) + (9+0) = 22.
    x_hat = x + np.array([[1.0, 0.0], [0.0, -1.0], [0.0, 0.0], [2.0, 1.0]])  # Σ‖e‖² = 1+1+0+5
    assert fvu(x, x_hat) == pytest.approx(7 / 22, abs=1e-15)


def test_per_sample_fvu_by_hand_and_differs_from_dataset_fvu():
    x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]])
    x_hat = np.array([[1.0, 2.0, 4.0], [2.0, 2.0, 5.0]])
    # Row 0: e = (0, 0, −1), Σ(e − ē)² = 2/3; Σ(x − x̄_row)² = 2 → 1/3. Row 1: 0.
    assert per_sample_fvu(x, x_hat).tolist() == pytest.approx([1 / 3, 0.0], abs=1e-15)
    assert fvu_per_sample(x, x_hat) == pytest.approx(1 / 6, abs=1e-15)
    # Dataset-level: x̄ = (1.5, 2, 4), Σ‖x − x̄‖² = .25+.25+0+0+1+1 = 2.5; Σ‖e‖² = 1 → 0.4.
    assert fvu(x, x_hat) == pytest.approx(0.4, abs=1e-15)
    # A constant shift of one vector is invisible to the per-sample variant, not to the FVU.
    shifted = x + np.array([[5.0, 5.0, 5.0], [0.0, 0.0, 0.0]])
    assert fvu_per_sample(x, shifted) == pytest.approx(0.0, abs=1e-15)
    assert fvu(x, shifted) > 1


def test_cosine_by_hand():
    x = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    assert mean_cosine(x, x) == pytest.approx(1.0, abs=1e-15)
    assert mean_cosine(x, 7 * x) == pytest.approx(1.0, abs=1e-15)
    x_hat = np.array([[4.0, 3.0], [0.0, 5.0], [0.0, 0.0]])
    # cos = 24/25, 0, and 0 for the zero reconstruction (by convention).
    assert mean_cosine(x, x_hat) == pytest.approx((24 / 25) / 3, abs=1e-15)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same shape"):
        fvu(np.zeros((3, 2)), np.zeros((3, 3)))


# -- decoder orthogonality -----------------------------------------------------------------


def test_decoder_orthogonality_by_hand():
    assert decoder_orthogonality(np.eye(4)) == 0.0
    # Rows e1, e2, (e1+e2)·5 (scale is irrelevant): cos² = 0, 1/2, 1/2 → mean over 6 ordered pairs.
    assert decoder_orthogonality([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]) == pytest.approx(1 / 3)
    # Identical rows are maximally non-orthogonal.
    assert decoder_orthogonality(np.ones((5, 3))) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decoder_orthogonality_matches_the_n_by_n_definition(dtype):
    w = torch.randn(300, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w[7] = 0.0  # a zero row is orthogonal to everything
    unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos2 = (unit @ unit.T).pow(2)
    cos2.fill_diagonal_(0.0)
    expected = float(cos2.sum()) / (300 * 299)
    got = decoder_orthogonality(w.to(dtype), block_rows=64)  # several blocks
    assert got == pytest.approx(expected, rel=1e-12 if dtype == torch.float64 else 1e-5)


# -- CKNNA ---------------------------------------------------------------------------------


def _hsic_unbiased_dense(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, written out densely."""
    m = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    ones = np.ones(m)
    value = (
        np.trace(Kt @ Lt)
        + (ones @ Kt @ ones) * (ones @ Lt @ ones) / ((m - 1) * (m - 2))
        - 2.0 / (m - 2) * (ones @ Kt @ Lt @ ones)
    )
    return value / (m * (m - 3))


def _knn_mask_dense(K: np.ndarray, k: int) -> np.ndarray:
    m = K.shape[0]
    mask = np.zeros((m, m))
    for i in range(m):
        others = [j for j in range(m) if j != i]
        nearest = sorted(others, key=lambda j: -K[i, j])[:k]
        mask[i, nearest] = 1.0
    return mask


def cknna_reference(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """A plain O(N²) CKNNA: dense kernels, dense masks, dense HSIC."""
    K, L = a @ a.T, b @ b.T
    mask_k, mask_l = _knn_mask_dense(K, k), _knn_mask_dense(L, k)
    mutual = mask_k * mask_l
    cross = _hsic_unbiased_dense(mutual * K, mutual * L)
    return cross / math.sqrt(
        _hsic_unbiased_dense(mask_k * K, mask_k * K) * _hsic_unbiased_dense(mask_l * L, mask_l * L)
    )


@pytest.mark.parametrize(("m", "p", "q", "k"), [(40, 5, 9, 10), (120, 12, 48, 10), (25, 3, 12, 4)])
def test_cknna_equals_plain_reference(m, p, q, k):
    rng = np.random.default_rng(m)
    a = rng.normal(size=(m, p))
    b = np.maximum(a @ rng.normal(size=(p, q)) + 0.7 * rng.normal(size=(m, q)), 0)  # a ReLU code
    assert (b != 0).any(1).all()  # no all-zero code: neighbour ranks have no ties
    expected = cknna_reference(a, b, k)
    assert 0.05 < expected < 0.99  # a non-trivial case
    assert cknna(a, b, k) == pytest.approx(expected, rel=1e-10)
    as32 = cknna(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), k)
    assert as32 == pytest.approx(expected, rel=1e-4)


def test_cknna_invariances_and_unrelated_spaces():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert cknna(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cknna(a, 3.0 * a @ rotation) == pytest.approx(1.0, abs=1e-9)  # linear-kernel geometry
    assert abs(cknna(a, rng.normal(size=(200, 8)))) < 0.1  # independent spaces barely align


def test_cknna_needs_enough_samples():
    with pytest.raises(ValueError, match="at least"):
        cknna(np.ones((5, 2)), np.ones((5, 2)), k=10)


# -- linear probe --------------------------------------------------------------------------


def test_probe_kl_and_agreement_by_hand():
    logits_x = np.array([[0.0, math.log(3.0)], [2.0, 0.0]])  # p = (1/4, 3/4), …
    logits_hat = np.array([[0.0, 0.0], [2.0, 0.0]])  # q = (1/2, 1/2), same as p
    kl_first = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert probe_kl(logits_x, logits_hat).tolist() == pytest.approx([kl_first, 0.0], abs=1e-15)
    assert lp_kl(logits_x, logits_hat) == pytest.approx(kl_first / 2, abs=1e-15)
    # argmax: (1 vs 0 — ties go to the first class) and (0 vs 0).
    assert lp_agreement(logits_x, logits_hat) == 0.5
    # One binary logit s means logits (0, s).
    assert lp_kl(np.array([math.log(3.0)]), np.array([0.0])) == pytest.approx(kl_first, abs=1e-15)


def test_probe_metrics_for_identical_inputs():
    logits = np.random.default_rng(0).normal(size=(50, 4))
    assert lp_agreement(logits, logits) == 1.0
    assert lp_kl(logits, logits) == 0.0


# -- progressive levels and chunk accumulators ---------------------------------------------


def test_progressive_ks():
    assert progressive_ks(6144) == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 6144]
    assert progressive_ks(64) == [16, 32, 64]
    assert progressive_ks(8) == [8]


def test_accumulators_over_chunks_equal_whole_array_metrics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(103, 6)) + 5.0  # a large shared offset, as in CLIP embeddings
    x_hat = x + 0.1 * rng.normal(size=x.shape)
    codes = (rng.random((103, 20)) < 0.3).astype(float)
    spread, acc = SpreadAccumulator(), ReconstructionAccumulator()
    for lo in range(0, 103, 10):
        xs, xh = torch.tensor(x[lo : lo + 10]), torch.tensor(x_hat[lo : lo + 10])
        spread.update(xs)
        acc.update(xs, xh, torch.tensor((codes[lo : lo + 10] != 0).sum(1)))
    assert spread.sum_sq == pytest.approx(((x - x.mean(0)) ** 2).sum(), rel=1e-12)
    got = acc.summary(spread, n_latents=20)
    assert got["fvu"] == pytest.approx(fvu(x, x_hat), rel=1e-12)
    assert got["fvu_per_sample"] == pytest.approx(fvu_per_sample(x, x_hat), rel=1e-12)
    assert got["cosine"] == pytest.approx(mean_cosine(x, x_hat), rel=1e-12)
    assert got["l0"] == pytest.approx(l0(codes), rel=1e-12)
    assert got["frac_zeros"] == pytest.approx(frac_zeros(codes), rel=1e-12)
