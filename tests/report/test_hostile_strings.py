"""Hostile strings everywhere a user can put one — column names, label values, ids, image file
names, concept names, closest words and alternatives, the bank's name, every input's file
name, the gate's allowlist — through ``msae-audit audit`` into HTML, Markdown, JUnit and the
terminal; then the HTML page (and the ``compare`` page, with hostile SAE folder names) in
headless Chromium with every request, console message and dialog recorded.

The invariant for HTML and JUnit: hostile input adds no element and no attribute that the same
report of a harmless world does not have, and every hostile string comes back as text.
"""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.concepts import save_bank
from audit.report.junit import xml_text
from audit.sae import save_sae
from audit.store import write_store
from tests.fairness.planted import ROLE_NAMES, planted_bias_world, save_head
from tests.report.test_browser import CHROMIUM, chromium

HOSTILE = {
    "script": "<script>alert(1)</script>",
    "attr": '"><img src=x onerror=alert(2)>',
    "markdown": "a|b `code` **bold** [link](https://example.com) # h",
    "cdata": "]]><evil/>&amp;",
    "control": "ctrl\x1b[31m\x07end",
    "svg": "<svg onload=alert(3)>",
    "quote": "it's \"quoted\" 'x' & <b>bold</b>",
}
TARGET_COL = 'Male"><b>T</b>'
SPURIOUS_COL = "Blond|`S`]]>"
TARGET_VALUES = ("<i>no</i>", "<i>yes</i>")  # sort order keeps 0 < 1
ATTRIBUTE_VALUES = ('"><img src=x onerror=alert(4)>', "<script>alert(5)</script>")  # ditto


def _names_for_roles() -> dict[str, str]:
    return {
        ROLE_NAMES["spurious"]: HOSTILE["script"],
        ROLE_NAMES["target"]: HOSTILE["cdata"],
        ROLE_NAMES["decoy"]: HOSTILE["markdown"],
        ROLE_NAMES["nuisance"]: HOSTILE["control"],
        "glasses": HOSTILE["quote"],
    }


def _write_world(root: Path, hostile: bool) -> dict[str, Path]:
    """The planted world as files; with ``hostile`` every user-visible string is hostile."""
    world = planted_bias_world(n_samples=2000, seed=0)
    bank = copy.deepcopy(world.bank)
    labels = world.labels.copy()
    images = root / ("img<svg onload=alert(6)>" if hostile else "img")
    images.mkdir(parents=True)
    names = []
    for i in range(len(labels)):
        name = f'{i}"><img src=x onerror=alert(7)>.png' if hostile and i < 40 else f"{i}.png"
        names.append(name)
    for name in names[:40]:  # enough for the example galleries
        Image.new("RGB", (8, 8), (200, 30, 30)).save(images / name)
    labels["path"] = [str(images / n) for n in names]
    if hostile:
        renames = _names_for_roles()
        for c in bank.concepts:
            if c.name in renames:
                c.name = renames[c.name]
            if c.name is None:
                c.closest = HOSTILE["svg"]
            c.alternatives = [(HOSTILE["attr"], 0.1), (HOSTILE["cdata"], 0.05)]
        bank.name = HOSTILE["svg"]
        labels["id"] = [f"<script>alert({i})</script>" for i in range(len(labels))]
        labels["Male"] = labels["Male"].map(dict(enumerate(TARGET_VALUES)))
        labels["Blond_Hair"] = labels["Blond_Hair"].map(dict(enumerate(ATTRIBUTE_VALUES)))
        labels = labels.rename(columns={"Male": TARGET_COL, "Blond_Hair": SPURIOUS_COL})
    tag = "<script>" if hostile else ""
    store = write_store(
        root / f"store{tag}", world.embeddings, model="planted-atoms", modality="image"
    )
    labels_path = root / f"labels]]>{'|x' if hostile else ''}.csv"
    labels.to_csv(labels_path, index=False)
    sae = save_sae(world.sae, root / f'sae"{tag}')
    bank_path = save_bank(bank, root / f'bank"{"><img src=x>" if hostile else ""}.yaml')
    head = save_head(world.head, root / f"head`x`{'|<b>' if hostile else ''}.npz")
    allow = [HOSTILE["quote"], HOSTILE["attr"]] if hostile else ["glasses"]
    gate = root / f"gate{tag}.yaml"
    gate.write_text(
        "gates:\n  worst_group_accuracy: {min: 0.8}\n  flagged_concepts: {max: 0}\n"
        f"concepts: {{allowlist: {json.dumps(allow)}}}\nbootstrap: {{samples: 200, seed: 0}}\n",
        encoding="utf-8",
    )
    return {"store": store.path, "labels": labels_path, "sae": sae, "bank": bank_path,
            "head": head, "gate": gate}  # fmt: skip


def _run_audit(cli, paths: dict[str, Path], out: Path, hostile: bool):
    target, spurious = (TARGET_COL, SPURIOUS_COL) if hostile else ("Male", "Blond_Hair")
    result = cli(
        "audit", "--embeddings", paths["store"], "--labels", paths["labels"],
        "--target", target, "--spurious", spurious, "--sae", paths["sae"],
        "--bank", paths["bank"], "--classifier", paths["head"], "--gate", paths["gate"],
        "--json", out / "a.json", "--html", out / "a.html", "--junit", out / "a.xml",
        "--markdown", out / "a.md", "-q",
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    return result


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """``(hostile outputs, harmless outputs)``: folders with a.json/html/xml/md, and stdout."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from audit.cli import run

    class Result:
        def __init__(self, code, out, err):
            self.exit_code, self.stdout, self.stderr = code, out, err

    def cli(*args):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = run([str(a) for a in args])
        return Result(code, out.getvalue(), err.getvalue())

    import os

    made = {}
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "300"  # the terminal tables at full width (no ellipses)
    for hostile in (True, False):
        root = tmp_path_factory.mktemp("hostile" if hostile else "harmless")
        paths = _write_world(root / "in", hostile)
        out = root / "out"
        made[hostile] = (out, _run_audit(cli, paths, out, hostile).stdout, paths)
    if columns is None:
        del os.environ["COLUMNS"]
    else:
        os.environ["COLUMNS"] = columns
    return made


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[tuple[str, str]] = set()
        self.sources: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add((tag, name))
            if name in ("src", "href", "xlink:href", "action", "srcset"):
                self.sources.append(value or "")

    def handle_data(self, data):
        self.text.append(data)


def _markup(path: Path) -> _Markup:
    parser = _Markup()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _visible(text: str) -> str:
    """How a hostile string survives: control characters other than tab/newline dropped or
    replaced, whitespace collapsed (the renderers may do either)."""
    return " ".join(re.sub(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]", "", text).split())


def test_html_adds_no_markup_and_shows_every_string(reports):
    (hostile_out, _, _), (harmless_out, _, _) = reports[True], reports[False]
    evil, good = _markup(hostile_out / "a.html"), _markup(harmless_out / "a.html")
    assert evil.tags <= good.tags, evil.tags - good.tags
    assert evil.attributes <= good.attributes, evil.attributes - good.attributes
    assert not any(name.startswith("on") for _, name in evil.attributes)
    assert "script" not in evil.tags and all(s.startswith("data:") for s in evil.sources)
    text = _visible(" ".join(evil.text))
    result = json.loads((hostile_out / "a.json").read_text(encoding="utf-8"))
    shown = [c["label"] for c in result["concepts"][:25]] + [g["name"] for g in result["groups"]]
    for value in [*shown, TARGET_COL, SPURIOUS_COL, *ATTRIBUTE_VALUES, HOSTILE["script"]]:
        assert _visible(value) in text, value
    page = (hostile_out / "a.html").read_text(encoding="utf-8")
    assert 'http-equiv="Content-Security-Policy"' in page
    assert "default-src 'none'" in page


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------


def _unescaped(text: str, char: str) -> int:
    return len(re.findall(rf"(?<!\\){re.escape(char)}", text))


def test_markdown_tables_hold_and_nothing_renders_as_html(reports):
    text = (reports[True][0] / "a.md").read_text(encoding="utf-8")
    for raw in ("<script", "<img", "<svg", "<b>", "<i>", "<evil"):
        assert raw not in text, raw
    assert _unescaped(text, "`") == 0  # no code spans opened by data
    assert "[link](" not in text  # no links made by data
    table: list[int] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(_unescaped(line, "|"))
        elif table:
            assert len(set(table)) == 1, table  # every row has the header's cell count
            table = []
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in text


# ------------------------------------------------------------------------------------------
# JUnit
# ------------------------------------------------------------------------------------------


def test_junit_parses_and_adds_no_elements(reports):
    (hostile_out, _, _), (harmless_out, _, _) = reports[True], reports[False]
    evil = ET.parse(hostile_out / "a.xml").getroot()
    good = ET.parse(harmless_out / "a.xml").getroot()
    assert {e.tag for e in evil.iter()} <= {e.tag for e in good.iter()}
    assert {(e.tag, a) for e in evil.iter() for a in e.attrib} <= {
        (e.tag, a) for e in good.iter() for a in e.attrib
    }
    texts = " ".join(
        [*(e.text or "" for e in evil.iter()), *(v for e in evil.iter() for v in e.attrib.values())]
    )
    assert xml_text(TARGET_COL) in texts and xml_text(SPURIOUS_COL) in texts
    assert HOSTILE["script"] in texts  # the flagged shortcut, verbatim once parsed
    assert "]]>" in texts  # CDATA terminators are plain text


# ------------------------------------------------------------------------------------------
# Terminal and JSON
# ------------------------------------------------------------------------------------------


def test_terminal_and_json_keep_the_strings_verbatim(reports):
    out, stdout, _ = reports[True]
    assert "<script>alert(1)</script>" in stdout  # rich markup is escaped, not interpreted
    assert "\x1b" not in stdout and "\x07" not in stdout  # nothing a terminal would act on
    assert "ctrl\ufffd[31mend" in stdout  # the control name, shown harmlessly (rich drops BEL)
    result = json.loads((out / "a.json").read_text(encoding="utf-8"))
    names = {c["name"] for c in result["concepts"]}
    assert HOSTILE["script"] in names and HOSTILE["control"] in names
    assert result["data"]["target"] == TARGET_COL


# ------------------------------------------------------------------------------------------
# Headless Chromium
# ------------------------------------------------------------------------------------------


def _open_in_chromium(pages: list[Path], tmp_path: Path) -> list[dict]:
    seen: list[dict] = []
    with chromium(tmp_path) as context:
        context.on("request", lambda r: seen[-1]["requests"].append(r.url))
        for path in pages:
            log = {"requests": [], "console": [], "errors": [], "dialogs": []}
            seen.append(log)
            page = context.new_page()
            page.on("console", lambda m, log=log: log["console"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e, log=log: log["errors"].append(str(e)))
            page.on("dialog", lambda d, log=log: (log["dialogs"].append(d.message), d.dismiss()))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(300)  # let any (injected) timer or handler fire
            log["text"] = page.inner_text("body")
            log["scripts"] = page.evaluate("document.scripts.length")
            log["handlers"] = page.evaluate(
                "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
                ".filter(a => a.name.startsWith('on')).length"
            )
            log["uri"] = path.as_uri()
            page.close()
    return seen


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_hostile_pages_in_headless_chromium_make_no_requests(reports, cli, tmp_path):
    out, _, paths = reports[True]
    # The compare page too, with SAE folder names that are markup.
    sae_a = shutil.copytree(paths["sae"], tmp_path / "<script>alert(8)</script>")
    sae_b = shutil.copytree(paths["sae"], tmp_path / '"><img src=x onerror=alert(9)>')
    r = cli("compare", sae_a, sae_b, "--embeddings", paths["store"], "--html",
            tmp_path / "compare.html", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    logs = _open_in_chromium([out / "a.html", tmp_path / "compare.html"], tmp_path)
    for log in logs:
        own = [u for u in log["requests"] if u != log["uri"] and not u.startswith("data:")]
        assert own == [], own  # nothing fetched: no network, no other file
        assert log["dialogs"] == [] and log["errors"] == [], log
        assert [m for m in log["console"] if m.startswith(("error", "warning"))] == []
        assert log["scripts"] == 0 and log["handlers"] == 0
    audit_text, compare_text = logs[0]["text"], logs[1]["text"]
    assert HOSTILE["script"] in audit_text and ATTRIBUTE_VALUES[0] in audit_text
    assert "<script>alert(8)</script>" in compare_text
    assert html.escape("<") not in audit_text  # shown once, not double-escaped


def test_the_worlds_differ_only_in_their_strings(reports):
    """The harmless twin is the same data, so comparing markup sets is meaningful."""
    a = json.loads((reports[True][0] / "a.json").read_text(encoding="utf-8"))
    b = json.loads((reports[False][0] / "a.json").read_text(encoding="utf-8"))
    assert [g["n"] for g in a["groups"]] == [g["n"] for g in b["groups"]]
    assert np.allclose([c["delta_wga"] for c in a["concepts"]],
                       [c["delta_wga"] for c in b["concepts"]])  # fmt: skip
