"""Golden files compared exactly, except for float noise in decimal numbers.

Float sums run in a different order on another CPU (AVX-512 against AVX2, another BLAS kernel),
and a probe fit by L-BFGS stops a few ulps elsewhere, so a value can come out a little apart in
its last digits: 2.303294 against 2.303295, a margin of −7.403709 against −7.403722 (the
largest difference measured between a 2-core AMD EPYC and a 2-core Intel Xeon VM, 2026-12-05:
1.3e-5 absolute, 1.8e-6 relative; float32 keeps about 7 digits). That is not a change of
behaviour. Everything else must match byte for byte: the words, the structure, every integer
(counts, ranks, ids) and every decimal beyond the noise.

* JSON: the parsed trees must match; floats within ``1e-5`` absolute or relative (whichever is
  larger: a margin of 16.55 has float32 noise near 1e-6 · 16); strings as text (below).
* Text (Markdown, terminal, HTML, JUnit XML, and strings inside the JSON): the same words
  around the numbers; each decimal number within the same noise, or 1.5 units of the last place
  the expected file prints it with (``0.898`` may be ``0.897``; ``1.1e-30`` may be
  ``1.2e-30``), whichever is larger.

>>> text_difference("acc 0.898 (n 12)", "acc 0.897 (n 12)") is None
True
>>> text_difference("acc 0.898 (n 12)", "acc 0.896 (n 12)")
"number 1: '0.898' expected, '0.896' found"
>>> text_difference("n 12", "n 13")
'text differs: ...'
>>> json_difference('{"p": 1.23456e-30, "x": [2.303294]}', '{"p": 1.23457e-30, "x": [2.303295]}')
>>> json_difference('{"x": 0.5, "m": -7.403709}', '{"x": 0.5, "m": -7.403722}')
>>> json_difference('{"x": 0.5}', '{"x": 0.50002}')
'$.x: 0.5 expected, 0.50002 found'
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: A decimal number: digits with a decimal point, or in scientific notation.
DECIMAL = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\d+(?:\.\d+)?[eE][-+]?\d+)")
NOISE = 1e-5  # absolute and relative


def last_place(token: str) -> float:
    """The value of one unit in the last printed place of ``token``.

    >>> last_place("0.898"), last_place("1.1e-30"), last_place("12.0")
    (0.001, 1e-31, 0.1)
    """
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def text_difference(expected: str, actual: str) -> str | None:
    """None when ``actual`` matches ``expected`` by the module's rule, else the first
    difference."""
    e_parts, a_parts = DECIMAL.split(expected), DECIMAL.split(actual)
    e_numbers, a_numbers = DECIMAL.findall(expected), DECIMAL.findall(actual)
    if e_parts != a_parts or len(e_numbers) != len(a_numbers):
        return "text differs: ..."
    for i, (e, a) in enumerate(zip(e_numbers, a_numbers, strict=True), start=1):
        x, y = float(e), float(a)
        if e != a and abs(x - y) > max(1.5 * last_place(e), NOISE, NOISE * abs(x)):
            return f"number {i}: {e!r} expected, {a!r} found"
    return None


def json_difference(expected: str, actual: str) -> str | None:
    """None when the JSON texts hold the same tree by the module's rule, else the first
    difference (its path)."""
    return _tree_difference(json.loads(expected), json.loads(actual), "$")


def _tree_difference(e: Any, a: Any, where: str) -> str | None:
    if isinstance(e, float) or isinstance(a, float):
        close = (
            isinstance(e, int | float)
            and isinstance(a, int | float)
            and not isinstance(e, bool)
            and not isinstance(a, bool)
            and math.isclose(e, a, rel_tol=NOISE, abs_tol=NOISE)
        )
        return None if close else f"{where}: {e!r} expected, {a!r} found"
    if type(e) is not type(a):
        return f"{where}: {e!r} expected, {a!r} found"
    if isinstance(e, dict):
        if list(e) != list(a):
            return f"{where}: keys {list(e)} expected, {list(a)} found"
        for key in e:
            found = _tree_difference(e[key], a[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(e, list):
        if len(e) != len(a):
            return f"{where}: {len(e)} items expected, {len(a)} found"
        for i, (x, y) in enumerate(zip(e, a, strict=True)):
            found = _tree_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(e, str):
        found = text_difference(e, a)
        return f"{where}: {found}" if found else None
    return None if e == a else f"{where}: {e!r} expected, {a!r} found"


def difference(file: str, expected: str, actual: str) -> str | None:
    """The first difference between a golden file and what the audit wrote now (None: none)."""
    if expected == actual:
        return None
    if file.endswith(".json"):
        return json_difference(expected, actual)
    return text_difference(expected, actual)
