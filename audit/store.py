"""Embedding stores: memory-mapped .npy shards, a manifest written last, row-aligned metadata.

A store is a directory::

    manifest.json        {"format": "msae-audit/embeddings", "version": 1, "model", "pretrained",
                          "modality", "dim", "count", "normalized", "dtype", "shards": [...]}
    embeddings.npy       [N, d] float32 or float16, opened memory-mapped
      or embeddings-00000.npy, embeddings-00001.npy, ...   (row-contiguous shards)
    metadata.csv         optional, row-aligned: id, path and any label columns

Every command that takes a store also takes a plain ``.npy`` file, with labels from a
row-aligned CSV. Rows are never permuted.

:class:`StoreWriter` writes shards atomically into ``<store>/.partial/`` and records progress,
so an interrupted ``embed`` resumes from the last finished shard; the manifest is written last,
so a directory with a ``manifest.json`` is always a complete store.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit import __version__
from audit.errors import InputError, first_line
from audit.fileio import atomic_path, describe_os_error, ensure_dir, read_json, write_json

STORE_FORMAT = "msae-audit/embeddings"
STORE_VERSION = 1
ALLOWED_DTYPES = (np.dtype("float32"), np.dtype("float16"))
DEFAULT_SHARD_ROWS = 1 << 16
PARTIAL_DIR = ".partial"


@dataclass
class EmbeddingStore:
    """A read-only, memory-mapped view of an embedding store or a plain ``.npy`` file."""

    path: Path
    manifest: dict[str, Any]
    shards: list[np.ndarray]
    metadata: pd.DataFrame | None = None
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.shards])]).astype(
            np.int64
        )

    # -- description -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def count(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.count

    @property
    def model(self) -> str | None:
        return self.manifest.get("model")

    @property
    def pretrained(self) -> str | None:
        return self.manifest.get("pretrained")

    @property
    def modality(self) -> str | None:
        return self.manifest.get("modality")

    @property
    def normalized(self) -> bool:
        return bool(self.manifest.get("normalized", False))

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].dtype if self.shards else np.dtype("float32")

    @property
    def nbytes(self) -> int:
        return sum(int(s.nbytes) for s in self.shards)

    # -- reading -----------------------------------------------------------------------------
    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` as a float32 array (a copy; the store stays untouched)."""
        stop = self.count if stop is None else min(stop, self.count)
        start = max(0, start)
        if stop <= start:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        for i in range(first, len(self.shards)):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            if lo >= stop:
                break
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            parts.append(np.array(self.shards[i][a:b], dtype=np.float32))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def take(self, rows: Sequence[int] | np.ndarray, piece_rows: int = 4096) -> np.ndarray:
        """Rows at the given indices (any order, repeats allowed) as float32.

        The memory map is read in ascending row order (a store on disk is read forwards, which
        read-ahead rewards). Runs of consecutive rows are copied straight into the result;
        scattered rows are gathered in pieces of at most ``piece_rows``, so the only temporary
        beyond the result is one piece.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.count):
            raise InputError(f"row index out of range for store {self.path} with {self.count} rows")
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        if not rows.size:
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        bounds = np.searchsorted(ordered, self.offsets)  # where each shard's rows begin
        for i, shard in enumerate(self.shards):
            a, b = int(bounds[i]), int(bounds[i + 1])
            if a == b:
                continue
            local = ordered[a:b] - self.offsets[i]
            run_starts = np.flatnonzero(np.diff(local) != 1) + 1
            if len(run_starts) + 1 <= (b - a) // 64:  # long runs (a whole buffer of chunks)
                edges = [0, *run_starts.tolist(), b - a]
                for lo, hi in itertools.pairwise(edges):
                    out[order[a + lo : a + hi]] = shard[local[lo] : local[lo] + hi - lo]
            else:
                for lo in range(0, b - a, max(1, piece_rows)):
                    hi = min(lo + piece_rows, b - a)
                    out[order[a + lo : a + hi]] = shard[local[lo:hi]]
        return out

    def iter_chunks(
        self, chunk_rows: int = DEFAULT_SHARD_ROWS, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, float32 block)`` pairs in row order, at most ``chunk_rows`` each."""
        stop = self.count if stop is None else min(stop, self.count)
        for lo in range(start, stop, max(1, chunk_rows)):
            yield lo, self.read(lo, min(lo + chunk_rows, stop))

    def check_finite(self, chunk_rows: int = DEFAULT_SHARD_ROWS) -> None:
        """Raise :class:`InputError` naming the first row that holds NaN or inf."""
        for lo, block in self.iter_chunks(chunk_rows):
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = lo + int(np.argmax(bad))
                raise InputError(f"{self.path}: row {row} contains NaN or inf values")

    def labels(self, column: str) -> pd.Series:
        """A row-aligned label column from ``metadata.csv`` or ``--labels``."""
        if self.metadata is None:
            raise InputError(f"{self.path} has no metadata; pass --labels FILE.csv")
        if column not in self.metadata.columns:
            cols = ", ".join(map(str, self.metadata.columns[:20]))
            raise InputError(f"label column '{column}' not found; available columns: {cols}")
        return self.metadata[column]

    def describe(self) -> str:
        return (
            f"{self.count} x {self.dim} {self.dtype} embeddings"
            f" ({self.model or 'unknown model'}, {self.modality or 'unknown modality'})"
        )


# ------------------------------------------------------------------------------------------
# Opening
# ------------------------------------------------------------------------------------------


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
        store.metadata = read_labels_csv(labels, store.count)
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
    for f, s in zip(files, shards, strict=True):
        if s.shape[1] != dim:
            raise InputError(f"{f}: has {s.shape[1]} columns but the manifest says dim={dim}")
    count = sum(len(s) for s in shards)
    if count != manifest["count"]:
        raise InputError(
            f"{p}: shards hold {count} rows but the manifest says count={manifest['count']}"
        )
    metadata = None
    if (p / "metadata.csv").exists():
        metadata = read_labels_csv(p / "metadata.csv", count)
    return EmbeddingStore(p, manifest, shards, metadata)


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
        files = sorted(p.glob("embeddings-[0-9][0-9][0-9][0-9][0-9].npy"))
    if not files:
        raise InputError(f"{p}: no embeddings.npy or embeddings-NNNNN.npy shards found")
    for f in files:
        if not f.exists():
            raise InputError(f"{p}: shard {f.name} listed in the manifest is missing")
    return files


_NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: Path) -> np.ndarray:
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


def read_labels_csv(path: str | os.PathLike[str], expected_rows: int | None = None) -> pd.DataFrame:
    """Read a row-aligned labels/metadata CSV; the row count must match the embeddings."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"labels file not found: {p}")
    try:
        frame = pd.read_csv(p, low_memory=False)
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{p}: empty CSV file") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"{p}: malformed CSV ({first_line(exc, limit=None)})") from exc
    except OSError as exc:
        raise InputError(f"cannot read {p}: {describe_os_error(exc)}") from exc
    if expected_rows is not None and len(frame) != expected_rows:
        raise InputError(f"{p} has {len(frame)} rows but the embeddings have {expected_rows}")
    return frame


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


class StoreWriter:
    """Append embeddings (and metadata rows) to a new store, shard by shard, resumably.

    ``rows_done`` tells a caller how many input rows an earlier, interrupted run already
    wrote; skip those and append the rest. Call :meth:`finalize` to publish the store.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        dim: int,
        *,
        model: str | None = None,
        pretrained: str | None = None,
        modality: str | None = None,
        normalized: bool = False,
        dtype: str = "float32",
        shard_rows: int = DEFAULT_SHARD_ROWS,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        if np.dtype(dtype) not in ALLOWED_DTYPES:
            raise InputError(f"unsupported store dtype {dtype}")
        if (self.out / "manifest.json").exists():
            if not overwrite:
                raise InputError(
                    f"{self.out} already holds a store (use --overwrite to replace it)"
                )
            _remove_store_files(self.out)
        self.partial = ensure_dir(self.out / PARTIAL_DIR)
        self.params = {
            "model": model,
            "pretrained": pretrained,
            "modality": modality,
            "dim": int(dim),
            "normalized": bool(normalized),
            "dtype": np.dtype(dtype).name,
        }
        self.extra = dict(extra or {})
        self.shard_rows = int(shard_rows)
        self._buffer: list[np.ndarray] = []
        self._meta_buffer: list[pd.DataFrame] = []
        self._buffered = 0
        self.progress = self._load_progress()

    # -- progress ----------------------------------------------------------------------------
    def _load_progress(self) -> dict[str, Any]:
        path = self.partial / "progress.json"
        if path.exists():
            try:
                progress = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                progress = None
            if isinstance(progress, dict) and progress.get("params") == self.params:
                # Keep only shards whose files really exist (a crash may precede the rename).
                kept = [
                    s for s in progress.get("shards", []) if (self.partial / s["file"]).exists()
                ]
                progress["shards"] = kept
                return progress
            if isinstance(progress, dict) and progress.get("shards"):
                raise InputError(
                    f"{self.out}: an interrupted store with different settings exists "
                    f"(delete {self.partial} or use another --out)"
                )
        return {"params": self.params, "shards": []}

    @property
    def rows_done(self) -> int:
        """Rows already written by an earlier (interrupted) run of the same command."""
        return sum(int(s["rows"]) for s in self.progress["shards"])

    @property
    def rows_written(self) -> int:
        return self.rows_done + self._buffered

    # -- appending ---------------------------------------------------------------------------
    def append(
        self, embeddings: np.ndarray, metadata: pd.DataFrame | Sequence[dict] | None = None
    ) -> None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[1] != self.params["dim"]:
            raise InputError(
                f"expected [rows, {self.params['dim']}] embeddings, got {tuple(emb.shape)}"
            )
        if not np.isfinite(emb).all():
            raise InputError("refusing to store NaN or inf embeddings")
        if metadata is not None:
            frame = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(list(metadata))
            if len(frame) != len(emb):
                raise InputError(f"{len(frame)} metadata rows for {len(emb)} embeddings")
            self._meta_buffer.append(frame.reset_index(drop=True))
        elif self._meta_buffer:
            raise InputError("metadata must be given for every batch or for none")
        self._buffer.append(emb.astype(self.params["dtype"], copy=False))
        self._buffered += len(emb)
        while self._buffered >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, rows: int) -> None:
        block = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        shard, rest = block[:rows], block[rows:]
        self._buffer = [rest] if len(rest) else []
        meta = None
        if self._meta_buffer:
            frame = pd.concat(self._meta_buffer, ignore_index=True)
            meta, rest_meta = frame.iloc[:rows], frame.iloc[rows:]
            self._meta_buffer = [rest_meta.reset_index(drop=True)] if len(rest_meta) else []
        self._buffered -= len(shard)
        index = len(self.progress["shards"])
        name = f"embeddings-{index:05d}.npy"
        data = io.BytesIO()
        np.save(data, np.ascontiguousarray(shard), allow_pickle=False)
        payload = data.getvalue()
        with atomic_path(self.partial / name) as tmp:
            tmp.write_bytes(payload)
        entry = {"file": name, "rows": len(shard), "sha256": hashlib.sha256(payload).hexdigest()}
        if meta is not None:
            meta_name = f"metadata-{index:05d}.csv"
            with atomic_path(self.partial / meta_name) as tmp:
                meta.to_csv(tmp, index=False)
            entry["metadata"] = meta_name
        self.progress["shards"].append(entry)
        write_json(self.partial / "progress.json", self.progress)

    # -- publishing --------------------------------------------------------------------------
    def finalize(self) -> EmbeddingStore:
        """Write the last shard, move shards into place and write ``manifest.json`` last."""
        if self._buffered:
            self._flush(self._buffered)
        shards = self.progress["shards"]
        has_meta = [("metadata" in s) for s in shards]
        if any(has_meta) and not all(has_meta):
            raise InputError(f"{self.out}: some shards have metadata and some do not")
        single = len(shards) == 1
        final_entries = []
        for s in shards:
            name = "embeddings.npy" if single else s["file"]
            os.replace(self.partial / s["file"], self.out / name)
            final_entries.append({"file": name, "rows": s["rows"], "sha256": s["sha256"]})
        if shards and all(has_meta):
            frames = [pd.read_csv(self.partial / s["metadata"], low_memory=False) for s in shards]
            with atomic_path(self.out / "metadata.csv") as tmp:
                pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
        if not shards:
            # An empty store still gets a valid (0-row) array so readers need no special case.
            with atomic_path(self.out / "embeddings.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.empty((0, self.params["dim"]), dtype=self.params["dtype"]))
            final_entries = [{"file": "embeddings.npy", "rows": 0}]
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            **self.params,
            "count": int(sum(s["rows"] for s in final_entries)),
            "shards": final_entries,
            "created_by": f"msae-audit {__version__}",
            **self.extra,
        }
        write_json(self.out / "manifest.json", manifest)
        shutil.rmtree(self.partial, ignore_errors=True)
        return open_store(self.out)


def _remove_store_files(out: Path) -> None:
    (out / "manifest.json").unlink(missing_ok=True)
    for f in [*list(out.glob("embeddings*.npy")), out / "metadata.csv"]:
        f.unlink(missing_ok=True)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)


def write_store(
    out: str | os.PathLike[str],
    embeddings: np.ndarray,
    metadata: pd.DataFrame | None = None,
    **kwargs: Any,
) -> EmbeddingStore:
    """Write an in-memory array (and optional metadata) as a store in one call."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise InputError(f"expected a 2-D [rows, dim] array, got shape {tuple(emb.shape)}")
    writer = StoreWriter(out, emb.shape[1], **kwargs)
    done = writer.rows_done
    if done < len(emb):
        writer.append(emb[done:], None if metadata is None else metadata.iloc[done:])
    return writer.finalize()
