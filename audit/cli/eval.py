"""``msae-audit eval``: the paper's SAE metrics on an embedding store (JSON + a rich table)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import (
    command_options,
    device_option,
    option,
    quiet_option,
    seed_option,
)
from audit.cli.progress import Bars
from audit.errors import InputError
from audit.evaluate import EvalConfig, evaluate_sae
from audit.fileio import write_json
from audit.sae import load_sae
from audit.store import EmbeddingStore, open_store


@dataclass(frozen=True)
class EvalSettings:
    """The options ``eval`` and ``compare`` share; the evaluation's defaults are
    :class:`EvalConfig`'s."""

    embeddings: Path = option(
        None, "--embeddings", help="Embedding store directory or .npy file.", required=True
    )
    labels: Path | None = option(
        None, "--labels", help="Row-aligned labels CSV (for LP-KL/agr).", shown="none (no probe)"
    )
    label_column: str | None = option(
        None,
        "--label-column",
        help="Label column for the linear probe (LP-KL, LP-agreement).",
        shown="none (no probe)",
    )
    topk: int | None = option(
        EvalConfig.topk,
        "--topk",
        help="Evaluate the inference code limited to its top-k latents.",
        shown="the plain code",
    )
    chunk_rows: int | None = option(
        EvalConfig.chunk_rows,
        "--chunk-rows",
        help="Rows per chunk.",
        shown="16M code entries / n_latents, at least 256",
    )
    device: str = device_option(EvalConfig.device)
    cknna_samples: int = option(
        EvalConfig.cknna_samples,
        "--cknna-samples",
        help="Rows in the seeded CKNNA subsample (0 = skip).",
    )
    seed: int = seed_option(EvalConfig.seed, help="Seed of the CKNNA subsample and probe split.")
    probe_c: float = option(
        EvalConfig.probe_c, "--probe-c", help="Logistic probe's C (inverse L2)."
    )
    json_out: Path | None = option(
        None, "--json", help="Write the results as JSON here.", shown="not written"
    )
    quiet: bool = quiet_option()

    def eval_config(self) -> EvalConfig:
        names = {f.name for f in fields(EvalConfig)} & {f.name for f in fields(self)}
        return EvalConfig(**{name: getattr(self, name) for name in names})

    def open_store(self) -> tuple[EmbeddingStore, pd.Series | None]:
        """The store (with ``--labels``) and the probe's label column, if any."""
        if self.labels is not None and self.label_column is None:
            raise InputError("--labels needs --label-column (the column the linear probe predicts)")
        store = open_store(self.embeddings, labels=self.labels)
        series = store.labels(self.label_column) if self.label_column is not None else None
        return store, series


def fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return format(value, spec)


@dataclass(frozen=True)
class EvalOptions(EvalSettings):
    sae: Path = option(
        None, "--sae", help="SAE directory (or .safetensors / reference .pt).", required=True
    )
    progressive: bool = option(
        EvalConfig.progressive,
        "--progressive/--no-progressive",
        help="Progressive recovery, k = 16, 32, …, n.",
    )


@app.command(name="eval", rich_help_panel="Models")
@command_options(EvalOptions)
def eval_command(opts: EvalOptions) -> None:
    """Evaluate an SAE on embeddings: sparsity, fidelity and progressive recovery.

    L0, FVU (two variants), cosine, CKNNA, decoder orthogonality, dead latents, LP-KL /
    LP-agreement and progressive recovery, all in raw embedding space."""
    cfg = opts.eval_config()
    store, label_series = opts.open_store()
    model = load_sae(opts.sae)
    with Bars(opts.quiet) as bars:
        result = evaluate_sae(
            model,
            store,
            cfg,
            labels=label_series,
            label_column=opts.label_column,
            sae_path=str(opts.sae),
            on_progress=bars.stage("eval"),
        )
    if opts.json_out is not None:
        write_json(opts.json_out, result)
    console.print(eval_table(result))
    if result["progressive"]:
        console.print(progressive_table(result))
    if opts.json_out is not None:
        err_console.print(f"wrote {opts.json_out}")


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
