"""``msae-audit compare``: several SAEs on the same embeddings, one row per model (Table 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.eval import CHUNK_HELP, CKNNA_HELP, TOPK_HELP, open_eval_store, row_progress
from audit.evaluate import EvalConfig, evaluate_sae, fit_probe
from audit.fileio import write_json, write_text
from audit.report.compare import (
    COLUMNS,
    best_cells,
    build_comparison,
    model_names,
    render_compare_html,
    table_rows,
)
from audit.sae import load_sae


@app.command(rich_help_panel="Models")
def compare(
    saes: list[Path] = typer.Argument(..., help="SAE directories to compare.", show_default=False),
    embeddings: Path = typer.Option(
        ..., "--embeddings", help="Embedding store directory or .npy file."
    ),
    html: Path = typer.Option(None, "--html", help="Write a self-contained HTML page here."),
    json_out: Path = typer.Option(None, "--json", help="Write every model's results as JSON."),
    labels: Path = typer.Option(None, "--labels", help="Row-aligned labels CSV (for LP-KL/agr)."),
    label_column: str = typer.Option(None, "--label-column", help="Label column for the probe."),
    topk: int = typer.Option(None, "--topk", help=TOPK_HELP),
    chunk_rows: int = typer.Option(None, "--chunk-rows", help=CHUNK_HELP),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    cknna_samples: int = typer.Option(4096, "--cknna-samples", help=CKNNA_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the CKNNA subsample and probe split."),
    probe_c: float = typer.Option(1.0, "--probe-c", help="Logistic probe's C (inverse L2)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate several SAEs on the same embeddings: a table like the paper's Table 1, and an
    HTML page with the sparsity–fidelity plot and progressive-recovery curves."""
    cfg = EvalConfig(
        topk=topk,
        chunk_rows=chunk_rows,
        device=device,
        cknna_samples=cknna_samples,
        seed=seed,
        probe_c=probe_c,
    )
    store, label_series = open_eval_store(embeddings, labels, label_column)
    models = [load_sae(path) for path in saes]  # fail on a bad SAE before any long work
    names = model_names([str(p) for p in saes])
    # The probe depends on the data only: fit it once for all models.
    probe = fit_probe(store, label_series, cfg, label_column) if label_series is not None else None
    results = []
    for name, path, model in zip(names, saes, models, strict=True):
        with row_progress(f"eval {name}", quiet) as on_progress:
            results.append(
                evaluate_sae(
                    model,
                    store,
                    cfg,
                    probe=probe,
                    sae_path=str(path),
                    on_progress=on_progress,
                )
            )
    comparison = build_comparison(results, names)
    if json_out is not None:
        write_json(json_out, comparison)
        err_console.print(f"wrote {json_out}")
    if html is not None:
        write_text(html, render_compare_html(comparison))
        err_console.print(f"wrote {html}")
    table = compare_table(comparison)
    if console.is_terminal:
        console.print(table)
    else:
        # A redirected stdout gets rich's default 80 columns, too narrow for 13 columns.
        Console(file=console.file, width=200, highlight=False).print(table)


def compare_table(comparison: dict[str, Any]) -> Table:
    table = Table(
        title=f"SAE comparison on {comparison['store']['count']:,} embeddings",
        title_justify="left",
    )
    table.add_column("model", style="bold")
    for _, header, _, better in COLUMNS:
        arrow = {"high": " ↑", "low": " ↓"}.get(better, "")
        table.add_column(header + arrow, justify="right")
    for row, flags in zip(table_rows(comparison), best_cells(comparison), strict=True):
        cells = [
            f"[bold]{cell}[/]" if best else cell for cell, best in zip(row[1:], flags, strict=True)
        ]
        table.add_row(escape(row[0]), *cells)
    table.caption = "bold: best in column · FVU/sample is the paper's per-sample variant"
    return table
