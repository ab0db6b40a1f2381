"""How result files write numbers, in one place: what the JSON holds is what flags and gates
judge (``checks``) and what ``check`` re-judges, so the two can never disagree.

Numbers keep 6 decimals; p- and q-values 6 significant digits, because an exact test over
thousands of rows gives p far below 1e-6 and a p-value written as 0 claims what no test can.
"""

from __future__ import annotations

DECIMALS = 6

#: Fields written with 6 significant digits rather than 6 decimals (see the module docstring).
SIGNIFICANT_FIELDS = frozenset({"p", "q"})


def round_number(value: float, significant: bool = False) -> float:
    """``value`` as the result files write it: 6 decimals, or 6 significant digits for p- and
    q-values; −0 becomes 0.

    >>> round_number(0.0199997), round_number(3e-7), round_number(3.14159265e-9, significant=True)
    (0.02, 0.0, 3.14159e-09)
    """
    value = float(f"{value:.{DECIMALS}g}") if significant else round(value, DECIMALS)
    return 0.0 if value == 0 else value


def within_bounds(
    value: float | None, minimum: float | None = None, maximum: float | None = None
) -> bool:
    """``value``, as the result files write it, lies within the bounds (``None``: no bound).
    Every threshold is judged this way — integrity minimums, gate checks — so the run's
    decision and ``msae-audit check`` on the saved file judge the same number (a cosine of
    0.8999996 is written 0.9 and meets ``min_cosine: 0.9`` in both). A missing value meets
    nothing.

    >>> within_bounds(0.8999996, 0.9), within_bounds(0.899999, 0.9), within_bounds(None, 0.0)
    (True, False, False)
    >>> within_bounds(0.1500004, maximum=0.15), within_bounds(0.2, 0.1, 0.3)
    (True, True)
    """
    if value is None:
        return False
    shown = round_number(value)
    return (minimum is None or shown >= minimum) and (maximum is None or shown <= maximum)


def meets_minimum(value: float | None, minimum: float) -> bool:
    """:func:`within_bounds` with a lower bound only."""
    return within_bounds(value, minimum)
