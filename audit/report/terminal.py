"""Rich tables for the terminal: verdict, checks, groups and the top concepts.

User strings are passed as :class:`rich.text.Text`, never parsed as console markup.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from audit.fairness.result import AuditResult, Check
from audit.report.wording import (
    concept_note,
    direction_note,
    group_name,
    name_checks_line,
    number_text,
    p_value_text,
    verdict_note,
)

STATUS_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold dark_orange",
                "skipped": "dim", "info": "cyan", "ungated": "bold cyan",
                "inconclusive": "bold yellow"}  # fmt: skip


def verdict_panel(result: AuditResult) -> Panel:
    verdict = result.verdict
    text = Text()
    text.append(f" {verdict.upper()} ", style=f"reverse {STATUS_STYLE.get(verdict, '')}")
    text.append("  ")
    text.append(f"{result.data.target} across {result.data.spurious}: ")
    worst = group_name(result, result.worst_group)
    text.append(f"worst group {worst} at {number_text(result.worst_group_accuracy)}, ")
    text.append(f"{result.flagged_concepts} flagged concept(s), exit code {result.exit_code}")
    body = [text]
    note = verdict_note(result)
    if note:
        body.append(Text(note, style="yellow" if result.verdict != "ungated" else "cyan"))
    if result.error:
        body.append(Text(result.error, style="dark_orange"))
    return Panel(Group(*body), title="msae-audit", expand=False)


def _threshold(check: Check) -> str:
    t = check.threshold
    if isinstance(check.value, int) and isinstance(t, float) and t.is_integer():
        return str(int(t))  # counts (flagged_concepts) get integer thresholds
    return number_text(t, 4)


def checks_table(result: AuditResult) -> Table:
    table = Table(title="Checks", title_justify="left")
    for col, just in (
        ("check", "left"),
        ("value", "right"),
        ("threshold", "right"),
        ("status", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("why", justify="left")
    for c in result.checks:
        table.add_row(
            Text(c.name),
            number_text(c.value, 4) if isinstance(c.value, float) else number_text(c.value),
            _threshold(c),
            Text(c.status, style=STATUS_STYLE.get(c.status, "")),
            Text(c.reason, style="dim"),
        )
    return table


def groups_table(result: AuditResult) -> Table:
    table = Table(title="Groups (target × attribute)", title_justify="left")
    for col in ("group", "n", "accuracy", "95% CI", "TPR", "FPR"):
        table.add_column(col, justify="left" if col == "group" else "right", no_wrap=col != "group")
    for g in result.groups:
        style = "bold red" if g.name == result.worst_group else ""
        name = Text(group_name(result, g.name), style=style)
        table.add_row(
            name, number_text(g.n), number_text(g.accuracy), number_text(g.ci), number_text(g.tpr), number_text(g.fpr),
        )  # fmt: skip
    return table


def concept_cell(name: str, style: str, note: str | None) -> Text:
    """A concept's name, with its note (rides on, beyond stronger concepts) below it, dim."""
    cell = Text(name, style=style)
    if note:
        cell.append(f"\n{note}", style="dim")
    return cell


def concepts_table(result: AuditResult, top: int = 10) -> Table:
    n = len(result.concepts)
    table = Table(title=f"Top concepts by ΔWGA (of {n} listed)", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("concept", min_width=18, ratio=1)
    for col in ("ΔWGA", "95% CI", "q", "flag", "flips"):
        table.add_column(col, justify="left" if col == "flag" else "right", no_wrap=True)
    for c in result.concepts[:top]:
        style = "bold red" if c.flagged else ("" if c.tested else "italic dim")
        lo, hi = c.ci
        table.add_row(
            str(c.rank),
            concept_cell(c.label, style, concept_note(result, c)),
            f"{c.delta_wga:+.3f}",
            f"[{lo:+.3f}, {hi:+.3f}]",
            p_value_text(c.q),
            Text("yes", style="bold red") if c.flagged else Text("no"),
            f"{100 * c.flip_rate:.1f}%",
        )
    return table


def render_terminal(result: AuditResult, console: Console, top: int = 10) -> None:
    from audit.report import classifier_sections as own

    console.print(verdict_panel(result))
    line = own.classifier_line(result)
    if line:
        console.print(Text(line))
    if result.surrogate is not None:
        style = "" if result.surrogate.passed else "bold dark_orange"
        console.print(Text(own.surrogate_line(result.surrogate), style=style))
    console.print(groups_table(result))
    if result.concepts:
        console.print(concepts_table(result, top))
    for line in (direction_note(result), name_checks_line(result.concepts)):
        if line:
            console.print(Text(line))
    errors = own.errors_table(result, top)
    if errors is not None:
        console.print(errors)
    console.print(checks_table(result))
    for note in result.notes:
        console.print(Text(f"Note: {note}", style="dim"))
