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

Modules: ``layout`` (format constants, :class:`EmbeddingStore`), ``reading`` (:func:`open_store`,
label CSVs), ``writing`` (:class:`StoreWriter`, :func:`write_store`).
"""

from audit.store.layout import (
    ALLOWED_DTYPES,
    DEFAULT_SHARD_ROWS,
    PARTIAL_DIR,
    STORE_FORMAT,
    STORE_VERSION,
    EmbeddingStore,
    verify_sha256,
)
from audit.store.reading import id_text, open_store, read_labels_csv
from audit.store.writing import StoreWriter, remove_store_files, write_store

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_SHARD_ROWS",
    "PARTIAL_DIR",
    "STORE_FORMAT",
    "STORE_VERSION",
    "EmbeddingStore",
    "StoreWriter",
    "id_text",
    "open_store",
    "read_labels_csv",
    "remove_store_files",
    "verify_sha256",
    "write_store",
]
