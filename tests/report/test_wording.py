"""The sentences and numbers every report shares (audit/report/wording.py)."""

from __future__ import annotations

import doctest

import audit.report.wording
from audit.report.templating import template_env
from audit.report.wording import number_text


def test_doctests():
    result = doctest.testmod(audit.report.wording)
    assert result.attempted > 0 and result.failed == 0


def test_the_html_filter_writes_numbers_as_the_terminal_and_markdown_do():
    # One formatter for all reports: a check whose value is a boolean or a whole count reads
    # the same in the HTML as in the terminal and Markdown tables.
    num = template_env().filters["num"]
    for value, digits in ((True, 3), (12000, 3), (0.123456, 4), ((0.1, -0.25), 3), (None, 3)):
        assert num(value, digits) == number_text(value, digits)
    assert number_text(False) == "no" and number_text(-0.5, 2, sign=True) == "-0.50"
    assert number_text((0.01, 0.2), sign=True) == "[+0.010, +0.200]"
