"""What data an SAE was trained on: the fingerprint its training records, and the store itself
where it is still there unchanged (the default images ``concepts`` checks names against)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import InputError
from audit.store import EmbeddingStore, open_store

TRAINING_RECORD = "training.json"


def data_fingerprint(store: EmbeddingStore, sample_rows: int = 1024) -> dict[str, Any]:
    """What a checkpoint must be resumed on: the data's content, not the path it was given by
    (the same store reached by another path resumes; other data at the same path does not).
    A store's shard sha256s when its manifest records them, else a hash of its first and last
    ``sample_rows`` rows; with the count, the dimension and the store's absolute path (where
    :func:`training_store` finds it again from any working directory)."""
    digest = hashlib.sha256(f"{store.count}x{store.dim}".encode())
    recorded = store.recorded_sha256  # the manifest's, validated when the store was opened
    if recorded and len(recorded) == len(store.shards):
        digest.update("|".join(recorded[i][1] for i in range(len(store.shards))).encode())
    else:
        head = store.read(0, sample_rows)
        tail = store.read(max(0, store.count - sample_rows), store.count)
        digest.update(np.ascontiguousarray(head).tobytes() + np.ascontiguousarray(tail).tobytes())
    return {
        "path": os.path.abspath(store.path),
        "count": store.count,
        "dim": store.dim,
        "content": digest.hexdigest(),
    }


def training_store(sae_path: str | os.PathLike[str]) -> tuple[Path | None, str]:
    """The image store the SAE in folder ``sae_path`` was trained on, when its training record
    names one that is still there and holds the same embeddings (same fingerprint); else None
    and why not (one clause).

    It is a sample of the domain the SAE was made for, so names checked against it are checked
    where the SAE is used. SAEs that were not trained here (released weights, a reference
    checkpoint, a file rather than a folder) record none."""
    folder = Path(sae_path)
    record = folder / TRAINING_RECORD
    if not folder.is_dir() or not record.is_file():
        return None, "the SAE records no training data (it was not trained by msae-audit train)"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))["data"]
        path, content = Path(data["path"]), str(data["content"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None, f"{record} names no training store"
    if not path.exists():
        return None, f"the store it was trained on, {path}, is not there"
    try:
        store = open_store(path)
    except InputError as error:
        return None, f"the store it was trained on cannot be read ({error})"
    if store.modality not in (None, "image"):
        return None, f"it was trained on {store.modality} embeddings, not images"
    if data_fingerprint(store)["content"] != content:
        return None, f"{path} no longer holds the embeddings it was trained on"
    return path, ""
