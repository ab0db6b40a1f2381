"""JUnit XML: one test case per check, so CI systems show the gate like a test suite.

Built with :mod:`xml.etree.ElementTree`, which escapes text and attributes; characters that XML
1.0 cannot hold at all (most control characters) are replaced first.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from audit.fairness.result import AuditResult, Check
from audit.report.wording import verdict_note

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: object) -> str:
    """Text safe for XML 1.0 (escaping itself is left to ElementTree).

    >>> xml_text("a\\x00b\\x1bc")
    'a\\ufffdb\\ufffdc'
    """
    return _INVALID_XML.sub("\ufffd", str(value))


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _detail(result: AuditResult, c: Check, flagged: list[str]) -> str:
    detail = f"value {_fmt(c.value)}, threshold {_fmt(c.threshold)}: {c.reason}"
    if c.name == "flagged_concepts" and flagged:
        detail += "; flagged: " + ", ".join(flagged)
    if c.name == "worst_group_accuracy":
        detail += f"; worst group: {result.worst_group}"
    return detail


def render_junit(result: AuditResult) -> str:
    checks = result.checks
    suite_name = f"msae-audit: {result.data.target} vs {result.data.spurious}"
    failures = sum(1 for c in checks if c.status == "fail")
    skipped = sum(1 for c in checks if c.status == "skipped")
    suites = ET.Element(
        "testsuites", name="msae-audit", tests=str(len(checks)), failures=str(failures)
    )
    suite = ET.SubElement(
        suites, "testsuite", name=xml_text(suite_name), tests=str(len(checks)),
        failures=str(failures), errors="0", skipped=str(skipped),
    )  # fmt: skip
    props = ET.SubElement(suite, "properties")
    for key in ("verdict", "worst_group", "worst_group_accuracy", "flagged_concepts", "seed"):
        ET.SubElement(props, "property", name=key, value=xml_text(_fmt(getattr(result, key))))
    flagged = [c.label for c in result.concepts if c.flagged]
    for c in checks:
        case = ET.SubElement(
            suite, "testcase", classname="msae-audit.checks", name=xml_text(c.name)
        )
        detail = _detail(result, c, flagged)
        if c.status == "fail":
            failure = ET.SubElement(case, "failure", message=xml_text(detail), type="GateFailed")
            failure.text = xml_text(detail)
        elif c.status == "skipped":
            ET.SubElement(case, "skipped", message=xml_text(c.reason))
        else:
            out = ET.SubElement(case, "system-out")
            out.text = xml_text(f"{c.status}: {detail}")
    note = verdict_note(result)
    if note:
        out = ET.SubElement(suite, "system-out")
        out.text = xml_text(f"verdict {result.verdict}: {note}")
    if result.error:
        err = ET.SubElement(suite, "system-err")
        err.text = xml_text(result.error)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
