"""Every concept of the HTML report's top table shows its most-activating images, inline and
lazy-loaded, and their edited margins are the classifier's."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from audit.fairness import AuditSettings, run_audit
from audit.fairness.stages.focus import TABLE_CONCEPTS
from audit.report.html import render_html
from tests.fairness.planted import ROLE_NAMES, planted_bias_world
from tests.fairness.test_planted import memory_store

SPURIOUS = ROLE_NAMES["spurious"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    world = planted_bias_world(n_samples=1500, seed=3)
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(len(world.labels)):
        path = root / f"{i}.png"
        Image.new("RGB", (8, 8), (i % 256, 80, 160)).save(path)
        paths.append(str(path))
    world.labels["path"] = paths
    settings = AuditSettings("Male", "Blond_Hair", ablation="zero")
    result, _ = run_audit(memory_store(world.embeddings), world.labels, world.sae, world.bank,
                          world.head, settings)  # fmt: skip
    return world, result


def test_every_table_concept_has_examples_with_exact_margins(audited):
    world, result = audited
    by_latents = {tuple(ex.latents): ex for ex in result.examples}
    table = result.concepts[:TABLE_CONCEPTS]
    assert len(table) > 3 and all(tuple(c.latents) in by_latents for c in table)
    for c in table:
        rows = by_latents[tuple(c.latents)].top_activating
        assert rows, c.label
        acts = [r.activation for r in rows]
        assert acts == sorted(acts, reverse=True) and acts[0] > 0
        if len(c.latents) == 1:  # zero ablation moves the margin by −β_j z_j exactly
            beta = world.weights[c.latents[0]]
            for r in rows:
                moved = r.margin_after - r.margin_before
                assert moved == pytest.approx(-beta * r.activation, abs=1e-4), c.label


def test_table_shows_lazy_inline_thumbnails_for_every_concept(audited):
    _, result = audited
    page = render_html(result)
    table = page[page.index("most-activating images") :]
    table = table[: table.index("</table>")]
    rows = table.split("<tr")[1:]
    assert len(rows) == min(TABLE_CONCEPTS, len(result.concepts))
    for row in rows:
        images = re.findall(r"<img [^>]*>", row)
        assert images, row[:200]
        assert all('loading="lazy"' in i and 'src="data:image/jpeg;base64,' in i for i in images)
    assert not re.search(r'src="(?!data:)', page)  # still one self-contained file


def test_only_the_concept_that_rides_on_the_attribute_is_marked(audited):
    """The planted concept is active exactly on Blond_Hair = 1, so its strongest rows all carry
    it; the decoy follows the target and the nuisance and background concepts nothing."""
    from audit.report.html import table_notes

    _, result = audited
    table = result.concepts[:TABLE_CONCEPTS]
    notes = dict(zip([c.name for c in table], table_notes(result, table), strict=True))
    assert notes[SPURIOUS].startswith("rides on Blond_Hair=1: 100% of its strongest rows")
    assert [n for n, note in notes.items() if note] == [SPURIOUS]
    assert notes[SPURIOUS] in render_html(result)


def test_every_report_shows_the_same_table_notes(audited):
    """The terminal and Markdown tables carry the HTML's note under a concept's name."""
    from rich.console import Console

    from audit.report.html import table_notes
    from audit.report.markdown import md_escape, render_markdown
    from audit.report.terminal import render_terminal

    _, result = audited
    table = result.concepts[:TABLE_CONCEPTS]
    notes = [n for n in table_notes(result, table) if n]
    assert notes
    console = Console(record=True, width=200)
    render_terminal(result, console)
    terminal, markdown = console.export_text(), render_markdown(result)
    for note in notes:
        assert note in terminal and md_escape(note) in markdown, note


def test_the_demo_reports_that_red_rides_on_red_and_joins_every_note():
    """The golden demo lists "red" first: its strongest rows are all red, and the table says so.
    Its other notes — beyond stronger concepts, a name refuted on the audited images — join
    the same cell, "; "-separated, in the terminal, Markdown and HTML alike."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from rich.console import Console

    from audit.fairness import parse_result
    from audit.fairness.result import BeyondEffect
    from audit.report.html import table_notes
    from audit.report.markdown import md_escape, render_markdown
    from audit.report.terminal import render_terminal

    golden = Path(__file__).parents[1] / "golden" / "expected" / "demo.json"
    result = parse_result(json.loads(golden.read_text(encoding="utf-8")))
    table = result.concepts[:TABLE_CONCEPTS]
    notes = {c.name: n for c, n in zip(table, table_notes(result, table), strict=True)}
    assert notes["red"] == "rides on is_red=1: 100% of its strongest rows (50% overall)"
    red = result.concepts[0]
    assert red.name == "red" and red.flagged and red.evidence and red.evidence.holds
    refuted = replace(
        red,
        flagged=False,
        evidence=replace(red.evidence, audited_auc=0.61, audited_auc_upper=0.64, holds=False),
        beyond=BeyondEffect(("stamp",), 0.0142, 0.6, 0.057),
    )
    result = replace(result, concepts=(refuted, *result.concepts[1:]))
    note = table_notes(result, (refuted,))[0]
    assert note == (
        "name not confirmed on these images: AUC 0.610 (at most 0.640) < 0.881; rides on "
        "is_red=1: 100% of its strongest rows (50% overall); beyond stamp: ΔWGA +0.014, p 0.057"
    )
    console = Console(record=True, width=400)
    render_terminal(result, console)
    assert note in console.export_text() and md_escape(note) in render_markdown(result)


def test_discover_reports_show_the_same_beyond_note(tmp_path):
    """The discover page words "beyond …" as the terminal and Markdown do (one function)."""
    from dataclasses import replace

    from rich.console import Console

    from audit.fairness.result import BeyondEffect
    from audit.report.discover import render_discover_terminal
    from audit.report.discover_html import render_discover_html
    from audit.report.wording import beyond_note
    from tests.discover.test_planted import discover_world

    _, result = discover_world(tmp_path, seed=0)
    second = replace(result.concepts[1], beyond=BeyondEffect(("first <b>",), 0.0142, 0.6, 0.057))
    result = replace(result, concepts=(result.concepts[0], second, *result.concepts[2:]))
    note = beyond_note(second)
    assert note == "beyond first <b>: ΔWGA +0.014, p 0.057"
    console = Console(record=True, width=200)
    render_discover_terminal(result, console)
    assert note in console.export_text()
    assert "beyond first &lt;b&gt;: ΔWGA +0.014, p 0.057" in render_discover_html(result)


def _hostile_images(root) -> list[str]:
    """Paths a store's metadata may hold that are no picture to embed: a decompression bomb
    (PIL refuses it with an error that is not an OSError), a FIFO (opening it blocks), a
    device, an SVG with a script, text, URLs and a path that leaves the folder."""
    import os

    bomb = root / "bomb.png"
    Image.new("1", (20000, 10000)).save(bomb)  # 200 M pixels in a 24 kB file
    fifo = root / "fifo.png"
    os.mkfifo(fifo)
    svg = root / "x.png"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)'
                   '</script><image href="http://127.0.0.1:9/x.png"/></svg>')  # fmt: skip
    return [str(bomb), str(fifo), "/dev/zero", str(svg), "/etc/passwd",
            "http://127.0.0.1:9/x.png", "file:///etc/passwd", "../../../../etc/passwd"]  # fmt: skip


def test_thumbnails_of_hostile_paths_are_left_out(tmp_path):
    import signal

    from audit.report.templating import thumbnail

    good = tmp_path / "good.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(good)

    def blocked(*_):  # type: ignore[no-untyped-def]
        raise TimeoutError("opening a path blocked")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)  # a blocking open must fail the test, not hang it
    try:
        assert [thumbnail(p) for p in _hostile_images(tmp_path)] == [None] * 8
        assert thumbnail(str(good)).startswith("data:image/jpeg;base64,")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_report_renders_when_example_images_are_hostile(audited, tmp_path):
    from dataclasses import replace

    _, result = audited
    hostile = _hostile_images(tmp_path)

    def spoil(rows):  # type: ignore[no-untyped-def]
        return tuple(replace(r, path=hostile[i % len(hostile)]) for i, r in enumerate(rows))

    examples = tuple(
        replace(ex, top_activating=spoil(ex.top_activating), flipped=spoil(ex.flipped))
        for ex in result.examples
    )
    page = render_html(replace(result, examples=examples))
    assert "<img" not in page  # nothing to show, and nothing but data: URIs ever
    assert "127.0.0.1" not in page and "<svg xmlns" not in page


def test_a_sixteen_bit_grey_thumbnail_looks_like_its_eight_bit_copy(tmp_path):
    """Thumbnails convert images as embedding does: 16-bit grey is scaled, not clipped white."""
    import base64
    import io

    import numpy as np

    from audit.report.templating import thumbnail

    grey = np.random.default_rng(5).integers(0, 256, size=(40, 48), dtype=np.uint16)
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(grey * 257).save(tmp_path / "sixteen.png")

    def pixels(name: str) -> np.ndarray:
        uri = thumbnail(str(tmp_path / name))
        assert uri is not None
        data = base64.b64decode(uri.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)

    assert np.abs(pixels("sixteen.png") - pixels("eight.png")).mean() < 2  # JPEG noise only
