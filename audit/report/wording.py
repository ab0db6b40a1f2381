"""Sentences every report shares, so the terminal, HTML, Markdown and JUnit say the same thing."""

from __future__ import annotations

from audit.fairness.result import AuditResult


def verdict_note(result: AuditResult) -> str | None:
    """What a verdict that is not a plain pass or fail means, in one sentence (None for a pass or
    fail with every gated check judged)."""
    if result.verdict == "ungated":
        why = (
            "no gate file was given"
            if not result.gate.get("path")
            else "the gate file bounds no check"
        )
        return (
            f"{why}: nothing was judged, every check below is informational "
            "(give a gate with `gates:` bounds, e.g. --gate examples/gate.yaml, to judge)"
        )
    skipped = skipped_reasons(result)
    if result.verdict == "inconclusive":
        allowed = " (the gate allows it: exit code 0)" if result.exit_code == 0 else ""
        return f"every gated check was skipped, so nothing was judged{allowed}: {skipped}"
    if skipped:
        return f"not judged (skipped): {skipped}"
    return None


def skipped_reasons(result: AuditResult) -> str:
    """``name (reason); …`` for the gated checks that were skipped."""
    reasons = {c.name: c.reason for c in result.checks}
    return "; ".join(f"{name} ({reasons.get(name, 'skipped')})" for name in result.skipped_checks)
