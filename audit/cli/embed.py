"""``msae-audit embed images|texts|celeba``: write embedding stores with an open_clip model."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import argument, command_options, device_option, option, quiet_option
from audit.cli.progress import Bars
from audit.encoders import (
    EmbedResult,
    embed_images,
    embed_texts,
    finish_store,
    load_clip,
    scan_images,
)
from audit.errors import InputError
from audit.store import StoreWriter

embed_app = typer.Typer(
    help="Embed images, texts or CelebA with an open_clip model into a store.",
    no_args_is_help=True,
)
app.add_typer(embed_app, name="embed", rich_help_panel="Data")


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class EmbedSettings:
    """The options every ``embed`` subcommand has."""

    model: str = option(
        None,
        "--model",
        help="open_clip model name (ViT-B-32, hf-hub:…, local-dir:…) or a model-config JSON.",
        required=True,
    )
    pretrained: str | None = option(
        None,
        "--pretrained",
        help="open_clip pretrained tag (downloads when online, else read from the cache) or a "
        "local checkpoint file.",
        shown="none: required except for hf-hub:/local-dir: models",
    )
    out: Path = option(None, "--out", help="Output store directory.", required=True)
    device: str = device_option()
    precision: str = option(
        "auto", "--precision", help="auto | fp32 | fp16 | bf16 (autocast; auto = bf16/fp16 on GPU)"
    )
    normalize: bool = option(
        False, "--normalize/--raw", help="L2-normalise embeddings, or store raw model outputs."
    )
    dtype: str = option("float32", "--dtype", help="Stored dtype: float32 | float16")
    overwrite: bool = option(
        False,
        "--overwrite",
        help="Replace an existing store, or an interrupted run of other inputs, in --out (a "
        "complete store stays until the new one is).",
    )
    quiet: bool = quiet_option()


@dataclass(frozen=True)
class ImageSettings(EmbedSettings):
    batch_size: int = option(64, "--batch-size", help="Images per forward pass.")
    workers: int | None = option(
        None, "--workers", help="DataLoader worker processes.", shown="CPU count − 1, at most 8"
    )
    skip_bad_images: bool = option(
        False,
        "--skip-bad-images",
        help="Leave unreadable images out (listed in skipped.csv and the manifest).",
    )

    def worker_count(self) -> int:
        return _default_workers() if self.workers is None else self.workers


@dataclass(frozen=True)
class EmbedImagesOptions(ImageSettings):
    source: Path = argument(help="Image folder (recursive) or manifest CSV (path column).")


@dataclass(frozen=True)
class EmbedCelebaOptions(ImageSettings):
    root: Path = option(
        None,
        "--root",
        help="CelebA folder (official, torchvision or Kaggle layout).",
        required=True,
    )
    split: str = option(
        "all", "--split", help="all | train | valid | test (CelebA's official partition)"
    )
    limit: int | None = option(
        None, "--limit", help="Embed only the first N images (after --split).", shown="all"
    )


@dataclass(frozen=True)
class EmbedTextsOptions(EmbedSettings):
    file: Path = argument(
        help="Text file, one entry per line (the vocabulary rules: # comments, blank lines and "
        "duplicates dropped)."
    )
    batch_size: int = option(256, "--batch-size", help="Texts per forward pass.")


@embed_app.command("images")
@command_options(EmbedImagesOptions)
def embed_images_command(opts: EmbedImagesOptions) -> None:
    """Embed images (a folder or a manifest CSV); manifest columns go into metadata.csv."""
    table, left_out = scan_images(opts.source)
    if left_out and _speaks():
        # Said before the (long) embedding starts: a folder of .heic photos or broken links
        # should not come out as a smaller store without a word.
        err_console.print(
            f"warning: {left_out.describe(opts.source)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    _run_images(table, opts, {"source": str(Path(opts.source).resolve())})


def _speaks() -> bool:
    """Under torchrun, rank 0 alone prints what every rank would print alike."""
    from audit.distributed import env_rank, launched_with_torchrun

    return not launched_with_torchrun() or env_rank() == 0


@embed_app.command("celeba")
@command_options(EmbedCelebaOptions)
def embed_celeba_command(opts: EmbedCelebaOptions) -> None:
    """Embed CelebA; the 40 attributes (0/1), partition and split go into metadata.csv."""
    _embed_celeba(opts)


def embed_celeba(root: Path, model: str, pretrained: str | None, out: Path, **changes: Any) -> None:
    """Embed CelebA images into the store ``out`` with ``embed celeba``'s defaults except
    ``changes`` (e.g. ``device``, ``quiet``): shared by ``embed celeba`` and ``celeba``."""
    _embed_celeba(
        EmbedCelebaOptions(
            root=Path(root), model=model, pretrained=pretrained, out=Path(out), **changes
        )
    )


def _embed_celeba(opts: EmbedCelebaOptions) -> None:
    from audit.data.celeba import read_celeba

    data = read_celeba(opts.root)
    table = data.table
    split, limit = opts.split, opts.limit
    if split != "all":
        if split not in ("train", "valid", "test"):
            raise InputError(f"--split must be all, train, valid or test, got {split!r}")
        table = table[table["split"] == split].reset_index(drop=True)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be positive, got {limit}")
        table = table.iloc[:limit].reset_index(drop=True)
    if not len(table):
        raise InputError(f"no CelebA images selected (split {split})")
    extra = {
        "source": str(Path(opts.root).resolve()),
        "dataset": "celeba",
        "celeba_layout": data.layout,
    }
    _run_images(table, opts, extra)


@embed_app.command("texts")
@command_options(EmbedTextsOptions)
def embed_texts_command(opts: EmbedTextsOptions) -> None:
    """Embed the lines of a text file; the rows align with `concepts --vocab FILE`."""
    from audit.concepts import read_vocabulary_file

    texts = read_vocabulary_file(opts.file)
    clip = load_clip(opts.model, opts.pretrained, device=opts.device, precision=opts.precision)
    writer = _writer(opts, clip, "text", {"source": str(opts.file.resolve())})
    metadata = pd.DataFrame({"id": range(len(texts)), "text": texts})
    with Bars(opts.quiet) as bars:
        result = embed_texts(
            texts,
            clip,
            writer,
            metadata=metadata,
            batch_size=opts.batch_size,
            normalize=opts.normalize,
            progress=bars.stage("embed texts"),
        )
    store = finish_store(writer, result)
    console.print(_summary(store, result, "texts"))
    if result.truncated_texts:
        err_console.print(
            f"[yellow]note:[/] {result.truncated_texts} text(s) filled the model's context of "
            f"{clip.context_length} tokens and may have been truncated"
        )


def _writer(opts: EmbedSettings, clip, modality: str, extra: dict) -> StoreWriter:  # type: ignore[no-untyped-def]
    if opts.dtype not in ("float32", "float16"):
        raise InputError(f"--dtype must be float32 or float16, got {opts.dtype!r}")
    writer = StoreWriter(
        opts.out,
        clip.embed_dim,
        model=clip.model_id,
        pretrained=clip.pretrained,
        modality=modality,
        normalized=opts.normalize,
        dtype=opts.dtype,
        extra={**extra, **clip.manifest_fields()},
        overwrite=opts.overwrite,
    )
    if writer.rows_done:
        err_console.print(f"resuming: {writer.rows_done} rows were already written to {opts.out}")
    return writer


def _run_images(table: pd.DataFrame, opts: ImageSettings, extra: dict) -> None:
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {opts.batch_size}")
    from audit.distributed import launched_with_torchrun

    if launched_with_torchrun():
        _run_images_distributed(table, opts, extra)
        return
    clip = load_clip(opts.model, opts.pretrained, device=opts.device, precision=opts.precision)
    writer = _writer(opts, clip, "image", extra)
    with Bars(opts.quiet) as bars:
        result = embed_images(
            table["path"].tolist(),
            clip,
            writer,
            metadata=table,
            batch_size=opts.batch_size,
            num_workers=opts.worker_count(),
            skip_bad_images=opts.skip_bad_images,
            normalize=opts.normalize,
            progress=bars.stage("embed images"),
        )
    store = finish_store(writer, result)
    console.print(_summary(store, result, "images"))
    if result.skipped:
        err_console.print(
            f"[yellow]skipped {len(result.skipped)} unreadable image(s)[/], listed in "
            f"{escape(str(opts.out / 'skipped.csv'))} (first: {escape(str(result.skipped[0].path))}: {escape(str(result.skipped[0].error))})"
        )


def _run_images_distributed(table: pd.DataFrame, opts: ImageSettings, extra: dict) -> None:
    """Each rank embeds its block into a part store; rank 0 merges them."""
    from audit.device import resolve_device
    from audit.distributed import device_for_rank, distributed_session, env_rank
    from audit.encoders import embed_images_distributed

    started = time.perf_counter()
    with distributed_session(opts.device):
        rank_device = device_for_rank(resolve_device(opts.device))
        clip = load_clip(
            opts.model, opts.pretrained, device=str(rank_device), precision=opts.precision
        )
        with Bars(opts.quiet or env_rank() != 0) as bars:
            store = embed_images_distributed(
                table["path"].tolist(),
                clip,
                opts.out,
                lambda part: _writer(replace(opts, out=part), clip, "image", extra),
                metadata=table,
                progress=bars.stage("embed images"),
                overwrite=opts.overwrite,
                batch_size=opts.batch_size,
                num_workers=opts.worker_count(),
                skip_bad_images=opts.skip_bad_images,
                normalize=opts.normalize,
            )
    if store is None:
        return
    elapsed = time.perf_counter() - started
    console.print(_summary(store, EmbedResult(store.count, [], elapsed, 0), "images"))
    skipped = int(store.manifest.get("skipped", 0) or 0)
    if skipped:
        err_console.print(
            f"[yellow]skipped {skipped} unreadable image(s)[/], listed in "
            f"{escape(str(opts.out / 'skipped.csv'))}"
        )


def _summary(store, result: EmbedResult, what: str) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title="Embedding store", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("store", str(store.path)),
        (what, f"{store.count:,}"),
        ("dimension", str(store.dim)),
        ("model", f"{store.model} ({store.pretrained})"),
        ("normalized", str(store.normalized).lower()),
        (
            "time",
            f"{result.seconds:.1f} s"
            + (f" (resumed at row {result.resumed_from})" if result.resumed_from else ""),
        ),
    ]
    if result.skipped:
        rows.append(("skipped", f"{len(result.skipped)} (skipped.csv)"))
    for name, value in rows:
        table.add_row(name, value)
    return table
