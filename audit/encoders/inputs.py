"""What to embed: image folders and manifest CSVs, and each rank's slice of them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from audit.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class LeftOut:
    """Files under an image folder that are not embedded, by reason (relative paths, sorted)."""

    dangling: tuple[str, ...] = ()  # symbolic links whose target does not exist
    unsupported: tuple[str, ...] = ()  # files of a type that is not read (.heic, .txt, …)

    def __len__(self) -> int:
        return len(self.dangling) + len(self.unsupported)

    def describe(self, folder: str | os.PathLike[str], examples: int = 3) -> str:
        """One line: how many files were left out of ``folder``, why, and a few of each."""
        parts = []
        for names, why in (
            (self.dangling, "dangling symlink"),
            (self.unsupported, "not an image type that is read"),
        ):
            if names:
                shown = ", ".join(names[:examples]) + (", …" if len(names) > examples else "")
                parts.append(f"{len(names)} {why} ({shown})")
        return (
            f"left out {len(self)} file(s) under {folder}: {'; '.join(parts)}; images are "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )


def list_images(source: str | os.PathLike[str]) -> pd.DataFrame:
    """The images to embed: a folder (recursive, sorted by relative path) or a manifest CSV
    with a ``path`` column (relative paths are relative to the CSV) and any label columns.

    Returns a table with ``id``, ``path`` (absolute) and the manifest's other columns.
    """
    return scan_images(source)[0]


def scan_images(source: str | os.PathLike[str]) -> tuple[pd.DataFrame, LeftOut]:
    """:func:`list_images`, and the files of a folder that it leaves out (a manifest names its
    images, so it leaves none out: a missing one is an error when it is read)."""
    src = Path(source)
    if not src.exists():
        raise InputError(f"image folder or manifest not found: {src}")
    if src.is_dir():
        return _folder_images(src)
    return _manifest_images(src), LeftOut()


def _folder_images(src: Path) -> tuple[pd.DataFrame, LeftOut]:
    files, dangling, unsupported = [], [], []
    for p in src.rglob("*"):
        if p.is_file():  # follows symbolic links: one to an image is that image
            (files if p.suffix.lower() in IMAGE_SUFFIXES else unsupported).append(p)
        elif p.is_symlink() and not p.exists():
            dangling.append(p)
    # Sorted by relative path: the store's row order does not depend on the file system's.
    relative = lambda p: p.relative_to(src).as_posix()  # noqa: E731
    files.sort(key=relative)
    left_out = LeftOut(
        tuple(sorted(map(relative, dangling))), tuple(sorted(map(relative, unsupported)))
    )
    if not files:
        why = f" ({left_out.describe(src)})" if left_out else ""
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src}{why}")
    ids = [relative(p) for p in files]
    paths = [str(p.resolve()) for p in files]
    for path in paths:
        _check_utf8_name(path)
    return pd.DataFrame({"id": ids, "path": paths}), left_out


def _manifest_images(src: Path) -> pd.DataFrame:
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
