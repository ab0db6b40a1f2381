"""Opening stores and plain ``.npy`` files (checked, never unpickled) and row-aligned label CSVs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.errors import InputError, first_line
from audit.fileio import describe_os_error, read_json
from audit.store.layout import (
    ALLOWED_DTYPES,
    PARTIAL_DIR,
    SHARD_GLOB,
    STORE_FORMAT,
    STORE_VERSION,
    EmbeddingStore,
)


def open_store(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    check_finite: bool = False,
    expected_dim: int | None = None,
) -> EmbeddingStore:
    """Open a store directory or a plain ``.npy`` file, memory-mapped and validated.

    Raises :class:`InputError` (exit code 2) for anything malformed: a missing or invalid
    manifest, a pickled or non-float ``.npy``, wrong dimensions, row-count mismatches between
    shards, manifest and metadata, and (with ``check_finite``) NaN/inf values.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"embeddings not found: {p}")
    if p.is_dir():
        store = _open_dir(p)
    elif p.suffix == ".npy":
        array = _load_npy(p)
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "model": None,
            "pretrained": None,
            "modality": None,
            "dim": int(array.shape[1]),
            "count": int(array.shape[0]),
            "normalized": None,
        }
        store = EmbeddingStore(p, manifest, [array])
    else:
        raise InputError(f"{p} is neither a store directory nor a .npy file")
    if labels is not None:
        matched = _match_ids(read_labels_csv(labels, store.count), store.metadata, labels)
        store.metadata = _with_row_identity(matched, store.metadata, labels, p)
    if expected_dim is not None and store.dim != expected_dim:
        raise InputError(f"{p} has embedding dimension {store.dim}, but {expected_dim} is expected")
    if check_finite:
        store.check_finite()
    return store


def _open_dir(p: Path) -> EmbeddingStore:
    manifest_path = p / "manifest.json"
    if not manifest_path.exists():
        hint = (
            " (an interrupted write? rerun the same command to resume)"
            if (p / PARTIAL_DIR).exists()
            else ""
        )
        raise InputError(f"{p} is not an embedding store: manifest.json is missing{hint}")
    manifest = read_json(manifest_path, "store manifest")
    if not isinstance(manifest, dict):
        raise InputError(f"{manifest_path}: expected a JSON object")
    if manifest.get("format") != STORE_FORMAT:
        raise InputError(
            f"{manifest_path}: format is {manifest.get('format')!r}, expected '{STORE_FORMAT}'"
        )
    if manifest.get("version") != STORE_VERSION:
        raise InputError(f"{manifest_path}: unsupported store version {manifest.get('version')!r}")
    for key in ("dim", "count"):
        if not isinstance(manifest.get(key), int) or manifest[key] < 0:
            raise InputError(f"{manifest_path}: '{key}' must be a non-negative integer")
    files = _shard_files(p, manifest)
    shards = [_load_npy(f) for f in files]
    dim = manifest["dim"]
    listed = manifest.get("shards") if isinstance(manifest.get("shards"), list) else []
    entries = {e["file"]: e for e in listed if isinstance(e, dict) and "file" in e}
    rows = {name: e.get("rows") for name, e in entries.items()}
    for f, s in zip(files, shards, strict=True):
        if s.shape[1] != dim:
            raise InputError(f"{f}: has {s.shape[1]} columns but the manifest says dim={dim}")
        if rows.get(f.name) is not None and rows[f.name] != len(s):
            raise InputError(f"{f}: has {len(s)} rows but the manifest says {rows[f.name]!r}")
    count = sum(len(s) for s in shards)
    if count != manifest["count"]:
        raise InputError(
            f"{p}: shards hold {count} rows but the manifest says count={manifest['count']}"
        )
    metadata = None
    if (p / "metadata.csv").exists():
        metadata = _anchor_paths(read_labels_csv(p / "metadata.csv", count), p)
    return EmbeddingStore(p, manifest, shards, metadata, _recorded_digests(files, entries))


def _anchor_paths(metadata: pd.DataFrame, store_dir: Path) -> pd.DataFrame:
    """Relative image paths in a store's ``metadata.csv`` name files beside the store, wherever
    the command runs (``embed`` writes absolute paths; a hand-made or moved store may not)."""
    if "path" not in metadata.columns:
        return metadata
    base = store_dir.resolve()
    metadata["path"] = [
        str(base / value)
        if isinstance(value, str) and value and not os.path.isabs(value)
        else value
        for value in metadata["path"]
    ]
    return metadata


def _recorded_digests(
    files: list[Path], entries: dict[str, dict[str, Any]]
) -> dict[int, tuple[Path, str]]:
    """The manifest's sha256 of each shard that records one (checked when first read)."""
    digests = {}
    for i, f in enumerate(files):
        digest = entries.get(f.name, {}).get("sha256")
        if digest is None:
            continue
        if not isinstance(digest, str) or len(digest) != 64:
            raise InputError(f"{f.parent}/manifest.json: invalid sha256 for shard {f.name}")
        digests[i] = (f, digest)
    return digests


def _shard_files(p: Path, manifest: dict[str, Any]) -> list[Path]:
    listed = manifest.get("shards")
    if listed:
        if not isinstance(listed, list):
            raise InputError(f"{p}/manifest.json: 'shards' must be a list")
        files = []
        for entry in listed:
            name = entry.get("file") if isinstance(entry, dict) else entry
            if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
                raise InputError(f"{p}/manifest.json: invalid shard name {name!r}")
            files.append(p / name)
    elif (p / "embeddings.npy").exists():
        files = [p / "embeddings.npy"]
    else:
        files = sorted(p.glob(SHARD_GLOB))
    if not files:
        raise InputError(f"{p}: no embeddings.npy or embeddings-NNNNN.npy shards found")
    for f in files:
        if not f.exists():
            raise InputError(f"{p}: shard {f.name} listed in the manifest is missing")
    return files


_NPY_MAGIC = b"\x93NUMPY"


def _check_npy_magic(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder, not a .npy file") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {describe_os_error(exc)}") from exc
    if not magic:
        raise InputError(f"{path}: empty file, not a .npy array")
    if magic != _NPY_MAGIC:
        raise InputError(f"{path}: not a .npy file (no NumPy header)")


def _load_npy(path: Path) -> np.ndarray:
    _check_npy_magic(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "mmap length is greater than file size" in str(exc):
            raise InputError(
                f"{path}: truncated .npy file (its header promises more data than it holds)"
            ) from exc
        # allow_pickle=False makes numpy refuse object arrays instead of unpickling them.
        raise InputError(f"{path}: not a plain numeric .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: unreadable or truncated .npy file") from exc
    except Exception as exc:
        # numpy parses the header as a Python literal: a damaged one raises SyntaxError,
        # tokenize.TokenError, TypeError, ... (found by fuzzing).
        raise InputError(f"{path}: damaged .npy header ({type(exc).__name__})") from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: expected a single array")
    if array.ndim != 2:
        raise InputError(
            f"{path}: expected a 2-D [rows, dim] array, got shape {tuple(array.shape)}"
        )
    if array.dtype not in ALLOWED_DTYPES:
        raise InputError(f"{path}: dtype {array.dtype} is not supported (use float32 or float16)")
    if array.shape[1] == 0:
        raise InputError(f"{path}: embedding dimension is 0")
    return array


def _match_ids(
    labels: pd.DataFrame, metadata: pd.DataFrame | None, path: str | os.PathLike[str]
) -> pd.DataFrame:
    """``labels`` in the store's row order. Labels are row-aligned, but when both they and the
    store's metadata have an ``id`` column the ids decide: the same ids in another order (a
    sorted or shuffled CSV) are put in the store's order, and different ids are refused — by
    position they would give rows the labels of other images, silently."""
    if metadata is None or "id" not in metadata.columns or "id" not in labels.columns:
        return labels
    ours, theirs = id_text(metadata["id"]), id_text(labels["id"])
    if (ours == theirs).all():
        return labels
    row = int(np.argmax(ours != theirs))
    if sorted(theirs) == sorted(ours):
        if len(set(theirs)) == len(theirs):
            position = pd.Index(theirs).get_indexer(ours)
            return labels.iloc[position].reset_index(drop=True)
        raise InputError(
            f"{path}: lists the store's ids in another order, and ids repeat, so rows cannot "
            f"be matched by id (row {row + 2} has {theirs[row]!r}, the store's row {row} is "
            f"{ours[row]!r}): put the rows in the store's order"
        )
    raise InputError(
        f"{path}: row {row + 2} has id {theirs[row]!r} but the store's row {row} is "
        f"{ours[row]!r}: labels are matched to the store by their 'id' column (give the "
        "store's ids, or rename the column to match rows by position)"
    )


IDENTITY_COLUMNS = ("id", "path")


def _with_row_identity(
    labels: pd.DataFrame, metadata: pd.DataFrame | None, path: str | os.PathLike[str], store: Path
) -> pd.DataFrame:
    """``labels`` (in the store's row order) with each row's identity from the store: its
    ``id`` and ``path`` (the image its embedding was made from) are added from the store's
    metadata when the labels lack them, and must agree with it when the labels have them (ids
    are checked by :func:`_match_ids`). Paths agree when they name the same file: the labels
    may write them from another folder (``data/img/1.jpg`` for the store's ``/mnt/img/1.jpg``),
    but another file name on a row means the rows are not the same images. The labels' other
    columns are theirs alone."""
    if metadata is None:
        return labels
    merged = labels.copy()
    if "path" in labels.columns and "path" in metadata.columns:
        given = labels["path"].astype(object).where(labels["path"].notna(), None)
        anchored = _anchor_paths(
            pd.DataFrame({"path": given}), store if store.is_dir() else store.parent
        )
        ours = metadata["path"].astype(str).map(_file_name).to_numpy()
        theirs = anchored["path"].astype(str).map(_file_name).to_numpy()
        differ = ours != theirs
        if differ.any():
            row = int(np.argmax(differ))
            raise InputError(
                f"{path}: column 'path' names other images than the store's metadata.csv on "
                f"{int(differ.sum())} rows (store row {row}: {labels['path'].iloc[row]!s} is not "
                f"{metadata['path'].iloc[row]!s}); a row's image is the one its embedding was "
                "made from: drop the column from the labels, or fix the store's metadata.csv"
            )
        merged["path"] = metadata["path"].to_numpy()
    for column in reversed(IDENTITY_COLUMNS):
        if column in metadata.columns and column not in merged.columns:
            merged.insert(0, column, metadata[column].to_numpy())
    return merged


def _file_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path.replace("\\", "/")))


def id_text(ids: pd.Series) -> np.ndarray:
    """Ids as text, whole numbers without a decimal part: a column that pandas read as float
    (one empty cell) still matches the same ids read as integers (``7.0`` is ``7``; ``7.5``
    stays ``7.5``). Every comparison of ids (labels, predictions) goes through this.

    >>> id_text(pd.Series([7.0, 12.0, 7.5])).tolist()
    ['7', '12', '7.5']
    """
    if pd.api.types.is_float_dtype(ids):
        whole = ids.notna() & np.isfinite(ids) & (ids == ids.round())
        text = ids.astype(str)
        text[whole] = ids[whole].astype(np.int64).astype(str)
        return text.to_numpy()
    return ids.astype(str).to_numpy()


def read_labels_csv(path: str | os.PathLike[str], expected_rows: int | None = None) -> pd.DataFrame:
    """Read a row-aligned labels/metadata table — CSV, or Parquet (recognised by its first
    bytes, whatever its name); the row count must match the embeddings."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"labels file not found: {p}")
    frame = _read_parquet(p) if _is_parquet(p) else _read_csv(p)
    if expected_rows is not None and len(frame) != expected_rows:
        raise InputError(f"{p} has {len(frame)} rows but the embeddings have {expected_rows}")
    return frame


def _is_parquet(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            return fh.read(4) == b"PAR1"
    except OSError:
        return False  # the CSV reader names the problem


def _read_parquet(p: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises its own types for damaged files
        raise InputError(f"{p}: malformed Parquet file ({first_line(exc)})") from exc
    # A table saved with a named index (df.set_index("id").to_parquet) gets it back as a column.
    return frame.reset_index(drop=isinstance(frame.index, pd.RangeIndex))


def _read_csv(p: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(p, low_memory=False)
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{p}: empty CSV file") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"{p}: malformed CSV ({first_line(exc, limit=None)})") from exc
    except OSError as exc:
        raise InputError(f"cannot read {p}: {describe_os_error(exc)}") from exc
