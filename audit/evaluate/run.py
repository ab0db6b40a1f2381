"""One chunked pass over a store scoring the inference code and every progressive level."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from audit.device import resolve_device
from audit.errors import InputError
from audit.evaluate.config import (
    EvalConfig,
    ProgressCallback,
)
from audit.evaluate.document import _sae_info, _store_info, eval_document, json_safe
from audit.evaluate.probe import LinearProbe, _ProbeScores, fit_probe
from audit.evaluate.progressive import nested_topk_decodes
from audit.metrics import (
    ReconstructionAccumulator,
    SpreadAccumulator,
    cknna,
    decoder_orthogonality,
    progressive_ks,
)
from audit.sae import SparseAutoencoder, keep_topk, sae_fingerprint
from audit.store import EmbeddingStore


def inference_description(
    model: SparseAutoencoder, topk: int | None, code: str = "inference"
) -> str:
    base = model.inference_description() if code == "inference" else "relu(pre)"
    return f"topk({base}, {topk})" if topk is not None else base


def evaluated_code(model: SparseAutoencoder, x: Tensor, cfg: EvalConfig) -> Tensor:
    """The code the evaluation scores (see :attr:`EvalConfig.code`), top-``cfg.topk`` if set."""
    if cfg.code == "inference":
        return model.encode(x, topk=cfg.topk)
    z = model._cap(model.pre_activations(model.preprocess(x)).clamp_min(0))
    return keep_topk(z, cfg.topk) if cfg.topk is not None else z


@dataclass
class _Pass:
    """What the chunked pass accumulates: the data's spread, one accumulator per level, which
    latents fired, the probe's scores and the pass's duration."""

    spread: SpreadAccumulator
    levels: list[ReconstructionAccumulator]
    fired: Tensor
    probe_scores: _ProbeScores | None
    seconds: float


@torch.inference_mode()
def evaluate_sae(
    model: SparseAutoencoder,
    store: EmbeddingStore,
    cfg: EvalConfig | None = None,
    *,
    labels: pd.Series | None = None,
    label_column: str | None = None,
    sae_path: str | None = None,
    probe: LinearProbe | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on every row of ``store``; returns the eval JSON as a dict.

    ``labels`` (row-aligned, missing values allowed) enables LP-KL and LP-agreement: a logistic
    probe is fit on a seeded subset of the labelled rows (:func:`fit_probe`) and the remaining
    labelled rows are scored on ``x`` and ``x̂``. Pass ``probe`` to reuse one fit (when comparing
    several SAEs on the same data).
    ``on_progress(rows_done, rows_total)`` is called after every chunk.
    """
    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    _check_store(model, store, sae_path)
    device = resolve_device(cfg.device)
    fingerprint = sae_fingerprint(model)
    model = model.to(device).eval()
    chunk_rows = cfg.rows_per_chunk(model.n_latents)
    ks = progressive_ks(model.n_latents) if cfg.progressive else [model.n_latents]

    if probe is None and labels is not None:
        probe = fit_probe(store, labels, cfg, label_column)
    if probe is not None and len(probe.label_codes) != store.count:
        raise InputError(f"the probe was fit for {len(probe.label_codes)} rows, not {store.count}")
    scored = _reconstruction_pass(model, store, cfg, ks, probe, device, on_progress)

    cknna_started = time.perf_counter()
    cknna_value, cknna_rows = _cknna_on_subsample(model, store, cfg, device, chunk_rows)
    cknna_seconds = time.perf_counter() - cknna_started
    do_value = decoder_orthogonality(model.W_dec)
    total_seconds = time.perf_counter() - started

    n = model.n_latents
    main = scored.levels[-1].summary(scored.spread, n)
    dead = int((~scored.fired).sum())
    progressive = _progressive_summaries(scored, ks, n) if cfg.progressive else []
    probe_summary = scored.probe_scores.summary() if scored.probe_scores is not None else None
    result = eval_document(
        sae=_sae_info(model, sae_path, fingerprint),
        store=_store_info(store),
        code=inference_description(model, cfg.topk, cfg.code),
        cfg=cfg,
        main=main,
        metrics={
            "n_samples": store.count,
            "n_latents": n,
            "cknna": cknna_value,
            "decoder_orthogonality": do_value,
            "dead_latents": dead,
            "dead_fraction": dead / n,
        },
        probe_summary=probe_summary,
        cknna_rows=cknna_rows,
        progressive=progressive,
        chunk_rows=chunk_rows,
        timing=_timing(device, total_seconds, scored.seconds, cknna_seconds, probe, store.count),
    )
    return json_safe(result)


def _progressive_summaries(scored: _Pass, ks: list[int], n: int) -> list[dict[str, Any]]:
    """The reconstruction summary at each level ``k`` of the progressive evaluation."""
    return [
        {"k": k, **acc.summary(scored.spread, n)} for k, acc in zip(ks, scored.levels, strict=True)
    ]


def _timing(
    device: torch.device,
    total_seconds: float,
    pass_seconds: float,
    cknna_seconds: float,
    probe: LinearProbe | None,
    count: int,
) -> dict[str, Any]:
    """The eval JSON's ``timing`` section."""
    return {
        "device": str(device),
        "seconds_total": total_seconds,
        "seconds_reconstruction_pass": pass_seconds,
        "seconds_cknna": cknna_seconds,
        "seconds_probe_fit": probe.fit_seconds if probe is not None else 0.0,
        "rows_per_second": count / pass_seconds if pass_seconds > 0 else None,
    }


def _check_store(model: SparseAutoencoder, store: EmbeddingStore, sae_path: str | None) -> None:
    store.check_model(
        model.cfg.embedding_model, model.cfg.pretrained,
        f"the SAE{f' {sae_path}' if sae_path else ''} was trained on", "embeddings",
    )  # fmt: skip
    if store.dim != model.d_in:
        where = f" {sae_path}" if sae_path else ""
        raise InputError(
            f"embeddings {store.path} have dimension {store.dim} but the SAE{where} expects "
            f"{model.d_in}"
        )
    if store.count == 0:
        raise InputError(f"{store.path}: no embeddings to evaluate")


def _reconstruction_pass(
    model: SparseAutoencoder,
    store: EmbeddingStore,
    cfg: EvalConfig,
    ks: list[int],
    probe: LinearProbe | None,
    device: torch.device,
    on_progress: ProgressCallback | None,
) -> _Pass:
    """One pass over ``store`` in row chunks: every level's sums, firing and probe scores."""
    chunk_rows, total = cfg.rows_per_chunk(model.n_latents), store.count
    scored = _Pass(
        spread=SpreadAccumulator(),
        levels=[ReconstructionAccumulator() for _ in ks],
        fired=torch.zeros(model.n_latents, dtype=torch.bool, device=device),
        probe_scores=_ProbeScores(probe) if probe is not None else None,
        seconds=0.0,
    )
    W_dec, b_pre = model.W_dec, model.b_pre
    pass_started = time.perf_counter()
    for lo, block in store.iter_chunks(chunk_rows):
        x = _as_tensor(block, device)
        finite = torch.isfinite(x).all(1)
        if not bool(finite.all()):
            row = lo + int(torch.nonzero(~finite)[0, 0])
            raise InputError(f"{store.path}: row {row} contains NaN or inf values")
        z = evaluated_code(model, x, cfg)
        active = (z > 0).sum(1)  # codes are non-negative
        scored.fired |= z.amax(0) > 0
        scored.spread.update(x)
        x_spread = (x - x.mean(1, keepdim=True)).pow(2).sum(1)
        x_norm = x.norm(dim=1)
        decodes = nested_topk_decodes(z, W_dec, ks, active)
        for k, acc, part in zip(ks, scored.levels, decodes, strict=True):
            x_hat = model.postprocess(part + b_pre)
            acc.update(x, x_hat, active.clamp_max(k), x_spread=x_spread, x_norm=x_norm)
        if scored.probe_scores is not None:
            scored.probe_scores.update(lo, x, model.postprocess(decodes[-1] + b_pre))
        if on_progress is not None:
            on_progress(min(lo + chunk_rows, total), total)
    scored.seconds = time.perf_counter() - pass_started
    return scored


def _cknna_on_subsample(
    model: SparseAutoencoder,
    store: EmbeddingStore,
    cfg: EvalConfig,
    device: torch.device,
    chunk_rows: int,
) -> tuple[float | None, int]:
    m = min(cfg.cknna_samples, store.count)
    if m < max(4, cfg.cknna_k + 1):
        return None, 0
    rows = np.sort(np.random.default_rng(cfg.seed).choice(store.count, m, replace=False))
    x = _as_tensor(store.take(rows), device)
    z = torch.cat([evaluated_code(model, part, cfg) for part in x.split(chunk_rows)])
    return cknna(x, z, cfg.cknna_k), m


def _as_tensor(block: np.ndarray, device: torch.device) -> Tensor:
    # Store reads can be read-only views of the memory map; torch wants writable memory.
    if not block.flags.writeable:
        block = block.copy()
    return torch.from_numpy(block).to(device)
