"""``msae-audit discover``: shortcuts nobody labelled, found among the bank's concepts.

Takes ``audit``'s inputs without ``--spurious``. Exit codes as ``audit``: 0 pass, 1 a gate
failed (e.g. ``flagged_concepts: {max: 0}``), 2 usage / input error, 3 integrity failure.
"""

from __future__ import annotations

from pathlib import Path

import typer

from audit.cli.app import app, console, err_console
from audit.cli.audit import (
    _ABLATION,
    _BANK,
    _CLASSIFIER,
    _CLASSIFIER_INPUT,
    _DEVICE,
    _GATE,
    _IMAGE_BATCH,
    _IMAGE_SIZE,
    _PREDICTIONS,
    _QUIET,
    _SAE,
    _SEED,
    _SPLIT,
    _TOP,
    _WORKERS,
    DEFAULT_REPORTS,
    _classifier_arg,
    _own_settings,
    _report,
)  # fmt: skip
from audit.cli.progress import Bars
from audit.discover import DiscoverSettings
from audit.fairness.config import AuditSettings


def _own(name: str, flag: str) -> typer.Option:
    return typer.Option(
        DiscoverSettings.default(name), flag, help=DiscoverSettings.help(name),
        show_default=DiscoverSettings.default(name) is not None or "Otsu's, per concept",
    )  # fmt: skip


@app.command("discover", rich_help_panel="Audit")
def discover_command(
    embeddings: Path = typer.Option(
        ..., "--embeddings", help="Embedding store directory or .npy file."
    ),
    labels: Path = typer.Option(
        None, "--labels", help="Row-aligned labels CSV.", show_default="the store's metadata.csv"
    ),
    target: str = typer.Option(
        ..., "--target", help="Binary target column (the classifier's label)."
    ),
    sae: Path = _SAE,
    bank: str = _BANK,
    classifier: str = _CLASSIFIER,
    classifier_input: str = _CLASSIFIER_INPUT,
    predictions: Path = _PREDICTIONS,
    image_size: int = _IMAGE_SIZE,
    image_batch_size: int = _IMAGE_BATCH,
    workers: int = _WORKERS,
    threshold: float = _own("threshold", "--threshold"),
    min_rows: int = _own("min_rows", "--min-rows"),
    max_target_auc: float = _own("max_target_auc", "--max-target-auc"),
    export_head: Path = typer.Option(
        None,
        "--export-head",
        help="Write a linear head (.npz) without the flagged concepts' decoder directions, "
        "and report WGA and accuracy before and after (linear heads and probes; for your own "
        "model, its surrogate).",
        show_default="not written",
    ),
    refit: bool = typer.Option(
        False,
        "--refit",
        show_default="off",
        help="With --export-head: re-fit the head on the train split with "
        "those directions removed, instead of only projecting them out.",
    ),
    json_out: Path = _report("--json", "Discover JSON (the source of truth).", "discover", ".json"),
    html_out: Path = _report("--html", "Self-contained HTML report.", "discover", ".html"),
    junit_out: Path = _report("--junit", "JUnit XML, one test case per check.", "discover", ".xml"),
    gate: Path = _GATE,
    seed: int = _SEED,
    device: str = _DEVICE,
    ablation: str = _ABLATION,
    split: str = _SPLIT,
    top: int = _TOP,
    quiet: bool = _QUIET,
) -> None:
    """Find shortcuts nobody labelled: rank concepts by the accuracy gap they open.

    Every validated concept is ranked by how it splits the classifier's accuracy and how much
    removing it repairs the worst group — no attribute column needed. Your own image model
    (--classifier-input image) or predictions file (--predictions) works as in ``audit``: every
    edit runs on a surrogate fit to its decisions, and the report says so."""
    from audit.fairness import load_gate
    from audit.report.discover import discover_files, render_discover_terminal

    if gate is not None:
        load_gate(gate)  # a bad gate file fails fast (exit 2)
    classifier_arg = _classifier_arg(classifier, predictions)
    own_input = _own_settings(classifier_input, predictions, image_size, workers, image_batch_size)
    base = AuditSettings(target, "", seed=seed, ablation=ablation, split=split,
                         classifier_input=own_input,
                         device=device, image_size=image_size, workers=workers,
                         image_batch_size=image_batch_size)  # fmt: skip
    with Bars(quiet) as bars:
        outcome = discover_files(
            embeddings, sae=sae, bank=bank, classifier=classifier_arg, target=target, labels=labels,
            out_dir=DEFAULT_REPORTS, paths={"json": json_out, "html": html_out, "junit": junit_out},
            gate=gate, settings=DiscoverSettings(
                base, threshold=threshold, min_rows=min_rows, max_target_auc=max_target_auc
            ),
            export_head=export_head, refit=refit, progress=bars,
        )  # fmt: skip
    render_discover_terminal(outcome.result, console, top=top)
    for kind, path in outcome.paths.items():
        err_console.print(f"{kind}: {path}", markup=False, highlight=False)
    raise typer.Exit(outcome.exit_code)
