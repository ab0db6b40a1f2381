"""Confidence intervals shared by every layer: a binomial proportion's (Wilson)."""

from __future__ import annotations

import math

#: The two-sided 95 % normal quantile, Φ⁻¹(0.975).
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson, 1927).

    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``: unlike the normal ("Wald")
    interval it stays inside [0, 1] and keeps close to nominal coverage for small ``n`` and for
    accuracies near 1, which is where worst groups live.

    >>> [round(v, 4) for v in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    >>> [round(v, 4) for v in wilson_interval(10, 10)]
    [0.7225, 1.0]
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
