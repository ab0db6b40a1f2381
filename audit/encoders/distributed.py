"""Embedding under ``torchrun``: one part store per rank, merged in rank order by rank 0."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from audit.encoders.clip import ClipEncoder, ProgressCallback
from audit.encoders.embedding import (
    SKIPPED_FILE,
    embed_images,
    finish_store,
)
from audit.errors import InputError
from audit.fileio import atomic_path, write_json
from audit.store import StoreWriter


def embed_images_distributed(
    paths: Sequence[str],
    clip: ClipEncoder,
    out: str | os.PathLike[str],
    make_writer: Callable[[Path], StoreWriter],
    *,
    metadata: pd.DataFrame | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    **embed_options: Any,
) -> Any:
    """Embed ``paths`` with every rank of the running process group into one store ``out``.

    Rank ``r`` embeds its contiguous block (:func:`audit.store_merge.rank_row_blocks`) into
    its own resumable part store ``out/.ranks/rank-r``; after a barrier rank 0 merges the parts
    in rank order (shards are renamed, not copied) and records every skipped image with its row
    in the whole input. Returns the merged store on rank 0 and ``None`` on the other ranks.
    ``embed_options`` go to :func:`embed_images`; ``overwrite`` replaces a merged store and
    finished parts (without it a finished part is kept, so a rerun resumes).
    """
    from audit.distributed import current_context
    from audit.store_merge import rank_part_path, rank_row_blocks

    ctx = current_context(clip.device)
    blocks = rank_row_blocks(len(paths), ctx.rank, ctx.world_size)
    start, stop = blocks[0] if blocks else (0, 0)
    part = rank_part_path(out, ctx.rank)
    if (Path(out) / "manifest.json").exists() and not overwrite:
        raise InputError(f"{out} already holds a store (use --overwrite to replace it)")
    # A finished part is kept unless overwriting: this rank finished before an interruption.
    if overwrite or not (part / "manifest.json").exists():
        writer = make_writer(part)
        result = embed_images(
            list(paths[start:stop]),
            clip,
            writer,
            metadata=None if metadata is None else metadata.iloc[start:stop].reset_index(drop=True),
            progress=progress,
            **embed_options,
        )
        finish_store(writer, result)
    ctx.barrier()
    if not ctx.is_main:
        ctx.barrier()
        return None
    merged = _merge_parts(out, len(paths), ctx.world_size, overwrite)
    ctx.barrier()
    return merged


def _merge_parts(out: str | os.PathLike[str], n_rows: int, world_size: int, overwrite: bool) -> Any:
    """Rank 0's merge of the ranks' parts into ``out``, with every part's skipped images
    listed at their rows in the whole input."""
    from audit.store import open_store
    from audit.store_merge import merge_rank_stores, rank_part_paths, rank_row_blocks

    skipped = []
    for rank, part_path in enumerate(rank_part_paths(out, world_size)):
        table_path = part_path / SKIPPED_FILE
        if table_path.exists():
            table = pd.read_csv(table_path)
            offset = (rank_row_blocks(n_rows, rank, world_size) or [(0, 0)])[0][0]
            skipped.append(table.assign(row=table["row"] + offset))
    merged = merge_rank_stores(rank_part_paths(out, world_size), out, overwrite=overwrite)
    if skipped:
        table = pd.concat(skipped, ignore_index=True)
        with atomic_path(Path(out) / SKIPPED_FILE) as tmp:
            table.to_csv(tmp, index=False)
        manifest = dict(merged.manifest)
        manifest.update(skipped=len(table), skipped_file=SKIPPED_FILE)
        write_json(Path(out) / "manifest.json", manifest)
        merged = open_store(out)
    return merged
