"""Sparsity of SAE codes: L0, the fraction of zeros, dead latents, the progressive k-list."""

from __future__ import annotations

from audit.metrics._arrays import ArrayLike, _f64

#: Progressive recovery starts at k = 16 and doubles, as in the paper's evaluation code.
PROGRESSIVE_START = 16


def l0(codes: ArrayLike) -> float:
    """Mean number of non-zero latents per sample, ``(1/N) Σ_i #{j : z_ij ≠ 0}``.

    ``codes``: ``[N, n]``.

    >>> l0([[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    1.5
    """
    z = _f64(codes)
    return float((z != 0).sum(1).double().mean())


def frac_zeros(codes: ArrayLike) -> float:
    """The paper's sparsity column: the mean fraction of zero latents, ``1 − L0 / n``.

    ``codes``: ``[N, n]``. (The paper labels this column "L0"; higher means sparser.)

    >>> frac_zeros([[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    0.625
    """
    z = _f64(codes)
    return float((z == 0).double().mean())


def dead_latents(fire_counts: ArrayLike) -> int:
    """Latents that never fired on the evaluated data (NDN): ``#{j : count_j = 0}``.

    ``fire_counts``: ``[n]``, how many rows each latent was non-zero in.

    >>> dead_latents([3, 0, 1, 0])
    2
    """
    return int((_f64(fire_counts) == 0).sum())


def progressive_ks(n_latents: int, start: int = PROGRESSIVE_START) -> list[int]:
    """``k = start, 2·start, 4·start, …`` while ``≤ n``, then ``n`` itself.

    >>> progressive_ks(1024)
    [16, 32, 64, 128, 256, 512, 1024]
    >>> progressive_ks(6144)
    [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 6144]
    >>> progressive_ks(10)
    [10]
    """
    ks = []
    k = start
    while k <= n_latents:
        ks.append(k)
        k *= 2
    if not ks or ks[-1] != n_latents:
        ks.append(n_latents)
    return ks
