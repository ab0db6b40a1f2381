"""Every user-provided string reaches HTML, Markdown, JUnit and the terminal as text."""

from __future__ import annotations

import html
import io
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from rich.console import Console

from audit.fairness import AuditResult, AuditSettings, run_audit
from audit.fairness.result import Check
from audit.report.html import render_html
from audit.report.junit import render_junit
from audit.report.markdown import render_markdown
from audit.report.terminal import render_terminal
from tests.audit_worlds import HOSTILE_NAME, HOSTILE_VALUE, hostile_world
from tests.fairness.planted import planted_bias_world


@pytest.fixture(scope="module")
def hostile_result(tmp_path_factory) -> AuditResult:
    from audit.store import open_store

    paths, world = hostile_world(tmp_path_factory.mktemp("hostile"))
    store = open_store(paths["store"])
    result, _ = run_audit(
        store, store.metadata, world.sae, world.bank, world.head,
        AuditSettings("Male", "Blond_Hair"),
    )  # fmt: skip
    assert result.concepts[0].name == HOSTILE_NAME and result.concepts[0].flagged
    assert any(HOSTILE_VALUE in g.name for g in result.groups)
    return result


def test_html_escapes_names_and_label_values(hostile_result):
    page = render_html(hostile_result)
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert html.escape(HOSTILE_NAME, quote=False) in page or html.escape(HOSTILE_NAME) in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert 'http-equiv="Content-Security-Policy"' in page
    for banned in ("http://", "https://", "//fonts", "<link", "@import", "url("):
        assert banned not in page


def test_markdown_escapes_names_and_label_values(hostile_result):
    text = render_markdown(hostile_result)
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in text
    assert "plain \\| text" in text  # a pipe in a label cannot split a table cell
    for line in text.splitlines():
        if line.startswith("| ") and "plain" in line:
            assert line.count(" | ") == line.replace("\\|", "").count(" | ")


def test_junit_escapes_and_parses(hostile_result):
    xml_text = render_junit(hostile_result)
    assert "<script>" not in xml_text and "<img src" not in xml_text
    root = ET.fromstring(xml_text)
    failures_text = " ".join(
        (case.find("system-out").text or "")
        for case in root.iter("testcase")
        if case.find("system-out") is not None
    )
    assert HOSTILE_NAME in failures_text  # flagged concept listed verbatim once parsed
    assert HOSTILE_VALUE in failures_text  # worst group name
    assert len(list(root.iter("testcase"))) == len(hostile_result.checks)


def test_junit_survives_control_characters(hostile_result):
    check = Check("accuracy", 0.5, None, None, None, True, "fail", "bad \x00\x1b byte")
    data = replace(hostile_result.data, target="t\x07")
    root = ET.fromstring(render_junit(replace(hostile_result, checks=(check,), data=data)))
    assert root.find("testsuite").get("failures") == "1"


def test_terminal_prints_markup_literally(hostile_result):
    first = replace(hostile_result.concepts[0], label="[bold red]not markup[/bold red]")
    result = replace(hostile_result, concepts=(first, *hostile_result.concepts[1:]))
    buf = io.StringIO()
    render_terminal(result, Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "[bold red]not markup[/bold red]" in out and HOSTILE_VALUE in out


def test_html_renders_every_section_for_the_planted_world():
    world = planted_bias_world(n_samples=2000, seed=0)
    from pathlib import Path

    from audit.store import EmbeddingStore

    store = EmbeddingStore(Path("m.npy"), {"dim": world.embeddings.shape[1]}, [world.embeddings])
    result, _ = run_audit(
        store, world.labels, world.sae, world.bank, world.head, AuditSettings("Male", "Blond_Hair")
    )
    page = render_html(result)
    for section in (
        "Checks",
        "Groups",
        "Concept reliance",
        "Concept activation by group",
        "Dose–response",
    ):
        assert section in page
    assert page.count("<svg") >= 4 and "polyline" in page


def test_every_page_template_forbids_fetches_and_scripts():
    """Each full HTML page (not the included partials) carries the same CSP."""
    from pathlib import Path

    import audit.report

    templates = Path(audit.report.__file__).parent / "templates"
    pages = [p for p in sorted(templates.glob("*.html.j2")) if "<!DOCTYPE html>" in p.read_text()]
    assert len(pages) >= 4
    csp = "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\""
    missing = [p.name for p in pages if csp not in p.read_text()]
    assert not missing, missing


def test_text_that_could_reorder_its_surroundings_is_isolated_in_every_template():
    """Without a browser: each {{ expression }} holding bidi controls or right-to-left letters is
    rendered between U+2068 and U+2069 (a stray U+2069 dropped), plain text as it is."""
    from audit.report.templating import template_env

    page = template_env().from_string("<p>{{ a }} at {{ b }}; {{ c }}</p>")
    rendered = page.render(a="x\u202ey", b="85%", c="\u05e9\u05dc\u05d5\u05dd\u2069z")
    assert rendered == "<p>\u2068x\u202ey\u2069 at 85%; \u2068\u05e9\u05dc\u05d5\u05ddz\u2069</p>"
