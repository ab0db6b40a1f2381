"""``msae-audit embed images|texts|celeba``: write embedding stores with an open_clip model."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from audit.cli.app import app, console, err_console, progress_enabled
from audit.encoders import (
    EmbedResult,
    embed_images,
    embed_texts,
    finish_store,
    list_images,
    load_clip,
)
from audit.errors import InputError
from audit.store import StoreWriter

embed_app = typer.Typer(
    help="Embed images, texts or CelebA with an open_clip model into a store.",
    no_args_is_help=True,
)
app.add_typer(embed_app, name="embed", rich_help_panel="Data")

_MODEL_HELP = "open_clip model name (ViT-B-32, hf-hub:…, local-dir:…) or a model-config JSON."
_PRETRAINED_HELP = "open_clip pretrained tag (downloads when online) or a local checkpoint file."


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class _Common:
    """Options shared by the three subcommands (Typer has no option groups)."""

    model = typer.Option(None, "--model", help=_MODEL_HELP)
    pretrained = typer.Option(None, "--pretrained", help=_PRETRAINED_HELP)
    out = typer.Option(None, "--out", help="Output store directory.")
    device = typer.Option("auto", "--device", help="auto | cpu | cuda")
    precision = typer.Option(
        "auto", "--precision", help="auto | fp32 | fp16 | bf16 (autocast; auto = bf16/fp16 on GPU)"
    )
    normalize = typer.Option(
        False, "--normalize/--raw", help="L2-normalise embeddings (default: raw model outputs)."
    )
    dtype = typer.Option("float32", "--dtype", help="Stored dtype: float32 | float16")
    overwrite = typer.Option(False, "--overwrite", help="Replace an existing store in --out.")
    quiet = typer.Option(False, "--quiet", "-q", help="No progress bar.")


@embed_app.command("images")
def embed_images_command(
    source: Path = typer.Argument(
        ..., help="Image folder (recursive) or manifest CSV (path column)."
    ),
    model: str = _Common.model,
    pretrained: str = _Common.pretrained,
    out: Path = _Common.out,
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    workers: int = typer.Option(
        None, "--workers", help="DataLoader worker processes  [default: CPU count − 1, at most 8]"
    ),
    skip_bad_images: bool = typer.Option(
        False,
        "--skip-bad-images",
        help="Leave unreadable images out (listed in skipped.csv and the manifest).",
    ),
    device: str = _Common.device,
    precision: str = _Common.precision,
    normalize: bool = _Common.normalize,
    dtype: str = _Common.dtype,
    overwrite: bool = _Common.overwrite,
    quiet: bool = _Common.quiet,
) -> None:
    """Embed images (a folder or a manifest CSV); manifest columns go into metadata.csv."""
    out = _require(model, pretrained, out)
    table = list_images(source)
    _run_images(
        table,
        model,
        pretrained,
        out,
        batch_size,
        workers,
        skip_bad_images,
        device,
        precision,
        normalize,
        dtype,
        overwrite,
        quiet,
        {"source": str(Path(source).resolve())},
    )


@embed_app.command("celeba")
def embed_celeba_command(
    root: Path = typer.Option(
        ..., "--root", help="CelebA folder (official, torchvision or Kaggle layout)."
    ),
    model: str = _Common.model,
    pretrained: str = _Common.pretrained,
    out: Path = _Common.out,
    split: str = typer.Option(
        "all", "--split", help="all | train | valid | test (CelebA's official partition)"
    ),
    limit: int = typer.Option(
        None, "--limit", help="Embed only the first N images (after --split)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    workers: int = typer.Option(None, "--workers", help="DataLoader worker processes."),
    skip_bad_images: bool = typer.Option(
        False, "--skip-bad-images", help="Leave unreadable images out."
    ),
    device: str = _Common.device,
    precision: str = _Common.precision,
    normalize: bool = _Common.normalize,
    dtype: str = _Common.dtype,
    overwrite: bool = _Common.overwrite,
    quiet: bool = _Common.quiet,
) -> None:
    """Embed CelebA; the 40 attributes (0/1), partition and split go into metadata.csv."""
    embed_celeba(
        root, model, pretrained, _require(model, pretrained, out), split=split, limit=limit,
        batch_size=batch_size, workers=workers, skip_bad_images=skip_bad_images, device=device,
        precision=precision, normalize=normalize, dtype=dtype, overwrite=overwrite, quiet=quiet,
    )  # fmt: skip


def embed_celeba(
    root: Path,
    model: str,
    pretrained: str | None,
    out: Path,
    *,
    split: str = "all",
    limit: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    skip_bad_images: bool = False,
    device: str = "auto",
    precision: str = "auto",
    normalize: bool = False,
    dtype: str = "float32",
    overwrite: bool = False,
    quiet: bool = False,
) -> None:
    """Embed CelebA images into the store ``out`` (shared by ``embed celeba`` and ``celeba``)."""
    from audit.data.celeba import read_celeba

    data = read_celeba(root)
    table = data.table
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
    _run_images(
        table,
        model,
        pretrained,
        out,
        batch_size,
        workers,
        skip_bad_images,
        device,
        precision,
        normalize,
        dtype,
        overwrite,
        quiet,
        {"source": str(Path(root).resolve()), "dataset": "celeba", "celeba_layout": data.layout},
    )


@embed_app.command("texts")
def embed_texts_command(
    file: Path = typer.Argument(
        ...,
        help="Text file, one entry per line (the vocabulary rules: # comments, blank lines and duplicates dropped).",
    ),
    model: str = _Common.model,
    pretrained: str = _Common.pretrained,
    out: Path = _Common.out,
    batch_size: int = typer.Option(256, "--batch-size", help="Texts per forward pass."),
    device: str = _Common.device,
    precision: str = _Common.precision,
    normalize: bool = _Common.normalize,
    dtype: str = _Common.dtype,
    overwrite: bool = _Common.overwrite,
    quiet: bool = _Common.quiet,
) -> None:
    """Embed the lines of a text file; the rows align with `concepts --vocab FILE`."""
    from audit.concepts import read_vocabulary_file

    out = _require(model, pretrained, out)
    texts = read_vocabulary_file(file)
    clip = load_clip(model, pretrained, device=device, precision=precision)
    writer = _writer(
        out, clip, "text", normalize, dtype, overwrite, {"source": str(file.resolve())}
    )
    metadata = pd.DataFrame({"id": range(len(texts)), "text": texts})
    with _progress("texts", quiet) as update:
        result = embed_texts(
            texts,
            clip,
            writer,
            metadata=metadata,
            batch_size=batch_size,
            normalize=normalize,
            progress=update,
        )
    store = finish_store(writer, result)
    console.print(_summary(store, result, "texts"))
    if result.truncated_texts:
        err_console.print(
            f"[yellow]note:[/] {result.truncated_texts} text(s) filled the model's context of "
            f"{clip.context_length} tokens and may have been truncated"
        )


def _require(model: str | None, pretrained: str | None, out: Path | None) -> Path:
    if not model:
        raise InputError("--model is required (an open_clip model name or a model-config JSON)")
    if out is None:
        raise InputError("--out is required (the store directory to write)")
    return out


def _writer(
    out: Path, clip, modality: str, normalize: bool, dtype: str, overwrite: bool, extra: dict
) -> StoreWriter:  # type: ignore[no-untyped-def]
    if dtype not in ("float32", "float16"):
        raise InputError(f"--dtype must be float32 or float16, got {dtype!r}")
    writer = StoreWriter(
        out,
        clip.embed_dim,
        model=clip.model_id,
        pretrained=clip.pretrained,
        modality=modality,
        normalized=normalize,
        dtype=dtype,
        extra={**extra, **clip.manifest_fields()},
        overwrite=overwrite,
    )
    if writer.rows_done:
        err_console.print(f"resuming: {writer.rows_done} rows were already written to {out}")
    return writer


def _run_images(
    table: pd.DataFrame,
    model: str,
    pretrained: str | None,
    out: Path,
    batch_size: int,
    workers: int | None,
    skip_bad_images: bool,
    device: str,
    precision: str,
    normalize: bool,
    dtype: str,
    overwrite: bool,
    quiet: bool,
    extra: dict,
) -> None:
    if batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    from audit.distributed import launched_with_torchrun

    if launched_with_torchrun():
        # Each rank embeds its block into a part store; rank 0 merges them.
        from audit.device import resolve_device
        from audit.distributed import device_for_rank, distributed_session, env_rank
        from audit.encoders import embed_images_distributed

        started = time.perf_counter()
        with distributed_session(device):
            rank_device = device_for_rank(resolve_device(device))
            clip = load_clip(model, pretrained, device=str(rank_device), precision=precision)
            with _progress(f"images (rank {env_rank()})", quiet or env_rank() != 0) as update:
                store = embed_images_distributed(
                    table["path"].tolist(),
                    clip,
                    out,
                    lambda part: _writer(part, clip, "image", normalize, dtype, overwrite, extra),
                    metadata=table,
                    progress=update,
                    overwrite=overwrite,
                    batch_size=batch_size,
                    num_workers=_default_workers() if workers is None else workers,
                    skip_bad_images=skip_bad_images,
                    normalize=normalize,
                )
        if store is not None:
            console.print(
                _summary(
                    store, EmbedResult(store.count, [], time.perf_counter() - started, 0), "images"
                )
            )
            skipped = int(store.manifest.get("skipped", 0) or 0)
            if skipped:
                err_console.print(
                    f"[yellow]skipped {skipped} unreadable image(s)[/], listed in {escape(str(out / 'skipped.csv'))}"
                )
        return
    clip = load_clip(model, pretrained, device=device, precision=precision)
    writer = _writer(out, clip, "image", normalize, dtype, overwrite, extra)
    with _progress("images", quiet) as update:
        result = embed_images(
            table["path"].tolist(),
            clip,
            writer,
            metadata=table,
            batch_size=batch_size,
            num_workers=_default_workers() if workers is None else workers,
            skip_bad_images=skip_bad_images,
            normalize=normalize,
            progress=update,
        )
    store = finish_store(writer, result)
    console.print(_summary(store, result, "images"))
    if result.skipped:
        err_console.print(
            f"[yellow]skipped {len(result.skipped)} unreadable image(s)[/], listed in "
            f"{escape(str(out / 'skipped.csv'))} (first: {escape(str(result.skipped[0].path))}: {escape(str(result.skipped[0].error))})"
        )


@contextmanager
def _progress(what: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    if not progress_enabled(quiet):
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(f"[bold]embed {what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


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
