"""A discover run from files to report files, and its terminal tables and JUnit XML::

    from audit.report.discover import discover_files
    outcome = discover_files("store/", sae="sae/", bank="bank.yaml", classifier="head.npz",
                             target="shape", out_dir="reports")
    outcome.result.concepts[0].name   # the top-ranked concept

The JSON (``"schema": "msae-audit/discover"``) is the source of truth; the HTML page, the JUnit
XML and the terminal tables are rendered from the same published result.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import yaml
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from audit.discover import DiscoverResult, DiscoverSettings, dumps, published, run_discover
from audit.discover.recheck import concept_gate, recheck_gate
from audit.discover.result import DiscoveredConcept
from audit.errors import InputError
from audit.fairness import AuditSettings, GateConfig, load_gate
from audit.fairness.inputs import load_inputs
from audit.fairness.stages.context import Progress
from audit.fileio import refuse_overwriting, write_text
from audit.report.classifier_sections import classifier_line, surrogate_line
from audit.report.files import input_files
from audit.report.junit import xml_text
from audit.report.terminal import STATUS_STYLE, concept_cell
from audit.report.wording import discover_note, name_checks_line, p_value_text


@dataclass(frozen=True)
class DiscoverOutcome:
    result: DiscoverResult
    exit_code: int
    paths: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def discover_files(
    embeddings: str | os.PathLike[str],
    *,
    sae: str | os.PathLike[str],
    bank: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    target: str,
    labels: str | os.PathLike[str] | pd.DataFrame | None = None,
    out_dir: str | os.PathLike[str] = "reports",
    stem: str = "discover",
    paths: dict[str, str | os.PathLike[str] | None] | None = None,
    gate: str | os.PathLike[str] | GateConfig | None = None,
    settings: DiscoverSettings | None = None,
    export_head: str | os.PathLike[str] | None = None,
    refit: bool = False,
    extra: dict | None = None,
    progress: Progress | None = None,
) -> DiscoverOutcome:
    """Run discover from files; write ``<out_dir>/<stem>.json``, ``.html``, ``.xml`` (``paths``
    overrides any of ``json``/``html``/``junit``) and the gate the re-check commands name
    (``<stem>-gate.yaml`` beside the JSON: the given gate's thresholds with
    ``flagged_concepts: {max: 0}``)."""
    from audit.concepts import validate_file_name

    validate_file_name(stem, "report name")
    base = settings or DiscoverSettings(AuditSettings(target=target, spurious=""))
    settings = replace(base, base=replace(base.base, target=target, spurious=""))
    gate_cfg = gate if isinstance(gate, GateConfig) else (load_gate(gate) if gate else GateConfig())
    out = Path(out_dir)
    given = {k: Path(v) for k, v in (paths or {}).items() if v}
    targets = {k: given.get(k, out / f"{stem}{s}") for k, s in _SUFFIXES.items()}
    # Always written: a user's gate need not gate flagged concepts, and a re-check must.
    written_gate = targets["json"].with_name(f"{stem}-gate.yaml")
    _check_not_overwritten(gate, written_gate)
    refuse_overwriting(
        {**{f"--{kind}": path for kind, path in targets.items()}, "--export-head": export_head},
        input_files(embeddings, labels, sae, bank, classifier, gate_cfg.source),
    )
    start = time.perf_counter()
    store, frame, model, bank_obj, clf, provenance = load_inputs(
        embeddings, labels, sae, bank, classifier, settings.base.classifier_input
    )
    timings = {"load": time.perf_counter() - start}
    result, stage_times = run_discover(
        store, frame, model, bank_obj, clf, settings, gate_cfg, provenance=provenance,
        extra=extra, progress=progress, gate_path=str(written_gate),
        export_path=export_head, refit=refit,
    )  # fmt: skip
    timings.update(stage_times)
    result = published(result)
    written = write_discover_reports(result, targets)
    write_text(written_gate, yaml.safe_dump(recheck_gate(gate_cfg), sort_keys=False))
    written["gate"] = written_gate
    _write_concept_gates(result, gate_cfg)
    return DiscoverOutcome(result, result.exit_code, written, timings)


def _write_concept_gates(result: DiscoverResult, gate: GateConfig) -> None:
    """Each flagged concept's re-check gate (every other concept allowlisted)."""
    names = [c.name for c in result.concepts]
    for c in result.concepts:
        if c.recheck_gate:
            text = yaml.safe_dump(concept_gate(gate, c.name, names), sort_keys=False)
            write_text(Path(c.recheck_gate), text)


def _check_not_overwritten(gate: object, written: Path) -> None:
    """The re-check gates (``<stem>-gate.yaml``, ``<stem>-gate-<rank>.yaml``) must not replace
    the user's own gate file (they keep only ``flagged_concepts`` of its gates)."""
    if gate is None or isinstance(gate, GateConfig):
        return
    given = Path(gate).resolve()
    ours = re.fullmatch(rf"{re.escape(written.stem)}(-\d+)?{re.escape(written.suffix)}", given.name)
    if given.parent == written.resolve().parent and ours:
        raise InputError(
            f"--gate {gate} is the re-check gate discover writes beside the JSON; give a copy "
            "of it, or write the JSON elsewhere"
        )


_SUFFIXES = {"json": ".json", "html": ".html", "junit": ".xml"}


def write_discover_reports(result: DiscoverResult, paths: dict[str, Path]) -> dict[str, Path]:
    """The JSON and every report rendered from the same result."""
    from audit.report.discover_html import render_discover_html

    renderers = {"json": dumps, "html": render_discover_html, "junit": render_discover_junit}
    written = {}
    for kind, render in renderers.items():
        if paths.get(kind):
            write_text(paths[kind], render(result))
            written[kind] = Path(paths[kind])
    return written


# ------------------------------------------------------------------------------------------
# Terminal
# ------------------------------------------------------------------------------------------


def concept_groups_table(c: DiscoveredConcept) -> Table:
    """One concept's groups: accuracy before and after removing it."""
    table = Table(title=f"{c.rank}. {c.name}: its groups", title_justify="left")
    # An own model: the removal runs on the surrogate, so its accuracy before is shown too,
    # and how often it decides like the model in the group.
    surrogate = any(g.surrogate_accuracy is not None for g in c.groups)
    # Narrow terminals (80 columns in most CI logs) squeeze the one wrapping column: keep each
    # word of a group's name whole ("is_circle=0," / "red=inactive", not "is_c…").
    words = [len(word) for g in c.groups for word in g.name.split()]
    table.add_column("group", min_width=min(max(words, default=5), 24))
    extra = ("surrogate", "after removal", "agrees") if surrogate else ("after removal",)
    for col in ("n", "accuracy", "95% CI", *extra):
        table.add_column(col, justify="right", no_wrap=True)
    for g in c.groups:
        style = "bold red" if g.name == c.worst_group else ""
        cells = [f"{g.accuracy_after:.3f}"]
        if surrogate:
            cells = [f"{g.surrogate_accuracy or 0.0:.3f}", *cells,
                     f"{100 * (g.surrogate_agreement or 0.0):.1f}%"]  # fmt: skip
        table.add_row(
            Text(g.name, style=style), f"{g.n:,}", f"{g.accuracy:.3f}",
            f"[{g.ci[0]:.3f}, {g.ci[1]:.3f}]", *cells,
        )  # fmt: skip
    return table


def discover_table(result: DiscoverResult, top: int = 10) -> Table:
    n = len(result.concepts)
    table = Table(title=f"Concepts by ΔWGA (top {min(top, n)} of {n})", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("concept", min_width=14)
    for col in ("active", "WGA", "ΔWGA", "95% CI", "q", "flag"):
        table.add_column(col, justify="left" if col == "flag" else "right", no_wrap=True)
    for c in result.concepts[:top]:
        style = "bold red" if c.flagged else ("" if c.tested else "italic dim")
        if c.target_concept:
            name, style = f"{c.name} (the target's own)", "italic dim"
        else:
            name = c.name
        table.add_row(
            str(c.rank), concept_cell(name, style, discover_note(c)), f"{100 * c.active_rate:.0f}%",
            f"{c.worst_group_accuracy:.3f}", f"{c.delta_wga:+.3f}",
            f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]", p_value_text(c.q),
            Text("yes", style="bold red") if c.flagged else Text("no"),
        )  # fmt: skip
    return table


def discover_panel(result: DiscoverResult) -> Panel:
    text = Text()
    text.append(
        f" {result.verdict.upper()} ", style=f"reverse {STATUS_STYLE.get(result.verdict, '')}"
    )
    text.append(f"  {result.data.target}: {result.family.size if result.family else 0} concepts, ")
    text.append(f"{result.flagged_concepts} flagged, exit code {result.exit_code}")
    body = [text]
    # An own model: whose decisions the numbers are, and how far the surrogate stands for it.
    line = classifier_line(result)
    if line:
        body.append(Text(line))
    if result.surrogate is not None:
        body.append(Text(surrogate_line(result.surrogate)))
    if result.error:
        body.append(Text(result.error, style="dark_orange"))
    checked = name_checks_line(result.concepts)
    if checked:
        body.append(Text(checked, style="dim"))
    for note in result.notes:
        body.append(Text(note, style="dim"))
    from rich.console import Group

    return Panel(Group(*body), title="msae-audit discover", expand=False)


def render_discover_terminal(result: DiscoverResult, console: Console, top: int = 10) -> None:
    from audit.report.terminal import checks_table

    console.print(discover_panel(result))
    if result.concepts:
        console.print(discover_table(result, top))
    for c in result.concepts:
        if c.flagged:
            console.print(concept_groups_table(c))
            if c.recheck:
                console.print(Text(f"re-check {c.name!r} as a gate:", style="bold"))
                console.print(Text(c.recheck), soft_wrap=True)
    if result.export:
        console.print(export_table(result))
    console.print(checks_table(result))  # type: ignore[arg-type]


def export_table(result: DiscoverResult) -> Table:
    e = result.export
    assert e is not None
    table = Table(title=f"Exported head: {e.path} ({e.method})", title_justify="left")
    for col in ("split", "rows", "accuracy", "→", "WGA", "→ ", "ΔWGA 95% CI"):
        table.add_column(col, justify="left" if col == "split" else "right", no_wrap=True)
    for s in e.scores:
        table.add_row(
            s.split, f"{s.rows:,}", f"{s.accuracy_before:.3f}", f"{s.accuracy_after:.3f}",
            f"{s.worst_group_accuracy_before:.3f}", f"{s.worst_group_accuracy_after:.3f}",
            f"[{s.delta_wga_ci[0]:+.3f}, {s.delta_wga_ci[1]:+.3f}]",
        )  # fmt: skip
    return table


# ------------------------------------------------------------------------------------------
# JUnit
# ------------------------------------------------------------------------------------------


def render_discover_junit(result: DiscoverResult) -> str:
    """One test case per check, and one per flagged concept (a failure only when the gate's
    ``flagged_concepts`` check failed)."""
    checks = result.checks
    failures = sum(1 for c in checks if c.status == "fail")
    suites = ET.Element("testsuites", name="msae-audit discover", tests=str(len(checks)),
                        failures=str(failures))  # fmt: skip
    suite = ET.SubElement(
        suites, "testsuite", name=xml_text(f"msae-audit discover: {result.data.target}"),
        tests=str(len(checks)), failures=str(failures), errors="0",
        skipped=str(sum(1 for c in checks if c.status == "skipped")),
    )  # fmt: skip
    props = ET.SubElement(suite, "properties")
    for key in ("verdict", "flagged_concepts", "seed"):
        ET.SubElement(props, "property", name=key, value=xml_text(getattr(result, key)))
    flagged = ", ".join(c.name for c in result.concepts if c.flagged)
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname="msae-audit.discover",
                             name=xml_text(c.name))  # fmt: skip
        detail = f"value {c.value}, threshold {c.threshold}: {c.reason}"
        if c.name == "flagged_concepts" and flagged:
            detail += f"; flagged: {flagged}"
        if c.status == "fail":
            ET.SubElement(
                case, "failure", message=xml_text(detail), type="GateFailed"
            ).text = xml_text(detail)
        elif c.status == "skipped":
            ET.SubElement(case, "skipped", message=xml_text(c.reason))
        else:
            ET.SubElement(case, "system-out").text = xml_text(f"{c.status}: {detail}")
    if result.error:
        ET.SubElement(suite, "system-err").text = xml_text(result.error)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
