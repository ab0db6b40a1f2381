"""One-line error helpers."""

from __future__ import annotations

import doctest

import audit.errors
from audit.errors import first_line


def test_doctests():
    result = doctest.testmod(audit.errors)
    assert result.attempted > 0 and result.failed == 0


def test_first_line_is_cut_at_the_limit_and_strips_blank_lines():
    assert first_line(ValueError("\n  " + "x" * 500 + "\nmore")) == "x" * 200
    assert first_line(ValueError("x" * 500), limit=300) == "x" * 300
    assert first_line(ValueError("x" * 500), limit=None) == "x" * 500
    assert first_line(ValueError("   ")) == "ValueError"


def test_first_line_drops_terminal_colour_codes():
    # torch's weights_only refusal bolds a phrase; the one-line error must be plain text.
    exc = RuntimeError("load failed, \x1b[1mdo those steps only if you trust it\x1b[0m. More")
    assert first_line(exc) == "load failed, do those steps only if you trust it. More"
