"""``msae-audit concepts``: name SAE latents from a vocabulary; ``concepts show BANK``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import (
    IDLE_DEVICE_HELP,
    argument,
    command_options,
    device_option,
    option,
    quiet_option,
)
from audit.cli.progress import Bars
from audit.concepts import (
    DEFAULT_ALTERNATIVES,
    DEFAULT_TEMPLATES,
    DEFAULT_TOP_M,
    ConceptBank,
    ImageScores,
    bank_path_for_name,
    build_bank,
    builtin_vocabularies,
    load_bank,
    save_bank,
    validate_bank_name,
    word_file_path,
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
    probe_images: Path | None = option(
        None,
        "--probe-images",
        help="Image embeddings (store or .npy, same model) to check names against: a name is "
        "then validated only if the latent predicts the word on held-out images.",
        shown="the store the SAE was trained on, if still there unchanged; else none",
    )
    text_only: bool = option(
        False,
        "--text-only",
        help="Name from text alone, even where the SAE's training store is at hand (names are "
        "then never checked against images).",
    )
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
    probe_images = _probe_images(opts, opts.sae)
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
            probe_images=probe_images,
            progress=bars,
        )
    save_bank(result.bank, target)
    console.print(bank_table(result.bank, limit=25))
    words = f" with its word file {word_file_path(target)}" if result.bank.word_checks else ""
    console.print(f"{summary_line(result.bank)}; bank written to {target}{words}")


def _probe_images(opts: ConceptsOptions, sae: Path) -> Path | None:
    """The images names are checked against: --probe-images, else the store the SAE was
    trained on where it is still there unchanged (a sample of the SAE's own domain), unless
    --text-only. Says which on stderr."""
    if opts.text_only:
        if opts.probe_images is not None:
            raise InputError("give either --probe-images or --text-only, not both")
        return None
    if opts.probe_images is not None:
        return opts.probe_images
    from audit.sae.provenance import training_store

    found, why_not = training_store(sae)
    if found is None:
        err_console.print(
            f"naming from text alone: no images to check names against ({escape(why_not)}); "
            "give --probe-images STORE to have them checked"
        )
    else:
        err_console.print(
            f"checking names against the images the SAE was trained on: {escape(str(found))} "
            "(--probe-images to use others, --text-only to skip)"
        )
    return found


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
    device: str = device_option(help=IDLE_DEVICE_HELP)


@concepts_app.command("show")
@command_options(ShowOptions)
def show(opts: ShowOptions) -> None:
    """Show a concept bank as a table (validated names first, by score)."""
    loaded = load_bank(opts.bank)
    if opts.sae is not None:
        from audit.sae import load_sae, sae_fingerprint

        loaded.check_sae(sae_fingerprint(load_sae(opts.sae)), opts.sae)
    console.print(bank_table(loaded, limit=opts.limit, include_unnamed=opts.all_latents))
    if loaded.extra.get("summary"):
        console.print(summary_line(loaded))
    if loaded.word_checks:
        console.print(
            f"word file: {len(loaded.word_checks)} words, so audits check the names again on "
            "the images they audit"
        )
    for note in loaded.notes():
        console.print(f"note: {escape(note)}", style="dim")


def summary_line(bank: ConceptBank) -> str:
    summary = bank.extra.get("summary", {})
    latents = f"[bold]{summary.get('validated', 0)}[/] of {summary.get('latents', 0)} latents"
    if bank.extra.get("validation", {}).get("method") == "image":
        naming = bank.extra.get("naming", {})
        probe = naming.get("probe", {})
        source = f" of {escape(str(probe['path']))}" if probe.get("path") else ""
        return (
            f"{latents} have a validated name, in {summary.get('concepts', 0)} concepts "
            f"({summary.get('absence_concepts', 0)} of absence), checked against "
            f"{probe.get('rows', '?')} probe images{source} (held-out AUC > "
            f"{naming.get('auc_threshold', float('nan')):.3f}, selectivity ≥ "
            f"{naming.get('min_selectivity', float('nan')):g})"
        )
    return (
        f"{latents} have a validated name ({summary.get('named', 0)} above the threshold "
        f"{bank.threshold:.3f}, {escape(bank.threshold_method)})"
    )


def bank_table(bank: ConceptBank, limit: int = 50, include_unnamed: bool = False) -> Table:
    """One row per concept (validated first), with the text and image scores behind it."""
    groups = [g for g in bank.concept_groups() if include_unnamed or g.name or len(g.latents) > 1]
    groups.sort(key=lambda g: (not g.validated, g.name is None, -g.score, g.latent))
    shown = groups if limit <= 0 else groups[:limit]
    title = escape(f"Concept bank '{bank.name}' ({bank.embedding_model or 'unknown model'})")
    table = Table(title=title, title_justify="left")
    images = bank.extra.get("validation", {}).get("method") == "image"
    table.add_column("name")
    table.add_column("latents")
    table.add_column("text cos", justify="right")
    for column in ("AUC", "select.") if images else ("self-rank",):
        table.add_column(column, justify="right")
    table.add_column("valid", justify="center")
    by_latent = bank.by_latent()
    for g in shown:
        lead = by_latent.get(g.latent)
        rank = lead.self_rank if lead is not None and len(g.latents) == 1 else None
        evidence = (
            [_auc_cell(g.image), "-" if g.image is None else f"{g.image.selectivity:.1f}"]
            if images
            else ["-" if rank is None else str(rank)]
        )
        table.add_row(
            escape(g.name) if g.validated and g.name else f"[dim]~{escape(g.closest)}[/]",
            _latent_list(g.latents),
            f"{g.score:.3f}",
            *evidence,
            "[green]yes[/]" if g.validated else "[dim]no[/]",
        )
    if len(groups) > len(shown):
        table.caption = f"{len(groups) - len(shown)} more (use --limit 0)"
    return table


def _latent_list(latents: tuple[int, ...], show: int = 3) -> str:
    listed = ", ".join(map(str, latents[:show]))
    return listed if len(latents) <= show else f"{listed} +{len(latents) - show}"


def _auc_cell(image: ImageScores | None) -> str:
    return "-" if image is None or image.auc is None else f"{image.auc:.3f}"
