"""The eval JSON: the SAE and store descriptions, and JSON-safe numbers."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from audit import __version__
from audit.evaluate.config import EVAL_SCHEMA, EVAL_VERSION, EvalConfig
from audit.sae import SparseAutoencoder
from audit.store import EmbeddingStore


def _sae_info(model: SparseAutoencoder, path: str | None, fingerprint: str) -> dict[str, Any]:
    cfg = model.cfg
    info: dict[str, Any] = {
        "path": path,
        "fingerprint": fingerprint,
        "arch": cfg.arch,
        "d_in": cfg.d_in,
        "n_latents": cfg.n_latents,
    }
    if cfg.k is not None:
        info["k"] = cfg.k
    if cfg.k_list is not None:
        info["k_list"] = list(cfg.k_list)
        info["weighting"] = cfg.weighting
    if cfg.l1 is not None:
        info["l1"] = cfg.l1
    info["embedding_model"] = cfg.embedding_model
    return info


def _store_info(store: EmbeddingStore) -> dict[str, Any]:
    return {
        "path": str(store.path),
        "count": store.count,
        "dim": store.dim,
        "dtype": str(store.dtype),
        "model": store.model,
        "pretrained": store.pretrained,
        "modality": store.modality,
        "normalized": store.manifest.get("normalized"),
    }


def json_safe(value: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no such numbers); containers recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def eval_document(
    *,
    sae: dict[str, Any],
    store: dict[str, Any],
    code: str,
    cfg: EvalConfig,
    main: dict[str, float],
    metrics: dict[str, Any],
    probe_summary: dict[str, Any] | None,
    cknna_rows: int,
    progressive: list[dict[str, Any]],
    chunk_rows: int,
    timing: dict[str, Any],
) -> dict[str, Any]:
    """The eval JSON (``"schema": "msae-audit/eval"``; docs/schemas/eval.schema.json), keys in
    the order the file has always had."""
    return {
        "schema": EVAL_SCHEMA,
        "version": EVAL_VERSION,
        "msae_audit_version": __version__,
        "sae": sae,
        "store": store,
        "inference": {
            "code": code,
            "topk": cfg.topk,
            "space": "raw embedding space (x̂ = post(decode(z)))",
        },
        "n_samples": metrics["n_samples"],
        "n_latents": metrics["n_latents"],
        "l0": main["l0"],
        "frac_zeros": main["frac_zeros"],
        "fvu": main["fvu"],
        "fvu_per_sample": main["fvu_per_sample"],
        "cosine": main["cosine"],
        "cknna": metrics["cknna"],
        "decoder_orthogonality": metrics["decoder_orthogonality"],
        "dead_latents": metrics["dead_latents"],
        "dead_fraction": metrics["dead_fraction"],
        "lp_kl": probe_summary["kl"] if probe_summary else None,
        "lp_agreement": probe_summary["agreement"] if probe_summary else None,
        "linear_probe": probe_summary,
        "cknna_detail": {
            "k": cfg.cknna_k,
            "samples": cknna_rows,
            "seed": cfg.seed,
            "between": "embeddings x and SAE codes z (linear kernels), as in the paper",
        },
        "progressive": progressive,
        "settings": {**asdict(cfg), "chunk_rows": chunk_rows},
        "timing": timing,
    }
