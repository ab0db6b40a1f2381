"""``msae-audit compare``: several SAEs on the same embeddings, one row per model (Table 1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from audit.cli.app import SafeConsole, app, console, err_console
from audit.cli.eval import EvalSettings
from audit.cli.options import argument, command_options, option
from audit.cli.progress import Bars
from audit.evaluate import evaluate_sae, fit_probe
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


@dataclass(frozen=True)
class CompareOptions(EvalSettings):
    saes: list[Path] = argument(help="SAE directories to compare.", metavar="SAE_DIR")
    html: Path | None = option(
        None, "--html", help="Write a self-contained HTML page here.", shown="not written"
    )


@app.command(rich_help_panel="Models")
@command_options(CompareOptions)
def compare(opts: CompareOptions) -> None:
    """Evaluate several SAEs on the same embeddings, side by side.

    A table like the paper's Table 1, and an HTML page with the sparsity–fidelity plot and
    progressive-recovery curves."""
    cfg = opts.eval_config()
    store, label_series = opts.open_store()
    models = [load_sae(path) for path in opts.saes]  # fail on a bad SAE before any long work
    names = model_names([str(p) for p in opts.saes])
    # The probe depends on the data only: fit it once for all models.
    probe = (
        fit_probe(store, label_series, cfg, opts.label_column) if label_series is not None else None
    )
    results = []
    with Bars(opts.quiet) as bars:
        for name, path, model in zip(names, opts.saes, models, strict=True):
            results.append(
                evaluate_sae(
                    model,
                    store,
                    cfg,
                    probe=probe,
                    sae_path=str(path),
                    on_progress=bars.stage(f"eval {name}"),
                )
            )
    comparison = build_comparison(results, names)
    if opts.json_out is not None:
        write_json(opts.json_out, comparison)
        err_console.print(f"wrote {opts.json_out}")
    if opts.html is not None:
        write_text(opts.html, render_compare_html(comparison))
        err_console.print(f"wrote {opts.html}")
    table = compare_table(comparison)
    if console.is_terminal:
        console.print(table)
    else:
        # A redirected stdout gets rich's default 80 columns, too narrow for 13 columns.
        SafeConsole(file=console.file, width=200, highlight=False).print(table)


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
