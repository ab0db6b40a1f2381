"""A Markdown summary of an audit (for pull requests and ``$GITHUB_STEP_SUMMARY``).

Every string that comes from the user's data is escaped: HTML-significant characters become
entities and Markdown punctuation is backslash-escaped, so a concept named
``<script>alert(1)</script>`` renders as text and cannot break a table.
"""

from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
VERDICT_MARK = {"pass": "✅ PASS", "fail": "❌ FAIL", "error": "⚠️ ERROR"}
TOP_CONCEPTS = 10


def md_escape(value: object) -> str:
    """Plain text that Markdown and HTML renderers show verbatim.

    >>> md_escape("<script>alert(1)</script>")
    '&lt;script&gt;alert\\\\(1\\\\)&lt;/script&gt;'
    >>> md_escape("a|b\\nc")
    'a\\\\|b c'
    """
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _num(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return "[" + ", ".join(_num(v, digits) for v in value) + "]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def render_markdown(result: dict) -> str:
    data = result.get("data") or {}
    lines = [
        f"## msae-audit: {VERDICT_MARK.get(result.get('verdict', ''), md_escape(result.get('verdict')))}",
        "",
        f"Target **{md_escape(data.get('target'))}** across **{md_escape(data.get('spurious'))}**; "
        f"{data.get('rows_audited', 0):,} rows audited ({md_escape(data.get('split', ''))}). "
        f"Worst group **{md_escape(result.get('worst_group'))}**: accuracy "
        f"{_num(result.get('worst_group_accuracy'))}; flagged concepts: "
        f"**{result.get('flagged_concepts', 0)}**.",
        "",
    ]
    if result.get("error"):
        lines += [f"> **Integrity check failed.** {md_escape(result['error'])}", ""]
    lines += ["| check | value | threshold | status |", "| --- | ---: | ---: | --- |"]
    for c in result.get("checks", []):
        lines.append(
            f"| {md_escape(c['name'])} | {_num(c['value'], 4)} | {_num(c['threshold'], 4)} | "
            f"{md_escape(c['status'])} |"
        )
    lines += ["", "| group | n | accuracy | 95% CI |", "| --- | ---: | ---: | ---: |"]
    for g in result.get("groups", []):
        lines.append(
            f"| {md_escape(g['name'])} | {g['n']} | {_num(g['accuracy'])} | {_num(g['ci'])} |"
        )
    concepts = result.get("concepts", [])[:TOP_CONCEPTS]
    if concepts:
        lines += [
            "",
            "| rank | concept | ΔWGA | 95% CI | q | flagged |",
            "| ---: | --- | ---: | ---: | ---: | --- |",
        ]
        for c in concepts:
            lines.append(
                f"| {c['rank']} | {md_escape(c['label'])} | {_num(c['delta_wga'], 4)} | "
                f"{_num(c['ci'], 4)} | {_num(c['q'], 4)} | {'**yes**' if c['flagged'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"
