"""Concept grouping's building blocks against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.concepts.grouping import near_duplicates


def _every_pair(z: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """The definition: Pearson correlation of every pair of columns that vary."""
    varies = z.std(0) > 0
    corr = np.corrcoef(z[:, varies], rowvar=False)
    index = np.nonzero(varies)[0]
    a, b = np.nonzero(np.triu(corr >= threshold, k=1))
    return sorted(zip(index[a].tolist(), index[b].tolist(), strict=True))


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 4096])
def test_near_duplicates_finds_exactly_the_pairs_above_the_threshold(chunk):
    """Planted copies (a latent twice with noise, a chain of three), dead latents and a
    constant latent; every chunk size gives the pairs the full correlation matrix gives, each
    once, smaller index first."""
    rng = np.random.default_rng(0)
    rows, latents = 500, 50
    z = np.maximum(rng.normal(size=(rows, latents)), 0).astype(np.float32)
    z[:, 10] = z[:, 3] + 0.05 * rng.random(rows)  # 3 ~ 10
    z[:, 40] = z[:, 20] * 2.0  # 20 ~ 40 ~ 41: correlation is scale-free
    z[:, 41] = z[:, 20] + 0.01
    z[:, 5] = 0.0  # dead
    z[:, 6] = 1.5  # constant: varies never, correlates with nothing
    want = _every_pair(z, 0.95)
    got = near_duplicates(torch.from_numpy(z), 0.95, chunk=chunk)
    assert sorted(got) == want
    assert len(got) == len(set(got)) and all(a < b for a, b in got)
    assert {(3, 10), (20, 40), (20, 41), (40, 41)} <= set(got)
    assert not any(5 in p or 6 in p for p in got)


def test_near_duplicates_subsamples_rows_evenly():
    """Over ``max_rows`` images it keeps every k-th row: a pair that matches only on the rows
    it keeps is found, one that matches only on the rows it drops is not."""
    rng = np.random.default_rng(1)
    z = rng.random((100, 4)).astype(np.float32)
    z[::2, 1] = z[::2, 0]  # equal on the even rows (the kept ones at max_rows=50)
    z[1::2, 3] = z[1::2, 2]  # equal on the odd rows only
    got = near_duplicates(torch.from_numpy(z), 0.99, max_rows=50)
    assert got == [(0, 1)]
