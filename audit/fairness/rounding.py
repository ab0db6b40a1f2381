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
