"""Report sections about the classifier itself, for the terminal and Markdown (the HTML page
has them in ``templates/classifier.html.j2``): what was audited, the surrogate that stands in
for the user's own model and how well it agrees with it, and the concept-sliced errors of the
model's own decisions (associations, not causes).

User strings reach rich as :class:`rich.text.Text` (never markup) and Markdown through
:func:`audit.report.markdown.md_escape`.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table
from rich.text import Text

from audit.discover.result import DiscoverResult
from audit.fairness.records import ConceptErrors, ErrorSlice, SlicedErrors, SurrogateRecord
from audit.fairness.result import AuditResult
from audit.report.wording import name_check_note, number_text, p_value_text

#: Concepts shown in the sliced-errors tables (the JSON has them all).
TOP_ERRORS = 10


def classifier_line(result: AuditResult | DiscoverResult) -> str | None:
    """One sentence: what was audited, whose decisions the metrics are, what attribution ran on
    (None for a classifier on embeddings, which needs no explaining)."""
    c = result.classifier
    if c is None or c.kind not in ("image", "predictions"):
        return None
    what = "image model" if c.kind == "image" else "predictions file"
    return (
        f"Classifier: {what} {c.path} ({c.format}, scores read as {c.scores}). Group metrics "
        f"and the gate are {c.decisions} decisions; concept attribution ran on {c.attribution}."
    )


def surrogate_line(s: SurrogateRecord) -> str:
    """The surrogate's agreement with the model, overall and in its worst group."""
    verdict = "meets" if s.passed else "FAILS"
    return (
        f"Surrogate ({s.method}, {s.fit_rows:,} rows): agrees with the model on "
        f"{s.agreement:.1%} of the audited rows (min {s.min_agreement:.0%}); worst group "
        f"{s.worst_group} {s.worst_group_agreement:.1%} (min {s.min_group_agreement:.0%}) — "
        f"{verdict} the integrity threshold."
    )


def _slice_text(s: ErrorSlice) -> str:
    return (
        f"{number_text(s.accuracy_active)} vs {number_text(s.accuracy_inactive)} "
        f"(n {s.n_active}/{s.n_inactive}, q {p_value_text(s.q)})"
    )


def shown_errors(errors: SlicedErrors, top: int = TOP_ERRORS) -> tuple[ConceptErrors, ...]:
    return errors.concepts[:top]


def errors_title(errors: SlicedErrors) -> str:
    return (
        f"Concept-sliced errors of {errors.decisions} decisions ({errors.relation}); accuracy "
        "where the concept is active vs not, per target class"
    )


def errors_table(result: AuditResult, top: int = TOP_ERRORS) -> Table | None:
    errors = result.concept_errors
    if errors is None or not errors.concepts:
        return None
    table = Table(title=errors_title(errors), title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("concept", min_width=12, ratio=1)
    table.add_column("shift", justify="right", no_wrap=True)
    # The interval may break after its comma: in an 80-column CI log an unbroken one pushed
    # the "flag" column off the right edge.
    table.add_column("95% CI", justify="right")
    targets = [s.target for s in errors.concepts[0].slices]
    for t in targets:
        # "target=class" on a line of its own, folded when longer than the column: an
        # ellipsis there ("is_circle=…") hid which class the column was.
        table.add_column(f"{result.data.target}={t}\nactive vs not", ratio=1, overflow="fold")
    table.add_column("flag", no_wrap=True)
    for c in shown_errors(errors, top):
        style = "bold red" if c.flagged else ""
        table.add_row(
            str(c.rank),
            _name_cell(c, style),
            number_text(c.shift, sign=True),
            number_text(c.shift_ci, sign=True),
            *[Text(_slice_text(s)) for s in c.slices],
            Text("yes", style="bold red") if c.flagged else Text("no"),
        )
    return table


def _with_errors_note(c: ConceptErrors) -> str:
    note = name_check_note(c)
    return f"{c.name} ({note})" if note else c.name


def _name_cell(c: ConceptErrors, style: str) -> Text:
    cell = Text(c.name, style=style)
    note = name_check_note(c)
    if note:
        cell.append("\n" + note, style="dim")
    return cell


def markdown_lines(result: AuditResult, escape: Callable[[object], str]) -> list[str]:
    """Markdown paragraphs and a table for the classifier, surrogate and sliced errors."""
    lines: list[str] = []
    line = classifier_line(result)
    if line:
        lines += ["", escape(line)]
    if result.surrogate is not None:
        lines += ["", escape(surrogate_line(result.surrogate))]
    errors = result.concept_errors
    if errors is None or not errors.concepts:
        return lines
    lines += [
        "",
        f"**{escape(errors_title(errors))}**",
        "",
        "| rank | concept | shift | 95% CI | slices (accuracy active vs not) | flagged |",
        "| ---: | --- | ---: | ---: | --- | --- |",
    ]
    for c in shown_errors(errors):
        slices = "; ".join(f"{escape(s.target)}: {_slice_text(s)}" for s in c.slices)
        lines.append(
            f"| {c.rank} | {escape(_with_errors_note(c))} | {number_text(c.shift, sign=True)} | "
            f"{number_text(c.shift_ci, sign=True)} | {slices} | {'**yes**' if c.flagged else 'no'} |"
        )
    return lines
