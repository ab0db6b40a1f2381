"""What ``msae-audit concepts`` does before writing the bank: load the SAE, the vocabulary, its
text embeddings and the probe images, then name."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from audit.concepts.images import ImageNamingSettings
from audit.concepts.matching import DEFAULT_ALTERNATIVES, DEFAULT_TOP_M
from audit.concepts.naming import NamingResult, name_latents
from audit.concepts.text import read_text_embeddings, vocabulary_embeddings
from audit.concepts.vocabulary import (
    DEFAULT_TEMPLATES,
    Vocabulary,
    load_vocabulary,
    validate_templates,
)
from audit.errors import InputError


def sae_description(sae: Any, sae_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a bank records about the SAE it was built from."""
    from audit.sae import sae_fingerprint

    cfg = sae.cfg
    return {
        "fingerprint": sae_fingerprint(sae),
        "path": str(Path(sae_path).resolve()),
        "arch": cfg.arch,
        "d_in": int(cfg.d_in),
        "n_latents": int(cfg.n_latents),
        "embedding_model": cfg.embedding_model,
        "pretrained": cfg.pretrained,
        "modality": cfg.modality,
    }


def read_probe_images(
    path: str | os.PathLike[str], sae: Any, settings: ImageNamingSettings
) -> tuple[np.ndarray, dict[str, Any]]:
    """Image embeddings to check names against (a store or ``.npy`` of the SAE's model): at
    most ``settings.max_probe`` rows, a seeded sample of larger stores."""
    from audit.store import open_store

    store = open_store(path)
    dim = sae.d_in
    store.check_model(
        sae.cfg.embedding_model, sae.cfg.pretrained, "the SAE was trained on", "probe images"
    )
    if store.dim != dim:
        raise InputError(
            f"{path}: probe images have dimension {store.dim}, but the SAE expects {dim}"
        )
    if store.modality not in (None, "image"):
        raise InputError(f"{path}: probe embeddings must be images, not {store.modality}")
    if store.count > settings.max_probe:
        rng = np.random.default_rng([settings.seed, 0x9A3F])
        rows = np.sort(rng.choice(store.count, settings.max_probe, replace=False))
        x = store.take(rows)
    else:
        x = store.read()
    source = {"path": str(Path(path).resolve()), "store_rows": int(store.count)}
    return np.asarray(x, dtype=np.float32), source


def build_bank(
    *,
    sae_path: str | os.PathLike[str],
    vocab_specs: list[str],
    bank_name: str,
    model: str | None = None,
    pretrained: str | None = None,
    text_embeddings: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    templates: tuple[str, ...] = DEFAULT_TEMPLATES,
    top_m: int = DEFAULT_TOP_M,
    alternatives: int = DEFAULT_ALTERNATIVES,
    device: str = "auto",
    clip: Any = None,
    log: Callable[[str], None] | None = None,
    probe_images: str | os.PathLike[str] | None = None,
    image_settings: ImageNamingSettings | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> NamingResult:
    """Everything ``msae-audit concepts`` does before writing the bank.

    Text embeddings come from ``text_embeddings`` (precomputed, row-aligned with the
    vocabulary), from an already loaded ``clip`` encoder, or from ``model``/``pretrained``
    (defaulting to the model recorded with the SAE). With ``probe_images`` (a store of image
    embeddings from the same model) names are chosen and validated against those images.
    ``progress(stage, done, total)`` follows the text embedding and the matching of latents to
    words.
    """
    from audit.sae import load_sae

    say = log or (lambda message: None)
    if threshold is not None and not math.isfinite(threshold):
        raise InputError(f"--threshold must be a finite cosine, got {threshold}")
    if alternatives < 0:
        raise InputError(f"--alternatives must be 0 or more, got {alternatives}")
    sae = load_sae(sae_path)
    vocab = load_vocabulary(vocab_specs)
    templates = tuple(validate_templates(templates))
    settings = image_settings or ImageNamingSettings()
    probe, probe_source = None, None
    if probe_images is not None:
        probe, probe_source = read_probe_images(probe_images, sae, settings)
    started = time.perf_counter()
    emb, text_source, names = _text_embeddings(
        sae, vocab, text_embeddings, model, pretrained, templates, device, clip, say, progress
    )
    text_seconds = time.perf_counter() - started
    if probe is not None:
        say(f"naming {sae.n_latents} latents against {len(probe)} probe images")
    result = name_latents(
        sae,
        vocab,
        emb,
        bank_name=bank_name,
        sae_info=sae_description(sae, sae_path),
        threshold=threshold,
        top_m=top_m,
        alternatives=alternatives,
        embedding_model=names[0],
        pretrained=names[1],
        text_source=text_source,
        probe_images=probe,
        probe_source=probe_source,
        image_settings=settings,
        progress=(lambda done, total: progress("name latents", done, total)) if progress else None,
    )
    result.seconds["text_embeddings"] = text_seconds
    return result


def _text_embeddings(
    sae: Any,
    vocab: Vocabulary,
    text_embeddings: str | os.PathLike[str] | None,
    model: str | None,
    pretrained: str | None,
    templates: tuple[str, ...],
    device: str,
    clip: Any,
    say: Callable[[str], None],
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any], tuple[str | None, str | None]]:
    """The vocabulary's text embeddings, what the bank records about them, and the model."""
    if text_embeddings is not None:
        if model is not None or clip is not None:
            raise InputError("give either --text-embeddings or --model/--pretrained, not both")
        if pretrained is not None:
            raise InputError("give either --text-embeddings or --pretrained, not both")
        from audit.store import open_store

        store = open_store(text_embeddings)
        store.check_model(
            sae.cfg.embedding_model, sae.cfg.pretrained, "the SAE was trained on",
            "text embeddings",
        )  # fmt: skip
        emb = read_text_embeddings(text_embeddings, vocab, sae.d_in)
        source = {"text_embeddings": str(Path(text_embeddings).resolve()), "templates": None}
        # What the embeddings record, else (a plain .npy) what the SAE does.
        return emb, source, (
            store.model or sae.cfg.embedding_model, store.pretrained or sae.cfg.pretrained,
        )  # fmt: skip
    if clip is None:
        from audit.encoders import load_clip

        model = model or sae.cfg.embedding_model
        pretrained = pretrained or sae.cfg.pretrained
        if not model:
            raise InputError(
                "the SAE records no embedding model: pass --model and --pretrained, "
                "or --text-embeddings"
            )
        say(f"loading {model} ({pretrained}) to embed {len(vocab)} entries")
        clip = load_clip(model, pretrained, device=device)
    if clip.embed_dim != sae.d_in:
        raise InputError(
            f"the text model gives {clip.embed_dim}-dimensional embeddings but the SAE "
            f"expects {sae.d_in}: is this the model the SAE was trained for?"
        )
    encode = _reporting_encoder(clip, len(vocab) * len(templates), progress)
    emb = vocabulary_embeddings(vocab, encode, templates)
    return emb, {"templates": list(templates)}, (clip.model_id, clip.pretrained)


def _reporting_encoder(
    clip: Any, total: int, progress: Callable[[str, int, int], None] | None
) -> Callable[[list[str]], np.ndarray]:
    """``clip.encode_texts``, reporting the texts done over its successive calls (one per
    prompt template) out of ``total``."""
    if progress is None:
        return clip.encode_texts
    finished = 0

    def encode(texts: list[str]) -> np.ndarray:
        nonlocal finished
        start = finished
        out = clip.encode_texts(
            texts, progress=lambda done, _n: progress("embed vocabulary", start + done, total)
        )
        finished += len(texts)
        return out

    return encode
