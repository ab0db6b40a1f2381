"""What to embed: image folders and manifest CSVs, and each rank's slice of them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from audit.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(source: str | os.PathLike[str]) -> pd.DataFrame:
    """The images to embed: a folder (recursive, sorted by relative path) or a manifest CSV
    with a ``path`` column (relative paths are relative to the CSV) and any label columns.

    Returns a table with ``id``, ``path`` (absolute) and the manifest's other columns.
    """
    src = Path(source)
    if not src.exists():
        raise InputError(f"image folder or manifest not found: {src}")
    if src.is_dir():
        files = sorted(
            (p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(src).as_posix(),
        )
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src}")
        ids = [p.relative_to(src).as_posix() for p in files]
        paths = [str(p.resolve()) for p in files]
        for path in paths:
            _check_utf8_name(path)
        return pd.DataFrame({"id": ids, "path": paths})
    if src.suffix.lower() != ".csv":
        raise InputError(f"{src}: expected an image folder or a manifest .csv")
    from audit.store import read_labels_csv

    table = read_labels_csv(src)
    if "path" not in table.columns:
        cols = ", ".join(map(str, table.columns[:10]))
        raise InputError(f"{src}: manifest needs a 'path' column (found: {cols})")
    if table["path"].isna().any():
        row = int(table["path"].isna().to_numpy().argmax())
        raise InputError(f"{src}: row {row + 2} has an empty path")
    base = src.resolve().parent
    paths = [str(p if Path(p).is_absolute() else (base / p)) for p in table["path"].astype(str)]
    table = table.copy()
    table["path"] = paths
    if "id" not in table.columns:
        table.insert(0, "id", [Path(p).name for p in paths])
    table = table[["id", "path", *[c for c in table.columns if c not in ("id", "path")]]]
    if not len(table):
        raise InputError(f"{src}: the manifest lists no images")
    return table.reset_index(drop=True)


def _check_utf8_name(path: str) -> None:
    """Refuse a file name that is not UTF-8 (the OS allows any bytes): metadata.csv, where the
    store keeps each image's path, is UTF-8 text and could not hold it."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InputError(
            f"image path {shown} is not valid UTF-8: rename it (image paths are kept in the "
            "store's UTF-8 metadata.csv)"
        ) from None


def rank_slice(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` inputs (earlier ranks get the extra rows), so
    that rank stores concatenated in rank order keep the input order."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"invalid rank {rank} for world size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
