"""Distributed embedding: split the input across ranks, then merge the ranks' stores in order.

Each rank embeds the input rows :func:`rank_row_blocks` gives it — blocks of ``block_rows``
dealt round-robin (rank ``r`` gets blocks ``r, r + W, r + 2W, …``; interleaving balances the
ranks when the input gets harder towards its end), or one contiguous block per rank with
``block_rows=None`` — and writes them, in that order, with its own
:class:`~audit.store.StoreWriter` into :func:`rank_part_path` (resumable like any store).
After a barrier, one process calls :func:`merge_rank_stores`, which writes one store whose
manifest lists the rows in the original input order.

Whole shards are **moved** (renamed), never copied: when ``block_rows`` is a multiple of the
writers' ``shard_rows`` every block is a run of whole shards and the merge copies nothing.
Rows of shards that straddle blocks (or ``move_shards=False``) are copied, in bounded pieces.
The merge is crash-safe and resumable: it records its plan in ``OUT/.partial/merge.json``,
builds the shards there (each rename or write is atomic), writes ``manifest.json`` last, and
running it again after an interruption finishes the job.

Wiring for an ``embed`` command run under ``torchrun`` (one process per GPU)::

    rows = rank_row_blocks(n_inputs, rank, world, block_rows=16 * shard_rows)
    writer = StoreWriter(rank_part_path(out, rank), dim, shard_rows=shard_rows, ...)
    for start, stop in rows: ...embed inputs[start:stop] and writer.append(...)
    writer.finalize(); dist.barrier()
    if rank == 0: merge_rank_stores(rank_part_paths(out, world), out, block_rows=16 * shard_rows)
    dist.barrier()
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit import __version__
from audit.errors import InputError
from audit.fileio import atomic_path, ensure_dir, read_json, write_json
from audit.store import (
    DEFAULT_SHARD_ROWS,
    PARTIAL_DIR,
    STORE_FORMAT,
    STORE_VERSION,
    EmbeddingStore,
    open_store,
    remove_store_files,
    verify_sha256,
)

RANKS_DIR = ".ranks"
PLAN_FILE = "merge.json"
DONE_FILE = "done.json"
#: Manifest keys that must agree across the parts (the store's identity).
_SHARED_KEYS = ("model", "pretrained", "modality", "dim", "normalized", "dtype")
#: Manifest keys that describe one part, not the merged store.
_PART_KEYS = {"format", "version", "count", "shards", "created_by"}


def rank_row_blocks(
    count: int, rank: int, world_size: int, block_rows: int | None = None
) -> list[tuple[int, int]]:
    """The input rows ``[start, stop)`` rank ``rank`` embeds, in the order it writes them.

    ``block_rows=None``: one contiguous block per rank (sizes differ by at most one row).
    Otherwise blocks of ``block_rows`` rows dealt round-robin: rank ``r`` gets blocks
    ``r, r + W, r + 2W, …`` (the last block may be shorter).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"invalid rank {rank} for world size {world_size}")
    if count < 0:
        raise InputError(f"row count must be non-negative, got {count}")
    if block_rows is None:
        start, stop = rank * count // world_size, (rank + 1) * count // world_size
        return [(start, stop)] if stop > start else []
    if block_rows < 1:
        raise InputError(f"block_rows must be positive, got {block_rows}")
    return [
        (start, min(start + block_rows, count))
        for start in range(rank * block_rows, count, world_size * block_rows)
    ]


def rank_part_path(out: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` writes its part of the store ``out`` (inside it, hidden)."""
    return Path(out) / RANKS_DIR / f"rank-{rank:05d}"


def rank_part_paths(out: str | os.PathLike[str], world_size: int) -> list[Path]:
    return [rank_part_path(out, r) for r in range(world_size)]


def merge_rank_stores(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    block_rows: int | None = None,
    move_shards: bool = True,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    overwrite: bool = False,
) -> EmbeddingStore:
    """Merge the stores ``parts`` (rank ``r`` wrote ``parts[r]``) into one store at ``out``.

    ``block_rows`` is the layout the ranks used (see :func:`rank_row_blocks`); ``None`` means
    contiguous, so the rows are the parts' rows concatenated in rank order (any split).
    ``move_shards=True`` renames whole shards into ``out`` and deletes the parts afterwards;
    ``False`` copies everything and leaves the parts untouched. Copied rows go into new shards
    of at most ``shard_rows`` rows. Metadata (``metadata.csv``) is merged in the same order.
    """
    out = Path(out)
    partial = out / PARTIAL_DIR
    if (out / "manifest.json").exists() and not overwrite:
        raise InputError(f"{out} already holds a store (use --overwrite to replace it)")
    part_names = [str(Path(p)) for p in parts]
    plan, done = _start_or_resume(partial, part_names, block_rows, move_shards, shard_rows)
    layout = _Layout(plan["counts"], block_rows)
    # 1. Every output shard into .partial/ (unless an interrupted run got that far).
    _build_partial(partial, plan, layout, done)
    # 2. Into place, manifest last: a directory with a manifest is a complete store. An old
    # store (--overwrite) is unpublished only now; on a resumed merge the shards already moved
    # here are the new ones and stay.
    moved = {spec["file"] for spec in plan["shards"]}
    if plan["metadata"] and not (partial / "metadata.csv").exists():
        moved.add("metadata.csv")
    remove_store_files(out, keep=moved)
    for spec in plan["shards"]:
        if (partial / spec["file"]).exists():
            os.replace(partial / spec["file"], out / spec["file"])
    if plan["metadata"]:
        os.replace(partial / "metadata.csv", out / "metadata.csv")
    _write_merged_manifest(out, plan, layout, done)
    # 3. Clean up: the plan, and the parts whose shards now live in the merged store.
    shutil.rmtree(partial, ignore_errors=True)
    if plan["move_shards"]:
        for part in part_names:
            shutil.rmtree(part, ignore_errors=True)
        ranks_dir = out / RANKS_DIR
        if ranks_dir.is_dir() and not any(ranks_dir.iterdir()):
            ranks_dir.rmdir()
    return open_store(out)


def _start_or_resume(
    partial: Path,
    part_names: list[str],
    block_rows: int | None,
    move_shards: bool,
    shard_rows: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merge plan and the shards already built (file → sha256), read back from an
    interrupted merge of the same parts, or planned and recorded afresh."""
    plan_path, done_path = partial / PLAN_FILE, partial / DONE_FILE
    if plan_path.exists():
        plan = read_json(plan_path, "merge plan")  # resuming: the parts may lack moved shards
        if plan.get("parts") != part_names or plan.get("block_rows") != block_rows:
            raise InputError(
                f"{partial.parent}: an interrupted merge of other parts exists "
                f"(delete {partial} to start over)"
            )
        done = read_json(done_path, "merge progress") if done_path.exists() else {}
        return plan, done
    plan = _plan(part_names, block_rows, move_shards, shard_rows)
    ensure_dir(partial)
    write_json(plan_path, plan, indent=None)
    return plan, {}


def _build_partial(
    partial: Path, plan: dict[str, Any], layout: _Layout, done: dict[str, Any]
) -> None:
    """Build every output shard not yet ``done`` and the merged metadata in ``partial``,
    recording each shard as it is done."""
    checked: set[Path] = set()  # part shards checked against their sha256
    for spec in plan["shards"]:
        if spec["file"] not in done:
            done[spec["file"]] = _build_shard(partial, plan, layout, spec, checked)
            write_json(partial / DONE_FILE, done)
    if plan["metadata"] and not (partial / "metadata.csv").exists():
        frames = [
            pd.read_csv(Path(part) / "metadata.csv", low_memory=False) for part in plan["parts"]
        ]
        part_of, local = layout.source_of(np.arange(layout.total))
        merged = pd.concat(frames, ignore_index=True).iloc[layout.offsets[part_of] + local]
        with atomic_path(partial / "metadata.csv") as tmp:
            merged.to_csv(tmp, index=False)


def _write_merged_manifest(
    out: Path, plan: dict[str, Any], layout: _Layout, done: dict[str, Any]
) -> None:
    """The merged store's manifest (an empty merge gets one empty shard)."""
    entries: list[dict[str, Any]] = []
    for spec in plan["shards"]:
        entry = {"file": spec["file"], "rows": spec["stop"] - spec["start"]}
        if done[spec["file"]]:
            entry["sha256"] = done[spec["file"]]
        entries.append(entry)
    if not entries:
        with atomic_path(out / "embeddings.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.empty((0, plan["manifest"]["dim"]), dtype=plan["manifest"]["dtype"]))
        entries = [{"file": "embeddings.npy", "rows": 0}]
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        **plan["manifest"],
        "count": layout.total,
        "shards": entries,
        "created_by": f"msae-audit {__version__}",
        "merged_from": {"parts": len(plan["parts"]), "block_rows": plan["block_rows"]},
    }
    write_json(out / "manifest.json", manifest)


class _Layout:
    """The map between merged (original-order) rows and ``(part, row within part)``."""

    def __init__(self, counts: list[int], block_rows: int | None) -> None:
        self.counts = counts
        self.world = len(counts)
        self.block_rows = block_rows
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.total = int(self.offsets[-1])

    def output_row(self, part: int, local: int) -> int:
        if self.block_rows is None:
            return int(self.offsets[part]) + local
        block = (local // self.block_rows) * self.world + part
        return block * self.block_rows + local % self.block_rows

    def same_block(self, local_start: int, local_stop: int) -> bool:
        """Whether part rows ``[start, stop)`` are consecutive in the merged order."""
        if self.block_rows is None:
            return True
        return local_start // self.block_rows == (local_stop - 1) // self.block_rows

    def source_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(part, row within part)`` of merged rows."""
        if self.block_rows is None:
            part = np.searchsorted(self.offsets, rows, side="right") - 1
            return part, rows - self.offsets[part]
        block = rows // self.block_rows
        part = block % self.world
        return part, (block // self.world) * self.block_rows + rows % self.block_rows


# ------------------------------------------------------------------------------------------
# Planning: output shards as ranges of merged rows, moved whole or copied
# ------------------------------------------------------------------------------------------


def _plan(
    parts: list[str], block_rows: int | None, move_shards: bool, shard_rows: int
) -> dict[str, Any]:
    if not parts:
        raise InputError("no stores to merge")
    if shard_rows < 1:
        raise InputError(f"shard_rows must be positive, got {shard_rows}")
    stores = _open_parts(parts)
    first = stores[0].manifest
    has_meta = all(s.metadata is not None for s in stores)
    counts = [s.count for s in stores]
    _check_counts(counts, block_rows)
    layout = _Layout(counts, block_rows)
    tables = [_shard_table(s) for s in stores]
    shards = _shard_specs(tables, layout, move_shards, shard_rows)
    manifest = {key: first.get(key) for key in _SHARED_KEYS}
    manifest["dtype"] = str(stores[0].dtype)
    extra = {k: v for k, v in first.items() if k not in _PART_KEYS and k not in manifest}
    return {
        "parts": parts,
        "block_rows": block_rows,
        "counts": counts,
        "move_shards": move_shards,
        "metadata": has_meta,
        "tables": [[list(row) for row in table] for table in tables],
        "shards": shards,
        "manifest": {**extra, **manifest},
    }


def _open_parts(parts: list[str]) -> list[EmbeddingStore]:
    """The parts' stores, checked to agree on the store's identity and on having metadata."""
    stores = [open_store(p) for p in parts]
    first = stores[0].manifest
    for store in stores[1:]:
        for key in _SHARED_KEYS:
            if store.manifest.get(key) != first.get(key):
                raise InputError(
                    f"cannot merge {store.path}: its {key} is {store.manifest.get(key)!r}, "
                    f"but {stores[0].path} has {first.get(key)!r}"
                )
    has_meta = [s.metadata is not None for s in stores]
    if any(has_meta) and not all(has_meta):
        raise InputError("cannot merge: some parts have metadata.csv and some do not")
    return stores


def _shard_specs(
    tables: list[list[tuple[str, int, int, str | None]]],
    layout: _Layout,
    move_shards: bool,
    shard_rows: int,
) -> list[dict[str, Any]]:
    """The output shards in merged-row order: whole part shards whose rows stay consecutive
    are renamed (``move``), everything between them is copied in new shards of at most
    ``shard_rows`` rows."""
    moves = []
    for part, table in enumerate(tables):
        for file, lo, hi, sha in table:
            if move_shards and layout.same_block(lo, hi):
                start = layout.output_row(part, lo)
                moves.append(
                    {"start": start, "stop": start + hi - lo, "move": [part, file], "sha256": sha}
                )
    moves.sort(key=lambda m: m["start"])
    shards: list[dict[str, Any]] = []
    cursor = 0
    for move in [*moves, {"start": layout.total}]:
        for start in range(cursor, move["start"], shard_rows):
            shards.append(
                {"start": start, "stop": min(start + shard_rows, move["start"]), "copy": True}
            )
        if "move" in move:
            shards.append(move)
            cursor = move["stop"]
    for index, spec in enumerate(shards):
        spec["file"] = f"embeddings-{index:05d}.npy"
    return shards


def _check_counts(counts: list[int], block_rows: int | None) -> None:
    if block_rows is None:
        return
    world, total = len(counts), sum(counts)
    expected = [
        sum(b - a for a, b in rank_row_blocks(total, r, world, block_rows)) for r in range(world)
    ]
    if counts != expected:
        bad = next(r for r in range(world) if counts[r] != expected[r])
        raise InputError(
            f"part {bad} holds {counts[bad]} rows, but with {world} ranks, blocks of "
            f"{block_rows} rows and {total} rows in all it should hold {expected[bad]} "
            "(did a rank not finish, or was another block size used?)"
        )


def _shard_table(store: EmbeddingStore) -> list[tuple[str, int, int, str | None]]:
    """``(file, first row, end row, sha256)`` of each non-empty shard of a part."""
    entries = store.manifest.get("shards") or [{"file": "embeddings.npy"}]
    table = []
    for i, entry in enumerate(entries):
        file = entry["file"] if isinstance(entry, dict) else str(entry)
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        lo, hi = int(store.offsets[i]), int(store.offsets[i + 1])
        if hi > lo:
            table.append((file, lo, hi, sha))
    return table


# ------------------------------------------------------------------------------------------
# Execution (each output shard once; .partial/done.json records which are done)
# ------------------------------------------------------------------------------------------


def _build_shard(
    partial: Path, plan: dict[str, Any], layout: _Layout, spec: dict[str, Any], checked: set[Path]
) -> str | None:
    """Move or write one output shard into ``partial``; returns its sha256 (if known). Part
    shards copied from are checked first (once each): a fresh sha256 would hide damage."""
    target = partial / spec["file"]
    if "move" in spec:
        part, file = spec["move"]
        source = Path(plan["parts"][part]) / file
        if not target.exists():  # else renamed just before an interruption
            if not source.exists():
                raise InputError(f"cannot merge: shard {source} is missing")
            os.replace(source, target)
        return spec.get("sha256")
    rows = np.arange(spec["start"], spec["stop"])
    part_of, local = layout.source_of(rows)
    block = np.empty((len(rows), plan["manifest"]["dim"]), dtype=plan["manifest"]["dtype"])
    for part in np.unique(part_of):
        where = np.flatnonzero(part_of == part)
        wanted = local[where]  # ascending: a part's rows keep their order in the merged store
        for file, lo, hi, sha in plan["tables"][int(part)]:
            inside = (wanted >= lo) & (wanted < hi)
            if not inside.any():
                continue
            source = Path(plan["parts"][int(part)]) / file
            if sha and source not in checked:
                verify_sha256(source, sha)
                checked.add(source)
            shard = np.load(source, mmap_mode="r", allow_pickle=False)
            picked = wanted[inside] - lo
            if picked[-1] - picked[0] == len(picked) - 1:  # a run: slice instead of gather
                block[where[inside]] = shard[picked[0] : picked[-1] + 1]
            else:
                block[where[inside]] = shard[picked]
    data = io.BytesIO()
    np.save(data, block, allow_pickle=False)
    payload = data.getvalue()
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()
