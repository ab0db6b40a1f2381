"""Opening the audit's input files and recording where they came from (paths, hashes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from audit.concepts import ConceptBank, load_bank, resolve_bank
from audit.errors import InputError
from audit.fairness.classifiers import Classifier, load_classifier
from audit.fileio import file_sha256
from audit.sae import SparseAutoencoder, load_sae, sae_fingerprint
from audit.store import EmbeddingStore, open_store


def store_sha256(store: EmbeddingStore) -> str:
    """sha256 of the embedding file (a store: of its shard files' hashes, in order)."""
    p = Path(store.path)
    if p.is_file():
        return file_sha256(p)
    digest = hashlib.sha256()
    for i in range(len(store.shards)):
        shard = store.shard_sha256(i)  # the manifest's, checked once: no second hashing pass
        if shard is not None:
            digest.update(shard.encode())
    return "sha256:" + digest.hexdigest()


def _open_labelled_store(
    embeddings: str | os.PathLike[str], labels: str | os.PathLike[str] | pd.DataFrame | None
) -> EmbeddingStore:
    if isinstance(labels, pd.DataFrame):
        store = open_store(embeddings)
        if len(labels) != store.count:
            raise InputError(
                f"labels have {len(labels)} rows but the embeddings have {store.count}"
            )
        store.metadata = labels.reset_index(drop=True)
    else:
        store = open_store(embeddings, labels)
    if store.metadata is None:
        raise InputError(f"{embeddings} has no metadata.csv; pass --labels FILE.csv")
    store.check_finite()  # a NaN row is bad input (exit 2), not an integrity failure (exit 3)
    return store


def _labels_record(
    store: EmbeddingStore,
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str] | pd.DataFrame | None,
) -> dict[str, Any]:
    if isinstance(labels, pd.DataFrame):
        digest = hashlib.sha256(
            pd.util.hash_pandas_object(store.metadata, index=False).to_numpy().tobytes()
        )
        source = str(labels.attrs.get("source", "a labels table"))
        return {"path": None, "sha256": "sha256:" + digest.hexdigest(), "source": source}
    path = Path(labels) if labels is not None else Path(embeddings) / "metadata.csv"
    return {"path": str(path), "sha256": file_sha256(path)}


def load_inputs(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str] | pd.DataFrame | None,
    sae: str | os.PathLike[str],
    bank: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    classifier_input: str = "raw",
) -> tuple[EmbeddingStore, pd.DataFrame, SparseAutoencoder, ConceptBank, Classifier | str, dict]:
    """Open every input (one-line :class:`InputError` for anything wrong) and record provenance."""
    store = _open_labelled_store(embeddings, labels)
    model = load_sae(sae)
    bank_obj = load_bank(bank)
    clf: Classifier | str
    if str(classifier) == "probe":
        clf = "probe"
    else:
        clf = load_classifier(classifier, store.dim, classifier_input)
    bank_path = resolve_bank(bank)
    provenance = {
        "embeddings": {
            "path": str(embeddings),
            "sha256": store_sha256(store),
            "rows": store.count,
            "dim": store.dim,
            "model": store.model,
            "pretrained": store.pretrained,
        },
        "labels": _labels_record(store, embeddings, labels),
        "sae": {
            "path": str(sae),
            "fingerprint": sae_fingerprint(model),
            "arch": model.cfg.arch,
            "d_in": model.d_in,
            "n_latents": model.n_latents,
            "embedding_model": model.cfg.embedding_model,
        },
        "bank": {
            "name": bank_obj.name,
            "path": str(bank_path),
            "sha256": file_sha256(bank_path),
            "latents": len(bank_obj.concepts),
            "validated": len(bank_obj.named(validated_only=True)),
            "validation": bank_obj.validation_method,
        },
        "classifier": {"kind": "probe"} if clf == "probe" else {},
    }
    assert store.metadata is not None
    return store, store.metadata, model, bank_obj, clf, provenance
