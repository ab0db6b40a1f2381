"""A Markdown summary of an audit (for pull requests and ``$GITHUB_STEP_SUMMARY``).

Every string that comes from the user's data is escaped: HTML-significant characters become
entities and Markdown punctuation is backslash-escaped, so a concept named
``<script>alert(1)</script>`` renders as text and cannot break a table.
"""

from __future__ import annotations

import re

from audit.fairness.result import AuditResult, ConceptFinding
from audit.report.wording import (
    concept_note,
    direction_note,
    group_name,
    name_checks_line,
    number_text,
    p_value_text,
    verdict_note,
)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
VERDICT_MARK = {"pass": "✅ PASS", "fail": "❌ FAIL", "error": "⚠️ ERROR",
                "ungated": "ℹ️ UNGATED", "inconclusive": "❔ INCONCLUSIVE"}  # fmt: skip
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


def _with_note(result: AuditResult, c: ConceptFinding) -> str:
    note = concept_note(result, c)
    return f"{c.label} ({note})" if note else c.label


def render_markdown(result: AuditResult) -> str:
    data = result.data
    verdict = VERDICT_MARK.get(result.verdict, md_escape(result.verdict))
    lines = [
        f"## msae-audit: {verdict}",
        "",
        f"Target **{md_escape(data.target)}** across **{md_escape(data.spurious)}**; "
        f"{data.rows_audited:,} rows audited ({md_escape(data.split)}). "
        f"Worst group **{md_escape(group_name(result, result.worst_group))}**: accuracy "
        f"{number_text(result.worst_group_accuracy)}; flagged concepts: "
        f"**{result.flagged_concepts}**.",
        "",
    ]
    note = verdict_note(result)
    if note:
        lines += [f"> {md_escape(note)}", ""]
    if result.error:
        lines += [f"> **Integrity check failed.** {md_escape(result.error)}", ""]
    lines += ["| check | value | threshold | status |", "| --- | ---: | ---: | --- |"]
    for c in result.checks:
        lines.append(
            f"| {md_escape(c.name)} | {number_text(c.value, 4)} | {number_text(c.threshold, 4)} | "
            f"{md_escape(c.status)} |"
        )
    lines += ["", "| group | n | accuracy | 95% CI |", "| --- | ---: | ---: | ---: |"]
    for g in result.groups:
        lines.append(
            f"| {md_escape(group_name(result, g.name))} | {g.n} | {number_text(g.accuracy)} | {number_text(g.ci)} |"
        )
    concepts = result.concepts[:TOP_CONCEPTS]
    if concepts:
        lines += [
            "",
            "| rank | concept | ΔWGA | 95% CI | q | flagged |",
            "| ---: | --- | ---: | ---: | ---: | --- |",
        ]
        for c in concepts:
            lines.append(
                f"| {c.rank} | {md_escape(_with_note(result, c))} | {number_text(c.delta_wga, 4)} | "
                f"{number_text(c.ci, 4)} | {p_value_text(c.q)} | {'**yes**' if c.flagged else 'no'} |"
            )
    for line in (direction_note(result), name_checks_line(result.concepts)):
        if line:
            lines += ["", md_escape(line)]
    from audit.report.classifier_sections import markdown_lines

    lines += markdown_lines(result, md_escape)
    lines += [line for note in result.notes for line in ("", f"Note: {md_escape(note)}")]
    return "\n".join(lines) + "\n"
