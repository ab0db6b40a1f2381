"""``msae-audit concepts``: name SAE latents from a vocabulary; ``concepts show BANK``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.concepts import (
    DEFAULT_ALTERNATIVES,
    DEFAULT_TEMPLATES,
    DEFAULT_TOP_M,
    ConceptBank,
    bank_path_for_name,
    build_bank,
    builtin_vocabularies,
    load_bank,
    save_bank,
    validate_bank_name,
)
from audit.errors import InputError

concepts_app = typer.Typer(
    help="Name SAE latents from a text vocabulary (a concept bank), or show a bank.",
    invoke_without_command=True,
    no_args_is_help=True,
)
app.add_typer(concepts_app, name="concepts", rich_help_panel="Concepts")


@concepts_app.callback()
def concepts(
    ctx: typer.Context,
    sae: Path = typer.Option(None, "--sae", help="SAE directory."),
    vocab: list[str] = typer.Option(
        None,
        "--vocab",
        help="Built-in vocabulary name or a text file (one entry per line); repeat to merge. "
        "Built-ins: " + ", ".join(builtin_vocabularies()),
    ),
    model: str = typer.Option(
        None, "--model", help="open_clip model for the texts  [default: the SAE's recorded model]"
    ),
    pretrained: str = typer.Option(
        None, "--pretrained", help="open_clip tag or checkpoint  [default: the SAE's recorded one]"
    ),
    text_embeddings: Path = typer.Option(
        None,
        "--text-embeddings",
        help="Precomputed text embeddings (.npy or store), row-aligned with --vocab FILE.",
    ),
    name: str = typer.Option(None, "--name", help="Bank name: writes ./concept_banks/NAME.yaml."),
    out: Path = typer.Option(None, "--out", help="Write the bank here instead."),
    threshold: float = typer.Option(
        None,
        "--threshold",
        help="Minimum cosine for a name  [default: q0.99 of random directions' best cosine]",
    ),
    templates: list[str] = typer.Option(
        None,
        "--templates",
        help="Prompt template with one {} (repeat; averaged)  [default: '{}', 'a photo of {}.']",
    ),
    top_m: int = typer.Option(
        DEFAULT_TOP_M, "--top-m", help="Self-consistency: the latent must be in the word's top-m."
    ),
    alternatives: int = typer.Option(
        DEFAULT_ALTERNATIVES, "--alternatives", help="Alternative names kept per latent."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite", help="Replace a bank."),
) -> None:
    """Build a concept bank: name every latent of --sae from --vocab and validate the names."""
    if ctx.invoked_subcommand is not None:
        return
    if sae is None or not vocab or (name is None and out is None):
        raise InputError("concepts needs --sae DIR, --vocab NAME|FILE and --name BANK (or --out)")
    if name is not None:
        validate_bank_name(name)
    target = out if out is not None else bank_path_for_name(name)
    if target.exists() and not overwrite:
        raise InputError(f"{target} exists (use --overwrite to replace it)")
    result = build_bank(
        sae_path=sae,
        vocab_specs=list(vocab),
        bank_name=name or target.stem,
        model=model,
        pretrained=pretrained,
        text_embeddings=text_embeddings,
        threshold=threshold,
        templates=tuple(templates) if templates else DEFAULT_TEMPLATES,
        top_m=top_m,
        alternatives=alternatives,
        device=device,
        log=lambda message: err_console.print(message),
    )
    save_bank(result.bank, target)
    console.print(bank_table(result.bank, limit=25))
    summary = result.bank.extra.get("summary", {})
    console.print(
        f"[bold]{summary.get('validated', 0)}[/] of {summary.get('latents', 0)} latents have a "
        f"validated name ({summary.get('named', 0)} above the threshold "
        f"{result.bank.threshold:.3f}); bank written to {target}"
    )


@concepts_app.command("show")
def show(
    bank: str = typer.Argument(..., help="Bank name (./concept_banks/, then built-in) or path."),
    all_latents: bool = typer.Option(False, "--all", help="Also list unnamed latents."),
    limit: int = typer.Option(50, "--limit", help="Rows to show (0 = all)."),
    sae: Path = typer.Option(None, "--sae", help="Check that the bank belongs to this SAE."),
) -> None:
    """Show a concept bank as a table (validated names first, by score)."""
    loaded = load_bank(bank)
    if sae is not None:
        from audit.sae import load_sae, sae_fingerprint

        loaded.check_sae(sae_fingerprint(load_sae(sae)), sae)
    console.print(bank_table(loaded, limit=limit, include_unnamed=all_latents))
    summary = loaded.extra.get("summary", {})
    if summary:
        console.print(
            f"{summary.get('validated')} validated / {summary.get('named')} named / "
            f"{summary.get('latents')} latents; threshold {loaded.threshold:.3f} "
            f"({loaded.threshold_method})"
        )


def bank_table(bank: ConceptBank, limit: int = 50, include_unnamed: bool = False) -> Table:
    concepts = [c for c in bank.concepts if include_unnamed or c.name]
    concepts.sort(key=lambda c: (not c.validated, c.name is None, -c.score))
    shown = concepts if limit <= 0 else concepts[:limit]
    title = escape(f"Concept bank '{bank.name}' ({bank.embedding_model or 'unknown model'})")
    table = Table(title=title, title_justify="left")
    table.add_column("latent", justify="right")
    table.add_column("name")
    table.add_column("score", justify="right")
    table.add_column("self-rank", justify="right")
    table.add_column("valid", justify="center")
    table.add_column("alternatives")
    for c in shown:
        table.add_row(
            str(c.latent),
            escape(c.name) if c.name else f"[dim]~{escape(c.closest)}[/]",
            f"{c.score:.3f}",
            "-" if c.self_rank is None else str(c.self_rank),
            "[green]yes[/]" if c.validated else "[dim]no[/]",
            escape(", ".join(f"{n} {s:.2f}" for n, s in c.alternatives[:3])),
        )
    if len(concepts) > len(shown):
        table.caption = f"{len(concepts) - len(shown)} more (use --limit 0)"
    return table
