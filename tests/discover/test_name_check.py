"""``discover`` checks names on the audited images like the audit does: with the bank as
built, "red" holds on the demo's test split and is flagged; with "red" labelled by the word
check of "circle" (tests/fairness/test_name_check.py) it is refuted, reported and not flagged."""

from __future__ import annotations

from html import escape as html_escape

import pytest

from audit.discover import DiscoverSettings
from audit.fairness import AuditSettings
from audit.report.discover import discover_files
from audit.report.wording import discover_note, name_checks_line
from audit.store import open_store
from tests.fairness.test_name_check import red_labelled_as
from tests.golden.cases import DEMO_INPUTS


def _discover(tmp_path, red_labelled_as_word: str):  # type: ignore[no-untyped-def]
    folder = tmp_path / red_labelled_as_word
    bank_path = red_labelled_as(red_labelled_as_word, folder)
    labels = open_store(DEMO_INPUTS / "store").metadata.drop(columns=["is_red"])
    settings = DiscoverSettings(AuditSettings("is_circle", "", split="test", ablation="mean"))
    outcome = discover_files(
        DEMO_INPUTS / "store", sae=DEMO_INPUTS / "sae", bank=bank_path,
        classifier=DEMO_INPUTS / "head.npz", target="is_circle", labels=labels,
        out_dir=folder, stem="discover", settings=settings,
    )  # fmt: skip
    red = next(c for c in outcome.result.concepts if c.name == "red")
    html = (folder / "discover.html").read_text(encoding="utf-8")
    line = name_checks_line(outcome.result.concepts)
    assert line is not None and html_escape(line) in html  # the run's summary of the checks
    refuted = line.partition("not confirmed: ")[2].partition(" (never flagged)")[0].split(", ")
    assert ("red" in refuted) is (red_labelled_as_word != "red")
    return red, html


@pytest.mark.parametrize(("labelled_as", "holds"), [("red", True), ("circle", False)])
def test_discover_flags_red_only_where_its_name_holds(tmp_path, labelled_as, holds):
    red, html = _discover(tmp_path, labelled_as)
    assert red.evidence is not None and red.evidence.holds is holds
    assert red.flagged is holds
    note = discover_note(red) or ""
    assert ("name not confirmed on these images" in note) is not holds
    if not holds:
        assert html_escape(note) in html  # the terminal's wording, beside red in the table
