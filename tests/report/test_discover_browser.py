"""The discover HTML page in headless Chromium: no console errors, no requests, hostile concept
names shown as text, and a non-blank screenshot."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.audit_worlds import HOSTILE_NAME, hostile_world
from tests.report.test_browser import ARGS, CHROMIUM, pytestmark  # noqa: F401


@pytest.fixture(scope="module")
def page_path(tmp_path_factory) -> Path:
    from audit.discover import DiscoverSettings, published, run_discover
    from audit.fairness import AuditSettings
    from audit.report.discover_html import render_discover_html
    from audit.store import open_store

    root = tmp_path_factory.mktemp("discover-browser")
    paths, world = hostile_world(root)
    store = open_store(paths["store"])
    result, _ = run_discover(store, store.metadata, world.sae, world.bank, world.head,
                             DiscoverSettings(AuditSettings("Male", "")))  # fmt: skip
    assert result.concepts[0].name == HOSTILE_NAME and result.concepts[0].flagged
    page = root / "discover.html"
    page.write_text(render_discover_html(published(result)), encoding="utf-8")
    return page


def test_discover_page_in_headless_chromium(page_path, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    from PIL import Image

    console, errors, requests, dialogs = [], [], [], []
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path), executable_path=CHROMIUM,
            args=ARGS, headless=True, viewport={"width": 1200, "height": 900},
        )  # fmt: skip
        try:
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_path.as_uri(), wait_until="load")
            text = page.inner_text("body")
            scripts = page.evaluate("document.querySelectorAll('script').length")
            shot = tmp_path / "discover.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    assert errors == [] and dialogs == [] and scripts == 0
    assert [m for m in console if m.startswith(("error", "warning"))] == []
    assert requests == [page_path.as_uri()]
    assert HOSTILE_NAME in text and "Re-check as a gate" in text
    image = Image.open(shot).convert("L")
    lo, hi = image.getextrema()
    histogram = image.histogram()
    assert hi - lo > 100 and max(histogram) < 0.97 * sum(histogram)
