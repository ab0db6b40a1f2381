"""Statistics of the audit: the paired stratified bootstrap of ΔWGA, Monte-Carlo p-values with
sequential stopping, and Benjamini–Hochberg q-values.

**Paired, stratified bootstrap.** Each audited sample has a pair (correct before the ablation,
correct after it). Resampling the samples of a cell with replacement (stratified: every cell
keeps its size) and evaluating before and after on the *same* resample (paired) makes the
resampled WGA depend only on how many pairs of each of the four kinds (✓✓, ✓✗, ✗✓, ✗✗) land in
each cell — a multinomial draw with the cell's observed proportions. Drawing those counts
directly is exactly the index-resampling bootstrap, at O(cells) cost per replicate instead of
O(samples); a test checks the two against each other. The interval is the percentile interval
(Efron & Tibshirani, 1993, ch. 13).

**Caveat.** WGA is a minimum over cells, a non-smooth statistic; when two cells have nearly the
same accuracy the percentile interval can under-cover slightly. The flag rule therefore also
requires the permutation-type p-value (below) to survive BH.

**Sequential Monte-Carlo p-values** (Besag & Clifford, 1991): draw null statistics in growing
batches and stop as soon as ``h`` of them reach the observed value, reporting ``p = h / L`` after
``L`` draws; otherwise stop at ``M`` draws with ``p = (G + 1) / (M + 1)``, ``G`` the exceedances.
Both are valid p-values; the second is the usual "+1" empirical p-value (Davison & Hinkley 1997),
so the smallest attainable p is ``1 / (M + 1)`` and ``M`` is chosen so that it survives BH over
the whole tested family.

**Benjamini–Hochberg** (1995): for sorted p-values ``p_(1) ≤ … ≤ p_(m)``,
``q_(i) = min_{k ≥ i} min(1, m · p_(k) / k)``; rejecting ``q ≤ α`` controls the false discovery
rate at ``α`` for independent or positively dependent tests.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bh_qvalues(p: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order.

    >>> [round(float(q), 6) for q in bh_qvalues([0.01, 0.04, 0.03, 0.2])]
    [0.04, 0.053333, 0.053333, 0.2]
    >>> bh_qvalues([]).tolist()
    []
    """
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval (linear interpolation between order statistics).

    >>> [round(v, 9) for v in percentile_interval(np.arange(101.0))]
    [2.5, 97.5]
    """
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


def pair_counts(
    correct_before: np.ndarray, correct_after: np.ndarray, cell: np.ndarray, n_cells: int
) -> np.ndarray:
    """``[n_cells, 4]`` counts of the pairs (✓✓, ✓✗, ✗✓, ✗✗) per cell.

    >>> pair_counts(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), np.array([0, 0, 0, 1]), 2).tolist()
    [[1, 1, 1, 0], [0, 0, 0, 1]]
    """
    kind = 2 * (1 - correct_before.astype(np.int64)) + (1 - correct_after.astype(np.int64))
    flat = np.bincount(cell.astype(np.int64) * 4 + kind, minlength=n_cells * 4)
    return flat.reshape(n_cells, 4)


def delta_wga_from_pairs(pairs: np.ndarray) -> float:
    """ΔWGA = WGA after − WGA before from ``[cells, 4]`` pair counts (empty cells ignored).

    >>> delta_wga_from_pairs(np.array([[5, 0, 3, 2], [9, 1, 0, 0]]))
    0.3
    """
    n = pairs.sum(-1)
    keep = n > 0
    before = (pairs[..., 0] + pairs[..., 1])[keep] / n[keep]
    after = (pairs[..., 0] + pairs[..., 2])[keep] / n[keep]
    return round(float(after.min() - before.min()), 12)


def bootstrap_delta_wga(pairs: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Paired, stratified bootstrap replicates of ΔWGA from ``[cells, 4]`` pair counts.

    Each cell's four counts are redrawn from a multinomial with the cell's size and observed
    proportions — the same distribution as resampling that cell's samples with replacement.
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    n = pairs.sum(1)
    keep = np.nonzero(n > 0)[0]
    before = np.empty((samples, keep.size))
    after = np.empty((samples, keep.size))
    for col, c in enumerate(keep):
        draws = rng.multinomial(int(n[c]), pairs[c] / n[c], size=samples)
        before[:, col] = (draws[:, 0] + draws[:, 1]) / n[c]
        after[:, col] = (draws[:, 0] + draws[:, 2]) / n[c]
    return after.min(1) - before.min(1)


def sequential_mc_pvalue(
    draw: Callable[[int], np.ndarray],
    exceeds: Callable[[np.ndarray], np.ndarray],
    max_draws: int,
    h: int = 10,
    first_batch: int = 200,
) -> tuple[float, int, np.ndarray]:
    """Besag–Clifford sequential Monte-Carlo p-value.

    ``draw(k)`` returns ``k`` null statistics, ``exceeds(stats)`` marks those at least as extreme
    as the observed one. Returns ``(p, draws used, all null statistics drawn)``.

    >>> rng = np.random.default_rng(0)
    >>> p, used, _ = sequential_mc_pvalue(lambda k: rng.random(k), lambda s: s >= 0.5, 10_000)
    >>> used < 10_000 and 0.2 < p < 0.8
    True
    >>> p, used, _ = sequential_mc_pvalue(lambda k: rng.random(k), lambda s: s >= 2.0, 999)
    >>> (p, used)
    (0.001, 999)
    """
    drawn: list[np.ndarray] = []
    exceed = 0
    used = 0
    batch = min(first_batch, max_draws)
    while used < max_draws:
        stats = draw(batch)
        hits = np.nonzero(exceeds(stats))[0]
        if exceed + hits.size >= h:
            # Stop at the draw that brought the h-th exceedance: p = h / L.
            last = int(hits[h - exceed - 1]) + 1
            drawn.append(stats[:last])
            used += last
            return h / used, used, np.concatenate(drawn)
        drawn.append(stats)
        exceed += hits.size
        used += stats.size
        batch = min(2 * batch, max_draws - used)
    return (exceed + 1) / (used + 1), used, np.concatenate(drawn) if drawn else np.empty(0)


#: Null draws per unit of the smallest BH threshold's inverse (see null_draws_for_family).
DRAWS_PER_THRESHOLD = 10


def null_draws_for_family(family_size: int, max_q: float, minimum: int = 1000) -> int:
    """Null draws ``M`` that resolve p-values at the smallest Benjamini–Hochberg threshold.

    BH gives the smallest p a q-value of ``m · p``, so it is flagged when ``p ≤ t = max_q/m``.
    ``M ≥ 1/t`` only makes ``1/(M+1)`` attainable; a concept whose true p is ``t/2`` then sees
    ``G ≈ M·t/2`` exceedances and gets ``(G+1)/(M+1)``, which is above ``t`` until ``M ≈ 2/t``
    and noisy around it. ``M = 10/t`` gives such a concept about five exceedances and an estimate
    near ``0.6·t``. (On the marker world, ``1/t`` draws left a marker with p ≈ 0.002 at
    ``(2+1)/1001 = 0.003 > t = 0.0028``, q = 0.054.) Draws stop early for large p-values, so the
    cost is paid only by concepts near or below the threshold.

    >>> null_draws_for_family(500, 0.05)
    100000
    >>> null_draws_for_family(3, 0.05)
    1000
    """
    return max(minimum, int(np.ceil(DRAWS_PER_THRESHOLD * family_size / max_q)))


def poisson_binomial_pmf(probabilities: np.ndarray) -> np.ndarray:
    """Exact distribution of a sum of independent Bernoulli(p_i) variables.

    The factors ``(1 − p_i) + p_i t`` are multiplied as polynomials in a balanced product tree,
    one level at a time with batched real FFTs — ``log₂ K`` numpy calls for ``K`` factors,
    O(K log² K) work. Round-off (~1e-15) is clipped at zero and the result renormalised.

    >>> np.round(poisson_binomial_pmf(np.array([0.5, 0.2])), 6).tolist()
    [0.4, 0.5, 0.1]
    >>> np.round(poisson_binomial_pmf(np.full(3, 0.5)), 6).tolist()
    [0.125, 0.375, 0.375, 0.125]
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        return np.ones(1)
    polys = np.stack([1.0 - p, p], axis=1)
    while polys.shape[0] > 1:
        if polys.shape[0] % 2:
            one = np.zeros((1, polys.shape[1]))
            one[0, 0] = 1.0
            polys = np.concatenate([polys, one])
        length = 2 * polys.shape[1] - 1
        size = 1 << (length - 1).bit_length()
        spectrum = np.fft.rfft(polys[0::2], size) * np.fft.rfft(polys[1::2], size)
        polys = np.clip(np.fft.irfft(spectrum, size)[:, :length], 0.0, None)
    pmf = polys[0][: p.size + 1]
    return pmf / pmf.sum()


class CountSampler:
    """Draws of one cell's number of correct predictions, ``fixed + Σ Bernoulli(p_i)``, by
    inverse-CDF sampling from the exact distribution."""

    def __init__(self, probabilities: np.ndarray, fixed: int) -> None:
        self.fixed = int(fixed)
        self.cdf = np.cumsum(poisson_binomial_pmf(probabilities))
        self.cdf[-1] = 1.0

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return self.fixed + np.searchsorted(self.cdf, rng.random(size), side="right")


def _boundary(
    holds: np.ndarray, fails: np.ndarray, predicate: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Per element, the point next to the boundary of a predicate that holds at ``holds`` and
    fails at ``fails`` (either side) and changes once between them: bisection, vectorised."""
    holds, fails = holds.copy(), fails.copy()
    while np.any(np.abs(holds - fails) > 1):
        active = np.abs(holds - fails) > 1
        mid = (holds + fails) // 2
        ok = predicate(mid)
        holds = np.where(active & ok, mid, holds)
        fails = np.where(active & ~ok, mid, fails)
    return holds


#: Tables as likely as the observed one within this relative tolerance count as "at most as
#: likely" (R's fisher.test uses the same 1e-7: it absorbs the rounding of the log-pmf).
FISHER_RELATIVE_TOLERANCE = 1e-7


def fisher_exact_two_sided(tables: np.ndarray) -> np.ndarray:
    """Two-sided Fisher exact p-values of many 2 × 2 tables ``[[a, b], [c, d]]`` at once.

    With the margins fixed, ``a`` is hypergeometric; the p-value is the probability of every
    table at most as likely as the observed one. The pmf is unimodal, so those tables are the
    two tails outside a central run around the mode: each run end is found by a binary search
    on the log-pmf (vectorised over the tables), and the tails come from the hypergeometric CDF
    — instead of one ``scipy.stats.fisher_exact`` call per table (about 8 ms each).

    >>> fisher_exact_two_sided(np.array([[[3, 1], [1, 3]], [[1, 9], [11, 3]]])).round(6).tolist()
    [0.485714, 0.002759]
    >>> fisher_exact_two_sided(np.array([[[5, 5], [5, 5]]])).tolist()
    [1.0]
    """
    from scipy.special import gammaln
    from scipy.stats import hypergeom

    t = np.asarray(tables, dtype=np.int64).reshape(-1, 2, 2)
    a, b, c, d = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    row1, row2, col1 = a + b, c + d, a + c
    total = row1 + row2
    low, high = np.maximum(0, col1 - row2), np.minimum(row1, col1)

    def logpmf(x: np.ndarray) -> np.ndarray:
        return (
            gammaln(row1 + 1)
            - gammaln(x + 1)
            - gammaln(row1 - x + 1)
            + gammaln(row2 + 1)
            - gammaln(col1 - x + 1)
            - gammaln(row2 - col1 + x + 1)
        )  # fmt: skip (the normaliser C(total, col1) cancels in every comparison)

    mode = np.clip((col1 + 1) * (row1 + 1) // (total + 2), low, high)
    limit = logpmf(a) + np.log1p(FISHER_RELATIVE_TOLERANCE)
    at_most = lambda x: logpmf(np.clip(x, low, high)) <= limit  # noqa: E731
    # Left tail ends at the largest x ≤ mode with pmf(x) ≤ pmf(a) (low − 1: none); the right
    # tail starts at the smallest x ≥ mode with it (high + 1: none).
    left_end = _boundary(low - 1, mode, at_most)
    right_start = _boundary(high + 1, mode, at_most)
    p = hypergeom.cdf(left_end, total, row1, col1) + hypergeom.sf(
        right_start - 1, total, row1, col1
    )
    p = np.where(at_most(mode), 1.0, p)  # the observed table is as likely as the mode
    return np.minimum(p, 1.0)
