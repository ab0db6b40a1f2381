"""Text embeddings of a vocabulary: a prompt ensemble embedded with CLIP, or precomputed rows."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from audit.concepts.vocabulary import DEFAULT_TEMPLATES, Vocabulary, validate_templates
from audit.errors import InputError


def vocabulary_embeddings(
    vocab: Vocabulary,
    encode: Callable[[list[str]], np.ndarray],
    templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES,
) -> np.ndarray:
    """Raw text embeddings ``[V, d]``: each entry wrapped in every template, embedded, the
    unit-normalised template embeddings averaged (the usual CLIP prompt ensemble) and the
    mean rescaled to the entry's mean raw norm, so rows stay in raw embedding space."""
    templates = validate_templates(templates)
    total = None
    norms = None
    for template in templates:
        emb = np.asarray(encode([template.format(e) for e in vocab.entries]), dtype=np.float32)
        n = np.linalg.norm(emb, axis=1, keepdims=True)
        unit = emb / np.maximum(n, 1e-12)
        total = unit if total is None else total + unit
        norms = n if norms is None else norms + n
    assert total is not None and norms is not None
    mean_dir = total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    return (mean_dir * (norms / len(templates))).astype(np.float32)


def read_text_embeddings(path: str | os.PathLike[str], vocab: Vocabulary, dim: int) -> np.ndarray:
    """Precomputed text embeddings row-aligned with ``vocab`` (a ``.npy`` or an embedding store
    from ``msae-audit embed texts``); rows and dimension are checked."""
    from audit.store import open_store

    store = open_store(path)
    if store.dim != dim:
        raise InputError(
            f"{path}: text embeddings have dimension {store.dim}, but the SAE expects {dim}"
        )
    if store.count != len(vocab):
        raise InputError(
            f"{path}: {store.count} text embeddings for {len(vocab)} vocabulary entries "
            "(rows must align with the vocabulary after blank lines, comments and duplicates "
            "are removed; `msae-audit embed texts VOCAB` writes exactly these rows)"
        )
    if store.metadata is not None and "text" in store.metadata.columns:
        texts = store.metadata["text"].astype(str).tolist()
        for i, (a, b) in enumerate(zip(texts, vocab.entries, strict=True)):
            if a != b:
                raise InputError(
                    f"{path}: row {i} embeds {a!r} but the vocabulary's entry {i} is {b!r}"
                )
    emb = store.read()
    if not np.isfinite(emb).all():
        raise InputError(f"{path}: text embeddings contain NaN or inf")
    return emb
