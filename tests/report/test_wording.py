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


def _mark(text: str) -> str:
    return f"⟨{text}⟩"


def test_every_user_string_in_a_shared_sentence_passes_through_show():
    """The HTML pages give each user-supplied string its own bidi isolate through ``show``; the
    other reports keep the sentence as it was (``show`` defaults to the identity)."""
    from types import SimpleNamespace as NS

    from audit.report.wording import (
        beyond_note,
        direction_note,
        group_name,
        name_check_note,
        name_checks_line,
    )

    result = NS(data=NS(class_names={"y=1": "cat", "a=0": "indoor"}, spurious="a"))
    assert group_name(result, "y=1, a=0", _mark) == "⟨cat⟩, ⟨indoor⟩"
    assert group_name(result, "y=0, a=0") == "y=0, indoor"
    # A part without a class name: its column and its value each shown on their own.
    assert group_name(result, "y=0, a=0", _mark) == "⟨y⟩=⟨0⟩, ⟨indoor⟩"

    concept = NS(beyond=NS(given=("red", "frame"), delta_wga=0.01, p=0.2))
    assert beyond_note(concept, _mark).startswith("beyond ⟨red⟩, ⟨frame⟩: ΔWGA +0.010")
    assert beyond_note(concept).startswith("beyond red, frame: ")

    refuted = NS(word="heart", polarity="present", auc_threshold=0.7, audited_auc=0.5,
                 audited_auc_upper=0.55, audited_labelled=300, audited_share=0.03,
                 audited_share_upper=0.05, holds=False, refuted=True)  # fmt: skip
    undecided = NS(**{**vars(refuted), "holds": None, "refuted": False})
    concepts = [NS(name="heart", evidence=refuted, flagged=False),
                NS(name="star", evidence=undecided, flagged=True)]  # fmt: skip
    assert "show '⟨heart⟩'" in name_check_note(concepts[0], _mark)
    assert "show 'heart'" in name_check_note(concepts[0])
    line = name_checks_line(concepts, _mark)
    assert "not confirmed: ⟨heart⟩ (never flagged); undecided: ⟨star⟩." in line

    result.attribute_direction = NS(delta_wga=0.08, ci=(0.06, 0.1))
    result.concepts = [NS(tested=True, label="red", delta_wga=0.05)]
    result.flagged_concepts, result.settings = 1, NS(min_dwga=0.02)
    note = direction_note(result, _mark)
    assert "removing the ⟨a⟩ direction" in note and "concept, ⟨red⟩, by +0.050" in note
