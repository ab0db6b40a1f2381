"""Statistics: BH golden values by hand, the multinomial bootstrap against index resampling, and
the validity of the sequential Monte-Carlo p-value."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from audit.fairness.stats import (
    bh_qvalues,
    bootstrap_delta_wga,
    null_draws_for_family,
    pair_counts,
    sequential_mc_pvalue,
)


def test_bh_golden_values_by_hand():
    # Sorted p: 0.001 0.008 0.039 0.041 0.042 0.060 0.074 0.205 (m = 8).
    # m·p/k: 0.008 0.032 0.104 0.082 0.0672 0.08 0.084571 0.205; running minimum from the right:
    # q = 0.008 0.032 0.0672 0.0672 0.0672 0.08 0.084571 0.205.
    p = [0.074, 0.001, 0.205, 0.039, 0.008, 0.060, 0.042, 0.041]
    expected = [0.084571, 0.008, 0.205, 0.0672, 0.032, 0.08, 0.0672, 0.0672]
    assert np.round(bh_qvalues(p), 6).tolist() == expected
    assert bh_qvalues([0.5, 1.0]).tolist() == [1.0, 1.0]
    assert bh_qvalues([0.9]).tolist() == [0.9]


def test_null_draws_let_the_smallest_p_pass_bh():
    for m, q in [(1, 0.05), (14, 0.05), (500, 0.05), (6144, 0.01)]:
        draws = null_draws_for_family(m, q)
        p = np.ones(m)
        p[0] = 1 / (draws + 1)
        assert bh_qvalues(p)[0] <= q


def _naive_bootstrap(before, after, cell, samples, rng):
    out = np.empty(samples)
    cells = np.unique(cell)
    for b in range(samples):
        acc_b, acc_a = [], []
        for c in cells:
            idx = np.nonzero(cell == c)[0]
            pick = rng.choice(idx, idx.size, replace=True)
            acc_b.append(before[pick].mean())
            acc_a.append(after[pick].mean())
        out[b] = min(acc_a) - min(acc_b)
    return out


def test_multinomial_bootstrap_equals_index_resampling():
    rng = np.random.default_rng(0)
    cell = np.repeat([0, 1, 2], [300, 80, 150])
    before = rng.random(cell.size) < np.select([cell == 0, cell == 1], [0.9, 0.7], 0.85)
    after = np.where(rng.random(cell.size) < 0.15, ~before, before)
    after[(cell == 1) & ~before & (rng.random(cell.size) < 0.4)] = True  # helps the worst cell
    pairs = pair_counts(before, after, cell, 3)
    fast = bootstrap_delta_wga(pairs, 3000, np.random.default_rng(1))
    slow = _naive_bootstrap(before, after, cell, 3000, np.random.default_rng(2))
    for q in (0.025, 0.5, 0.975):
        assert abs(np.quantile(fast, q) - np.quantile(slow, q)) < 0.012
    assert abs(fast.mean() - slow.mean()) < 0.004


def test_sequential_pvalue_is_valid_under_the_null():
    rng = np.random.default_rng(0)
    ps = []
    for _ in range(1500):
        observed = rng.random()
        p, used, drawn = sequential_mc_pvalue(
            lambda k: rng.random(k), lambda s, o=observed: s >= o, 999
        )
        assert 0 < p <= 1 and used == drawn.size
        ps.append(p)
    ps = np.array(ps)
    for alpha in (0.01, 0.05, 0.2):
        assert np.mean(ps <= alpha) <= alpha + 0.015  # super-uniform: never anti-conservative
    assert np.mean(ps <= 0.05) > 0.03  # and not uselessly conservative


def test_sequential_pvalue_stops_early_and_reaches_the_floor():
    rng = np.random.default_rng(1)
    p, used, _ = sequential_mc_pvalue(lambda k: rng.random(k), lambda s: s >= 0.0, 10_000, h=10)
    assert used == 10 and p == pytest.approx(1.0)  # every draw exceeds: stop at the 10th
    p, used, _ = sequential_mc_pvalue(lambda k: rng.random(k), lambda s: s > 2.0, 4999)
    assert used == 4999 and p == pytest.approx(1 / 5000)


@pytest.mark.parametrize(
    "module",
    [
        "audit.fairness.groups",
        "audit.fairness.rounding",
        "audit.intervals",
        "audit.fairness.stats",
        "audit.report.markdown",
        "audit.report.junit",
    ],
)
def test_doctests(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_poisson_binomial_pmf_and_sampler_are_exact():
    from audit.fairness.stats import CountSampler, poisson_binomial_pmf

    rng = np.random.default_rng(3)
    p = rng.random(300) ** 3
    dp = np.array([1.0])
    for q in p:  # the textbook dynamic programme
        dp = np.convolve(dp, [1 - q, q])
    assert np.abs(poisson_binomial_pmf(p) - dp).max() < 1e-12
    sampler = CountSampler(p, fixed=7)
    draws = sampler.draw(20_000, np.random.default_rng(4))
    assert abs(draws.mean() - (7 + p.sum())) < 0.05
    assert abs(draws.var() - (p * (1 - p)).sum()) < 0.6


def test_vectorised_fisher_exact_equals_scipy_table_by_table():
    """Every table, small and large, balanced and lopsided: the same two-sided p-value as
    ``scipy.stats.fisher_exact`` (which tolerates 1e-14 where R and we tolerate 1e-7: only
    tables within 1e-7 of a tie could differ, and random ones are not)."""
    from scipy.stats import fisher_exact

    from audit.fairness.stats import fisher_exact_two_sided

    rng = np.random.default_rng(0)
    tables = []
    for scale in (3, 30, 300, 30_000):
        n = rng.integers(0, scale, size=(150, 2)) + 1
        p = rng.random((150, 2))
        k = rng.binomial(n, p)
        tables += [[[k[i, 0], n[i, 0] - k[i, 0]], [k[i, 1], n[i, 1] - k[i, 1]]] for i in range(150)]
    tables += [[[0, 10], [10, 0]], [[0, 0], [5, 5]], [[7, 0], [0, 0]], [[500, 500], [500, 500]]]
    ours = fisher_exact_two_sided(np.array(tables))
    theirs = np.array([fisher_exact(t, alternative="two-sided").pvalue for t in tables])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
