"""The store format's constants and :class:`EmbeddingStore`, an opened store (memory-mapped)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.fileio import describe_os_error, file_sha256

STORE_FORMAT = "msae-audit/embeddings"
STORE_VERSION = 1
ALLOWED_DTYPES = (np.dtype("float32"), np.dtype("float16"))
DEFAULT_SHARD_ROWS = 1 << 16
PARTIAL_DIR = ".partial"
SHARD_GLOB = "embeddings-[0-9][0-9][0-9][0-9][0-9].npy"


@dataclass
class EmbeddingStore:
    """A read-only, memory-mapped view of an embedding store or a plain ``.npy`` file."""

    path: Path
    manifest: dict[str, Any]
    shards: list[np.ndarray]
    metadata: pd.DataFrame | None = None
    #: The sha256 (hex) the manifest records for shards (index -> file, digest): each shard is
    #: checked against it on its first read, once per opened store.
    recorded_sha256: dict[int, tuple[Path, str]] = field(default_factory=dict)
    offsets: np.ndarray = field(init=False)
    _checked: set[int] = field(default_factory=set, init=False, repr=False)

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

    def check_model(
        self, model: str | None, pretrained: str | None, who: str, what: str = "store"
    ) -> None:
        """Refuse these embeddings when they record another CLIP model or weights than ``who``
        ("the SAE was trained on") records: an SAE's latents, a bank's names, mean nothing on
        another model's embeddings, even of the same width. A side that records nothing (a
        plain ``.npy``) is not compared."""
        if model and self.model and model != self.model:
            raise InputError(
                f"{what} {self.path} holds embeddings of CLIP model {self.model!r} but {who} "
                f"{model!r}: use embeddings of that model (or an SAE trained on this one)"
            )
        if pretrained and self.pretrained and pretrained != self.pretrained:
            raise InputError(
                f"{what} {self.path} holds embeddings of {self.model!r} with weights "
                f"{self.pretrained!r} but {who} weights {pretrained!r}: use embeddings of "
                "those weights"
            )

    # -- reading -----------------------------------------------------------------------------
    def shard(self, i: int) -> np.ndarray:
        """Shard ``i``, its file checked against the manifest's sha256 the first time it is
        read: a shard altered after it was written (same row count, other bytes) is refused
        instead of read silently. Hashing reads the file once (~0.5 GB/s on one core)."""
        if i in self.recorded_sha256 and i not in self._checked:
            verify_sha256(*self.recorded_sha256[i])
            self._checked.add(i)
        return self.shards[i]

    def shard_sha256(self, i: int) -> str | None:
        """``sha256:<hex>`` of shard ``i``'s file: the manifest's, checked (hashing it once),
        or computed when the manifest records none; ``None`` for an in-memory array."""
        if i in self.recorded_sha256:
            self.shard(i)
            return "sha256:" + self.recorded_sha256[i][1].lower()
        filename = getattr(self.shards[i], "filename", None)
        return file_sha256(filename) if filename else None

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
            parts.append(np.array(self.shard(i)[a:b], dtype=np.float32))
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
        for i in range(len(self.shards)):
            a, b = int(bounds[i]), int(bounds[i + 1])
            if a == b:
                continue
            shard = self.shard(i)
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
            self.check_block_finite(lo, block)

    def check_block_finite(self, lo: int, block: np.ndarray) -> None:
        """:meth:`check_finite` for one block read by a pass that reads every row anyway (rows
        ``lo`` onwards), so that pass needs no second read of the store."""
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


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`InputError` unless the file's sha256 is ``expected`` (hex)."""
    try:
        actual = file_sha256(path).removeprefix("sha256:")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {describe_os_error(exc)}") from exc
    if actual != expected.lower():
        raise InputError(
            f"{path}: its bytes do not match the sha256 its manifest records (changed or "
            "damaged after it was written): restore it or embed again"
        )
