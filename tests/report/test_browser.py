"""The HTML report in headless Chromium: no console errors, no network requests, no script
execution from hostile strings, and a non-blank screenshot."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.audit_worlds import HOSTILE_NAME, HOSTILE_VALUE, hostile_world

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]


@contextmanager
def chromium(tmp_path: Path, **options: Any) -> Iterator[Any]:
    """A browser context of Debian's headless Chromium with a fresh profile (its own
    ``--user-data-dir`` under ``tmp_path``), closed on exit; ``options`` go to playwright
    (a viewport). Skips the test where playwright is not installed."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (never `playwright install`)"
    )
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path),
            executable_path=CHROMIUM, args=ARGS, headless=True, **options,
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from audit.fairness import AuditSettings, run_audit
    from audit.report.html import render_html
    from audit.store import open_store

    root = tmp_path_factory.mktemp("browser")
    paths, world = hostile_world(root)
    store = open_store(paths["store"])
    result, _ = run_audit(
        store,
        store.metadata,
        world.sae,
        world.bank,
        world.head,
        AuditSettings("Male", "Blond_Hair"),
    )
    page = root / "audit.html"
    page.write_text(render_html(result), encoding="utf-8")
    return page


def visit(page_path: Path, tmp_path: Path) -> dict[str, Any]:
    """``page_path`` opened in a 1200 × 900 window: its text, how many scripts and images not
    from ``data:`` URIs it has, a full-page screenshot (grayscale), and what happened while it
    loaded — requests, console messages, page errors, dialogs (dismissed)."""
    from PIL import Image

    seen: dict[str, Any] = {"requests": [], "console": [], "errors": [], "dialogs": []}
    with chromium(tmp_path, viewport={"width": 1200, "height": 900}) as context:
        context.on("request", lambda r: seen["requests"].append(r.url))
        page = context.new_page()
        page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
        page.goto(page_path.as_uri(), wait_until="load")
        seen["text"] = page.inner_text("body")
        seen["scripts"] = page.evaluate("document.querySelectorAll('script').length")
        seen["foreign_images"] = page.evaluate(
            "[...document.images].filter(i => !i.src.startsWith('data:')).length"
        )
        shot = tmp_path / f"{page_path.stem}.png"
        page.screenshot(path=str(shot), full_page=True)
    seen["screenshot"] = Image.open(shot).convert("L")
    return seen


def assert_quiet_and_drawn(seen: dict[str, Any], page_path: Path) -> None:
    """No script ran or was present, nothing was fetched but the page, nothing was logged as an
    error or warning, and the screenshot is neither blank nor one colour."""
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert [m for m in seen["console"] if m.startswith(("error", "warning"))] == []
    assert seen["requests"] == [page_path.as_uri()]  # the page itself, nothing else
    assert seen["scripts"] == 0 and seen["foreign_images"] == 0
    lo, hi = seen["screenshot"].getextrema()
    histogram = seen["screenshot"].histogram()
    assert hi - lo > 100 and max(histogram) < 0.97 * sum(histogram)


def test_report_in_headless_chromium(report, tmp_path):
    seen = visit(report, tmp_path)
    assert_quiet_and_drawn(seen, report)
    assert HOSTILE_NAME in seen["text"] and HOSTILE_VALUE in seen["text"]  # shown, not run
    assert seen["screenshot"].size[0] >= 1000 and seen["screenshot"].size[1] > 1500


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: the text after it is laid out right to left


def _bidi_page(root: Path, spurious_values: dict[int, str], class_names: tuple[str, ...]) -> Path:
    """The planted world's audit page with the spurious attribute's values (and the reports'
    class names) replaced by the given strings."""
    from audit.fairness import AuditSettings, run_audit
    from audit.report.html import render_html
    from audit.store import open_store
    from tests.fairness.planted import planted_bias_world, save_planted_world

    world = planted_bias_world(n_samples=2000, seed=0)
    store = open_store(save_planted_world(world, root)["store"])
    labels = world.labels.copy()
    labels["Blond_Hair"] = labels["Blond_Hair"].map(spurious_values)
    settings = AuditSettings("Male", "Blond_Hair", class_names=class_names)
    result, _ = run_audit(store, labels, world.sae, world.bank, world.head, settings)
    page = root / "audit.html"
    page.write_text(render_html(result), encoding="utf-8")
    return page


@pytest.fixture(scope="module")
def bidi_report(tmp_path_factory) -> Path:
    """The planted world with an override inside each value of the spurious attribute."""
    root = tmp_path_factory.mktemp("bidi")
    return _bidi_page(root, {0: f"dark{RLO}xy", 1: f"fair{RLO}xy"}, ())


@pytest.fixture(scope="module")
def bidi_first_report(tmp_path_factory) -> Path:
    """The same with the override in the group name's first part: the target's class names."""
    root = tmp_path_factory.mktemp("bidi_first")
    names = (f"Male=1:man{RLO}xy,Male=0:woman{RLO}xy",)
    return _bidi_page(root, {0: "dark", 1: "fair"}, names)


# Left edge and line (top) of every visible character of the header cell "Δacc (<worst group>)",
# in text order.
_HEADER_CHARS = """() => {
  const th = [...document.querySelectorAll('th')].find(e => e.textContent.startsWith('Δacc ('));
  const node = th.firstChild, range = document.createRange(), out = [];
  for (let i = 0; i < node.data.length; i++) {
    range.setStart(node, i); range.setEnd(node, i + 1);
    const r = range.getBoundingClientRect();
    if (r.width > 0) out.push([node.data[i], r.left, Math.round(r.top)]);
  }
  return out;
}"""


def _header_chars(page_path: Path, tmp_path: Path) -> list[tuple[str, float, int]]:
    with chromium(tmp_path) as context:
        page = context.new_page()
        page.goto(page_path.as_uri(), wait_until="load")
        return page.evaluate(_HEADER_CHARS)


def test_an_override_in_a_label_value_does_not_reorder_the_text_after_it(bidi_report, tmp_path):
    """A value with U+202E is laid out inside its own isolate: the ")" the page writes after the
    group name stays at the right end of its header, after the value's own letters."""
    chars = _header_chars(bidi_report, tmp_path)
    text = "".join(c for c, _, _ in chars)
    assert text.startswith("Δacc (") and text.endswith("xy)") and RLO not in text, text
    lefts = dict(enumerate(x for _, x, _ in chars))
    close = lefts[len(chars) - 1]
    assert all(close > x for i, x in lefts.items() if i < len(chars) - 1), chars
    # Inside the isolate the override still applies: the value's "xy" reads "yx", as written.
    assert lefts[len(chars) - 3] > lefts[len(chars) - 2], chars


def test_an_override_in_a_group_names_first_part_does_not_reorder_the_next_part(
    bidi_first_report, tmp_path
):
    """A group name such as "man<RLO>xy, Blond_Hair=fair" is built in Python before the
    template sees it: each part has its own isolate, so ", Blond_Hair=fair)" reads left to
    right after the first part, which keeps its own override ("xy" laid out as "yx")."""
    chars = _header_chars(bidi_first_report, tmp_path)
    text = "".join(c for c, _, _ in chars)
    assert text.startswith("Δacc (") and text.endswith(")") and RLO not in text, text
    cut = text.index("xy,") + 2  # the first part ends after its "xy" (the space has no width)
    # Reading order: line by line (the narrow header wraps), then left to right.
    first = [(top, x) for _, x, top in chars[len("Δacc (") : cut]]
    rest = [(top, x) for _, x, top in chars[cut:]]
    assert rest == sorted(rest) and len(set(rest)) == len(rest), chars
    assert min(rest) > max(first), chars  # after the whole first part
    assert first[-2][0] == first[-1][0] and first[-2][1] > first[-1][1], chars  # "xy" as "yx"
