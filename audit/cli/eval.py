"""``msae-audit eval``: the paper's SAE metrics on an embedding store (JSON + a rich table)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from audit.cli.app import app, console, err_console, progress_enabled
from audit.errors import InputError
from audit.evaluate import EvalConfig, evaluate_sae
from audit.fileio import write_json
from audit.sae import load_sae
from audit.store import EmbeddingStore, open_store

TOPK_HELP = "Evaluate the inference code limited to its top-k latents."
CHUNK_HELP = "Rows per chunk (default: 16M code entries / n_latents, at least 256)."
CKNNA_HELP = "Rows in the seeded CKNNA subsample (0 = skip)."


def open_eval_store(
    embeddings: Path, labels: Path | None, label_column: str | None
) -> tuple[EmbeddingStore, pd.Series | None]:
    """Open the store (with ``--labels``) and pick the probe's label column, if any."""
    if labels is not None and label_column is None:
        raise InputError("--labels needs --label-column (the column the linear probe predicts)")
    store = open_store(embeddings, labels=labels)
    series = store.labels(label_column) if label_column is not None else None
    return store, series


@contextmanager
def row_progress(label: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar over rows (on stderr), or ``None`` when quiet or not a terminal."""
    if not progress_enabled(quiet):
        yield None
        return
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return format(value, spec)


@app.command(name="eval", rich_help_panel="Models")
def eval_command(
    sae: Path = typer.Option(..., "--sae", help="SAE directory (or .safetensors / reference .pt)."),
    embeddings: Path = typer.Option(
        ..., "--embeddings", help="Embedding store directory or .npy file."
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the results as JSON here."),
    labels: Path = typer.Option(None, "--labels", help="Row-aligned labels CSV (for LP-KL/agr)."),
    label_column: str = typer.Option(
        None, "--label-column", help="Label column for the linear probe (LP-KL, LP-agreement)."
    ),
    topk: int = typer.Option(None, "--topk", help=TOPK_HELP),
    chunk_rows: int = typer.Option(None, "--chunk-rows", help=CHUNK_HELP),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    cknna_samples: int = typer.Option(4096, "--cknna-samples", help=CKNNA_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the CKNNA subsample and probe split."),
    progressive: bool = typer.Option(
        True, "--progressive/--no-progressive", help="Progressive recovery, k = 16, 32, …, n."
    ),
    probe_c: float = typer.Option(1.0, "--probe-c", help="Logistic probe's C (inverse L2)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate an SAE: L0, FVU (two variants), cosine, CKNNA, decoder orthogonality, dead
    latents, LP-KL / LP-agreement and progressive recovery, in raw embedding space."""
    cfg = EvalConfig(
        topk=topk,
        chunk_rows=chunk_rows,
        device=device,
        progressive=progressive,
        cknna_samples=cknna_samples,
        seed=seed,
        probe_c=probe_c,
    )
    store, label_series = open_eval_store(embeddings, labels, label_column)
    model = load_sae(sae)
    with row_progress("eval", quiet) as on_progress:
        result = evaluate_sae(
            model,
            store,
            cfg,
            labels=label_series,
            label_column=label_column,
            sae_path=str(sae),
            on_progress=on_progress,
        )
    if json_out is not None:
        write_json(json_out, result)
    console.print(eval_table(result))
    if result["progressive"]:
        console.print(progressive_table(result))
    if json_out is not None:
        err_console.print(f"wrote {json_out}")


def eval_table(result: dict[str, Any]) -> Table:
    sae = result["sae"]
    title = f"SAE evaluation: {sae['arch']} n={sae['n_latents']} on {result['n_samples']:,} rows"
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("definition")
    probe = result.get("linear_probe") or {}
    rows = [
        ("L0", fmt(result["l0"], ".2f"), "mean count of non-zero latents"),
        ("fraction of zeros", fmt(result["frac_zeros"]), "1 − L0/n (the paper's L0 column)"),
        ("FVU", fmt(result["fvu"]), "Σ‖x − x̂‖² / Σ‖x − x̄‖² (dataset-level)"),
        ("FVU per sample", fmt(result["fvu_per_sample"]), "mean Var_j(x − x̂)/Var_j(x) (paper)"),
        ("cosine", fmt(result["cosine"]), "mean cos(x, x̂)"),
        (
            "CKNNA",
            fmt(result["cknna"]),
            f"x vs z, k={result['cknna_detail']['k']}, {result['cknna_detail']['samples']:,} rows",
        ),
        ("decoder orthogonality", fmt(result["decoder_orthogonality"], ".3g"), "mean cos² i≠j"),
        ("dead latents", fmt(result["dead_latents"]), "never non-zero on these rows"),
        ("LP-KL", fmt(result["lp_kl"], ".4g"), "mean KL(p(x) ‖ p(x̂)), logistic probe"),
        ("LP-agreement", fmt(result["lp_agreement"]), "argmax p(x) = argmax p(x̂)"),
    ]
    if probe:
        rows.append(
            (
                "probe accuracy x / x̂",
                f"{probe['accuracy_x']:.4f} / {probe['accuracy_x_hat']:.4f}",
                f"on {probe['scored_rows']:,} held-out rows",
            )
        )
    for row in rows:
        table.add_row(*row)
    timing = result["timing"]
    table.caption = (
        f"code: {result['inference']['code']} · {timing['seconds_total']:.1f} s on "
        f"{timing['device']}"
    )
    return table


def progressive_table(result: dict[str, Any]) -> Table:
    table = Table(title="Progressive recovery (top-k latents kept)", title_justify="left")
    for name in ("k", "L0", "FVU", "FVU per sample", "cosine"):
        table.add_column(name, justify="right")
    for level in result["progressive"]:
        table.add_row(
            f"{level['k']:,}",
            fmt(level["l0"], ".1f"),
            fmt(level["fvu"]),
            fmt(level["fvu_per_sample"]),
            fmt(level["cosine"]),
        )
    return table
