"""``msae-audit concepts``: name SAE latents from a vocabulary; ``concepts show BANK``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import argument, command_options, device_option, option, quiet_option
from audit.cli.progress import Bars
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


_TO_BUILD = "none; required to build a bank"


@dataclass(frozen=True)
class ConceptsOptions:
    sae: Path | None = option(None, "--sae", help="SAE directory.", shown=_TO_BUILD)
    vocab: list[str] = option(
        [],
        "--vocab",
        help="Built-in vocabulary name or a text file (one entry per line); repeat to merge. "
        "Built-ins: " + ", ".join(builtin_vocabularies()),
        shown=_TO_BUILD,
    )
    name: str | None = option(
        None,
        "--name",
        help="Bank name: writes ./concept_banks/NAME.yaml.",
        shown="none; give --name or --out",
    )
    out: Path | None = option(
        None, "--out", help="Write the bank here instead.", shown="./concept_banks/NAME.yaml"
    )
    model: str | None = option(
        None, "--model", help="open_clip model for the texts.", shown="the SAE's recorded model"
    )
    pretrained: str | None = option(
        None, "--pretrained", help="open_clip tag or checkpoint.", shown="the SAE's recorded one"
    )
    text_embeddings: Path | None = option(
        None,
        "--text-embeddings",
        help="Precomputed text embeddings (.npy or store), row-aligned with --vocab FILE.",
        shown="none: embed the vocabulary with the model",
    )
    threshold: float | None = option(
        None,
        "--threshold",
        help="Minimum cosine for a name.",
        shown="q0.99 of random directions' best cosine",
    )
    templates: list[str] = option(
        list(DEFAULT_TEMPLATES),
        "--templates",
        help="Prompt template with one {} (repeat; averaged).",
    )
    top_m: int = option(
        DEFAULT_TOP_M, "--top-m", help="Self-consistency: the latent must be in the word's top-m."
    )
    alternatives: int = option(
        DEFAULT_ALTERNATIVES, "--alternatives", help="Alternative names kept per latent."
    )
    device: str = device_option()
    overwrite: bool = option(True, "--overwrite/--no-overwrite", help="Replace a bank.")
    quiet: bool = quiet_option()


@concepts_app.callback()
@command_options(ConceptsOptions)
def concepts(ctx: typer.Context, opts: ConceptsOptions) -> None:
    """Build a concept bank: name every latent of --sae from --vocab and validate the names."""
    if ctx.invoked_subcommand is not None:
        return
    if opts.sae is None or not opts.vocab or (opts.name is None and opts.out is None):
        raise InputError("concepts needs --sae DIR, --vocab NAME|FILE and --name BANK (or --out)")
    if opts.name is not None:
        validate_bank_name(opts.name)
    target = opts.out if opts.out is not None else bank_path_for_name(opts.name)
    if target.exists() and not opts.overwrite:
        raise InputError(f"{target} exists (use --overwrite to replace it)")
    with Bars(opts.quiet) as bars:
        result = build_bank(
            sae_path=opts.sae,
            vocab_specs=list(opts.vocab),
            bank_name=opts.name or target.stem,
            model=opts.model,
            pretrained=opts.pretrained,
            text_embeddings=opts.text_embeddings,
            threshold=opts.threshold,
            templates=tuple(opts.templates),
            top_m=opts.top_m,
            alternatives=opts.alternatives,
            device=opts.device,
            log=lambda message: err_console.print(message),
            progress=bars,
        )
    save_bank(result.bank, target)
    console.print(bank_table(result.bank, limit=25))
    summary = result.bank.extra.get("summary", {})
    console.print(
        f"[bold]{summary.get('validated', 0)}[/] of {summary.get('latents', 0)} latents have a "
        f"validated name ({summary.get('named', 0)} above the threshold "
        f"{result.bank.threshold:.3f}); bank written to {target}"
    )


@dataclass(frozen=True)
class ShowOptions:
    bank: str = argument(help="Bank name (./concept_banks/, then built-in) or path.")
    all_latents: bool = option(False, "--all", help="Also list unnamed latents.")
    limit: int = option(50, "--limit", help="Rows to show (0 = all).")
    sae: Path | None = option(
        None,
        "--sae",
        help="Check that the bank belongs to this SAE.",
        shown="none: not checked",
    )


@concepts_app.command("show")
@command_options(ShowOptions)
def show(opts: ShowOptions) -> None:
    """Show a concept bank as a table (validated names first, by score)."""
    loaded = load_bank(opts.bank)
    if opts.sae is not None:
        from audit.sae import load_sae, sae_fingerprint

        loaded.check_sae(sae_fingerprint(load_sae(opts.sae)), opts.sae)
    console.print(bank_table(loaded, limit=opts.limit, include_unnamed=opts.all_latents))
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
