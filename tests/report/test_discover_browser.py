"""The discover HTML page in headless Chromium: no console errors, no requests, hostile concept
names shown as text, and a non-blank screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audit_worlds import HOSTILE_NAME, hostile_world
from tests.report.test_browser import (  # noqa: F401
    assert_quiet_and_drawn,
    chromium,
    pytestmark,
    visit,
)


@pytest.fixture(scope="module")
def result(tmp_path_factory):  # type: ignore[no-untyped-def]
    from audit.discover import DiscoverSettings, published, run_discover
    from audit.fairness import AuditSettings
    from audit.store import open_store

    root = tmp_path_factory.mktemp("discover-browser")
    paths, world = hostile_world(root)
    store = open_store(paths["store"])
    found, _ = run_discover(store, store.metadata, world.sae, world.bank, world.head,
                            DiscoverSettings(AuditSettings("Male", "")))  # fmt: skip
    assert found.concepts[0].name == HOSTILE_NAME and found.concepts[0].flagged
    return published(found)


@pytest.fixture(scope="module")
def page_path(result, tmp_path_factory) -> Path:
    from audit.report.discover_html import render_discover_html

    page = tmp_path_factory.mktemp("discover-page") / "discover.html"
    page.write_text(render_discover_html(result), encoding="utf-8")
    return page


def test_discover_page_in_headless_chromium(page_path, tmp_path):
    seen = visit(page_path, tmp_path)
    assert_quiet_and_drawn(seen, page_path)
    assert HOSTILE_NAME in seen["text"] and "Re-check as a gate" in seen["text"]


RLO = "\u202e"
OVERRIDDEN = f"r{RLO}xy"  # a concept name with a right-to-left override inside


def _renamed(result, old: str, new: str):  # type: ignore[no-untyped-def]
    """The result with one concept name replaced everywhere it is written."""
    from dataclasses import replace

    def concept(c):  # type: ignore[no-untyped-def]
        if c.name != old:
            return c
        groups = tuple(replace(g, name=g.name.replace(old, new)) for g in c.groups)
        worst = c.worst_group.replace(old, new)
        return replace(c, name=new, groups=groups, worst_group=worst)

    examples = tuple(replace(e, name=new) if e.name == old else e for e in result.examples)
    return replace(result, concepts=tuple(map(concept, result.concepts)), examples=examples)


# Left edge of every visible character of the first concept's worst-group cell, in text order.
_WORST_GROUP_CHARS = """() => {
  const td = [...document.querySelectorAll('td')].find(
    e => e.textContent.includes('\u202exy') && e.textContent.includes('active'));
  const node = td.firstChild, range = document.createRange(), out = [];
  for (let i = 0; i < node.data.length; i++) {
    range.setStart(node, i); range.setEnd(node, i + 1);
    const r = range.getBoundingClientRect();
    if (r.width > 0) out.push([node.data[i], r.left]);
  }
  return out;
}"""


def test_an_override_in_a_concept_name_does_not_reverse_its_group_value(result, tmp_path):
    """A discover group is named "<target>=<value>, <concept>=active": with an override in the
    concept's name, the page isolates the name and the value apart, so "=active" or
    "=inactive" reads left to right after the name, whose own "xy" keeps its override (laid out
    as "yx"). Isolating the whole part would lay "=active" out reversed, to the name's left."""
    from audit.report.discover_html import render_discover_html

    page_path = tmp_path / "discover.html"
    html = render_discover_html(_renamed(result, HOSTILE_NAME, OVERRIDDEN))
    page_path.write_text(html, encoding="utf-8")
    with chromium(tmp_path, viewport={"width": 1600, "height": 900}) as context:
        page = context.new_page()
        page.goto(page_path.as_uri(), wait_until="load")
        chars = page.evaluate(_WORST_GROUP_CHARS)
    text = "".join(c for c, _ in chars)
    assert text.startswith("Male=") and text.endswith("active") and "rxy=" in text, text
    x = dict(enumerate(left for _, left in chars))
    cut = text.index("rxy=") + 3  # "=" and the value after it
    value = [x[i] for i in range(cut, len(chars))]
    assert value == sorted(value), chars  # the value left to right
    assert min(value) > max(x[i] for i in range(cut)), chars  # after the whole name
    assert x[cut - 2] > x[cut - 1], chars  # the name's own "xy" as "yx"
