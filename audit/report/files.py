"""An audit from files to report files — the one call a script or the demo needs::

    from audit.report import audit_files
    outcome = audit_files(
        "store/", sae="sae/", bank="concept_banks/demo.yaml", classifier="head.npz",
        labels="labels.csv", target="Male", spurious="Blond_Hair", out_dir="reports/demo",
        extra={"demo": {"planted_concept": "blond hair"}},
    )
    outcome.exit_code   # 0 pass, 1 a gate failed, 3 integrity failure

The JSON is the source of truth; HTML, JUnit and Markdown are rendered from the same result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from audit.concepts import resolve_bank
from audit.errors import InputError
from audit.fairness import AuditResult, AuditSettings, GateConfig, dumps, load_gate, run_audit
from audit.fairness.inputs import load_inputs
from audit.fairness.serialize import published, to_json
from audit.fairness.stages.context import Progress
from audit.fileio import refuse_overwriting, write_text


@dataclass(frozen=True)
class AuditOutcome:
    audit: AuditResult
    exit_code: int
    paths: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def result(self) -> dict[str, Any]:
        """The audit JSON as a dictionary."""
        return to_json(self.audit)


def _append_step_summary(summary: str, text: str) -> None:
    try:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        raise InputError(
            f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc.strerror}"
        ) from exc


def write_reports(result: AuditResult, paths: Mapping[str, Path | None]) -> dict[str, Path]:
    """Write the JSON (the source of truth) and every report rendered from the same result;
    Markdown is also appended to ``$GITHUB_STEP_SUMMARY`` when it is set."""
    from audit.report import html, junit, markdown

    renderers = {
        "json": dumps,
        "html": html.render_html,
        "junit": junit.render_junit,
        "markdown": markdown.render_markdown,
    }
    written: dict[str, Path] = {}
    md = None
    for kind, render in renderers.items():
        if paths.get(kind):
            text = render(result)
            write_text(paths[kind], text)  # type: ignore[arg-type]
            written[kind] = Path(paths[kind])  # type: ignore[arg-type]
            md = text if kind == "markdown" else md
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _append_step_summary(summary, md or markdown.render_markdown(result))
        written["step_summary"] = Path(summary)
    return written


def input_files(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str] | pd.DataFrame | None,
    sae: str | os.PathLike[str],
    bank: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    gate: str | os.PathLike[str] | None,
) -> list[str | os.PathLike[str] | None]:
    """The files (and folders) an audit or discover run reads, for :func:`refuse_overwriting`;
    a bank given by name is the file the run will load (looked up as :func:`resolve_bank`
    does: ``./concept_banks/``, then ``reports/*/concept_banks/``)."""
    frame = isinstance(labels, pd.DataFrame)
    try:
        bank_file: str | os.PathLike[str] = resolve_bank(bank)
    except InputError:
        bank_file = bank  # not found: loading the inputs names the problem
    return [embeddings, None if frame else labels, sae, bank_file, classifier, gate]  # type: ignore[list-item]


def audit_files(
    embeddings: str | os.PathLike[str],
    *,
    sae: str | os.PathLike[str],
    bank: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    target: str,
    spurious: str,
    labels: str | os.PathLike[str] | pd.DataFrame | None = None,
    out_dir: str | os.PathLike[str] = "reports",
    stem: str = "audit",
    json_path: str | os.PathLike[str] | None = None,
    html_path: str | os.PathLike[str] | None = None,
    junit_path: str | os.PathLike[str] | None = None,
    markdown_path: str | os.PathLike[str] | None = None,
    gate: str | os.PathLike[str] | GateConfig | None = None,
    settings: AuditSettings | None = None,
    extra: dict | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> AuditOutcome:
    """Run an audit from files and write ``<out_dir>/<stem>.json``, ``.html`` and ``.xml``
    (and Markdown when ``markdown_path`` is given or ``$GITHUB_STEP_SUMMARY`` is set).

    ``overrides`` are :class:`AuditSettings` fields (``seed=1``, ``ablation="mean"``, …);
    ``extra`` adds top-level JSON fields, e.g. ``{"demo": {"planted_concept": "blond hair"}}``.
    """
    from audit.concepts import validate_file_name

    validate_file_name(stem, "report name")  # reports stay inside out_dir
    base = settings or AuditSettings(target=target, spurious=spurious)
    settings = replace(base, target=target, spurious=spurious, **overrides)
    gate_cfg = gate if isinstance(gate, GateConfig) else (load_gate(gate) if gate else GateConfig())
    out = Path(out_dir)
    paths = {
        "json": Path(json_path) if json_path else out / f"{stem}.json",
        "html": Path(html_path) if html_path else out / f"{stem}.html",
        "junit": Path(junit_path) if junit_path else out / f"{stem}.xml",
        "markdown": Path(markdown_path) if markdown_path else None,
    }
    refuse_overwriting(
        {f"--{kind}": path for kind, path in paths.items()},
        input_files(embeddings, labels, sae, bank, classifier, gate_cfg.source),
    )
    start = time.perf_counter()
    store, frame, model, bank_obj, clf, provenance = load_inputs(
        embeddings, labels, sae, bank, classifier, settings.classifier_input
    )
    load_time = time.perf_counter() - start
    result, timings = run_audit(
        store, frame, model, bank_obj, clf, settings, gate_cfg,
        provenance=provenance, extra=extra, progress=progress,
    )  # fmt: skip
    timings = {"load": load_time, **timings}
    result = published(result)  # reports show the numbers the JSON holds
    start = time.perf_counter()
    written = write_reports(result, paths)
    timings["reports"] = time.perf_counter() - start
    return AuditOutcome(result, result.exit_code, written, timings)
