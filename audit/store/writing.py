"""Writing stores: :class:`StoreWriter` (resumable, atomic shards, manifest last), `write_store`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit import __version__
from audit.errors import InputError
from audit.fileio import atomic_path, ensure_dir, file_sha256, write_json
from audit.store.layout import (
    ALLOWED_DTYPES,
    DEFAULT_SHARD_ROWS,
    PARTIAL_DIR,
    SHARD_GLOB,
    STORE_FORMAT,
    STORE_VERSION,
    EmbeddingStore,
)
from audit.store.reading import open_store


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
        if (self.out / "manifest.json").exists() and not overwrite:
            raise InputError(f"{self.out} already holds a store (use --overwrite to replace it)")
        # With overwrite, the old store stays readable until finalize() publishes the new one:
        # bad input or an interruption never costs the store that was there.
        self.overwrite = overwrite
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
        if not overwrite and not self.progress["shards"]:
            self._refuse_other_files()

    # -- progress ----------------------------------------------------------------------------
    def _load_progress(self) -> dict[str, Any]:
        path = self.partial / "progress.json"
        if path.exists():
            try:
                progress = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                progress = None
            same_run = isinstance(progress, dict) and progress.get("params") == self.params
            if same_run and _valid_entries(progress.get("shards")):
                progress["shards"] = self._resumable_shards(progress["shards"])
                return progress
            if isinstance(progress, dict) and progress.get("shards") and self.overwrite:
                shutil.rmtree(self.partial, ignore_errors=True)  # another run's leftovers
                ensure_dir(self.partial)
            elif isinstance(progress, dict) and progress.get("shards"):
                raise InputError(
                    f"{self.out}: an interrupted store with different settings exists "
                    f"(delete {self.partial} or use another --out)"
                )
        return {"params": self.params, "shards": []}

    def _refuse_other_files(self) -> None:
        """A new store goes into a folder without files of a store's names: publishing it
        replaces those, so a plain ``embeddings.npy`` or a ``metadata.csv`` of the user's
        would be lost. (A store there was refused already; ``--overwrite`` replaces them.)"""
        found = store_files(self.out)
        if found:
            with contextlib.suppress(OSError):
                self.partial.rmdir()  # made just now, empty: the folder stays as it was
            raise InputError(
                f"{self.out} holds {found[0].name}, which is not part of a store (no "
                "manifest.json): the new store would replace it (use another --out, or "
                "--overwrite to replace it)"
            )

    def _resumable_shards(self, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The recorded shards an earlier run left, in row order, up to the first one that is
        gone: rows resume only after an unbroken run of shards from row 0. A :meth:`finalize`
        cut short (no manifest yet) has moved the first shards into the store folder; those
        whose bytes match the recorded sha256 move back into ``.partial/``."""
        reclaim = not (self.out / "manifest.json").exists()
        kept = []
        for entry in listed:
            here = self.partial / entry["file"]
            if not here.exists() and reclaim:
                published = "embeddings.npy" if len(listed) == 1 else entry["file"]
                moved = self.out / published
                if moved.is_file() and file_sha256(moved) == f"sha256:{entry['sha256']}":
                    os.replace(moved, here)
            if not here.exists():
                break
            kept.append(entry)
        return kept

    def start_over(self) -> None:
        """Discard what an interrupted run left in ``.partial/`` (shards, progress, its caller's
        records) and write from row 0. A complete store in the folder is not touched: it stays
        readable until :meth:`finalize` publishes the new one."""
        shutil.rmtree(self.partial, ignore_errors=True)
        ensure_dir(self.partial)
        self.progress = {"params": self.params, "shards": []}

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
        with np.errstate(over="ignore"):
            stored = emb.astype(self.params["dtype"], copy=False)
        if not np.isfinite(stored).all():  # float16 tops out at 65504
            raise InputError(
                f"embedding values up to {float(np.abs(emb).max()):.4g} do not fit "
                f"{self.params['dtype']} (they would be stored as inf): use float32"
            )
        if metadata is not None:
            frame = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(list(metadata))
            if len(frame) != len(emb):
                raise InputError(f"{len(frame)} metadata rows for {len(emb)} embeddings")
            self._meta_buffer.append(frame.reset_index(drop=True))
        elif self._meta_buffer:
            raise InputError("metadata must be given for every batch or for none")
        self._buffer.append(stored)
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
        remove_store_files(self.out)  # the old store, if any: its manifest first
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


def _valid_entries(shards: Any) -> bool:
    """Whether a progress file's shard list is one this writer wrote (a list of entries naming
    a plain file in ``.partial/``, its rows and sha256)."""
    return isinstance(shards, list) and all(
        isinstance(s, dict)
        and isinstance(s.get("file"), str)
        and Path(s["file"]).name == s["file"]
        and not s["file"].startswith(".")
        and isinstance(s.get("rows"), int)
        and isinstance(s.get("sha256"), str)
        for s in shards
    )


def store_files(out: Path) -> list[Path]:
    """The files in ``out`` that a store publishes under its own names (shards, metadata)."""
    names = [out / "embeddings.npy", *sorted(out.glob(SHARD_GLOB)), out / "metadata.csv"]
    return [f for f in names if f.is_file()]


def remove_store_files(out: Path, keep: Collection[str] = ()) -> None:
    """Unpublish the store in ``out``: its manifest first (so no reader ever sees a manifest
    whose shards are gone), then its shards and metadata, except the files named in ``keep``.
    ``.partial/`` (a write in progress) and files of other names stay."""
    (out / "manifest.json").unlink(missing_ok=True)
    for f in store_files(out):
        if f.name not in keep:
            f.unlink(missing_ok=True)


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
