"""Chunked SAE evaluation: every metric of :mod:`audit.metrics` over an embedding store.

One pass over the store in row chunks computes, for the inference code ``z = encode(x)`` (or its
top-``K`` with ``topk``) and for each progressive level ``k = 16, 32, …, n`` (``z`` limited to its
``k`` largest entries), the running sums behind L0, both FVUs and the cosine, plus latent firing
counts and the linear-probe comparison. Memory is bounded by the chunk (``[chunk_rows, n]``), not
by the store: a million rows never become a million-row matrix. CKNNA runs on a seeded
subsample (default 4096 rows, as the paper's batch-wise estimate does on batches), decoder
orthogonality on the ``[d, d]`` Gram matrix of the decoder.

Progressive levels share their top entries, so instead of one full decode per level the chunk is
decoded once (``F = z W_dec``) and each level is written as a sum of rank segments: small levels
as heads ``Σ_{s ≤ i} C_s``, large ones as tails ``F − Σ_{s > i} C_s``; the widest segment is never
decoded and narrow segments are decoded as sparse CSR products (:func:`nested_topk_decodes`).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from audit import __version__
from audit.device import resolve_device
from audit.errors import InputError
from audit.metrics import (
    CKNNA_K,
    ReconstructionAccumulator,
    SpreadAccumulator,
    cknna,
    decoder_orthogonality,
    probe_agreement,
    probe_kl,
    progressive_ks,
)
from audit.sae import SparseAutoencoder, keep_topk, sae_fingerprint
from audit.store import EmbeddingStore

EVAL_SCHEMA = "msae-audit/eval"
EVAL_VERSION = 1
#: A CSR decode costs about this many dense multiply-adds per stored entry on a CPU; segments
#: denser than 1/SPARSE_COST_FACTOR are decoded densely (see audit/sae/nested.py).
SPARSE_COST_FACTOR = 10.0
#: Automatic chunking aims at [rows, n] code matrices of about this many entries (64 MiB fp32).
CHUNK_ELEMENTS = 1 << 24

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ProgressCallback = Callable[[int, int], None]
EVAL_CODES = ("inference", "relu")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation (all recorded in the JSON)."""

    topk: int | None = None  # evaluate the code limited to its top-k (None: the plain code)
    # "inference": each architecture's inference code (TopK: its top-k code, so progressive
    # levels beyond k repeat k); "relu": ReLU(pre) for every architecture, what the reference
    # evaluation scores (for TopK beyond k it adds latents the model never used together).
    code: str = "inference"
    chunk_rows: int | None = None  # rows per chunk; None: about CHUNK_ELEMENTS / n
    device: str = "auto"
    progressive: bool = True
    cknna_samples: int = 4096  # rows in the seeded CKNNA subsample
    cknna_k: int = CKNNA_K
    seed: int = 0  # for the CKNNA subsample and the probe's fit/score split
    probe_fit_rows: int = 20_000  # at most this many labelled rows (and at most half) fit the probe
    probe_c: float = 1.0  # inverse L2 strength of the logistic probe (scikit-learn's C)

    def __post_init__(self) -> None:
        if self.topk is not None and self.topk < 1:
            raise InputError(f"--topk must be a positive integer, got {self.topk}")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise InputError(f"--chunk-rows must be a positive integer, got {self.chunk_rows}")
        if self.cknna_samples < 0:
            raise InputError(f"--cknna-samples must be non-negative, got {self.cknna_samples}")
        if self.cknna_k < 2:
            raise InputError(f"CKNNA needs k >= 2, got {self.cknna_k}")
        if self.probe_fit_rows < 2:
            raise InputError(f"probe_fit_rows must be at least 2, got {self.probe_fit_rows}")
        if not (self.probe_c > 0 and math.isfinite(self.probe_c)):
            raise InputError(f"--probe-c must be a positive number, got {self.probe_c}")
        if self.code not in EVAL_CODES:
            raise InputError(f"code must be one of {', '.join(EVAL_CODES)}, got {self.code!r}")

    def rows_per_chunk(self, n_latents: int) -> int:
        if self.chunk_rows is not None:
            return self.chunk_rows
        return int(min(1 << 16, max(256, CHUNK_ELEMENTS // max(1, n_latents))))


# ------------------------------------------------------------------------------------------
# Progressive decoding
# ------------------------------------------------------------------------------------------


def _decode_entries(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """``code @ W_dec`` for a code given as ``w`` (value, latent) entries per row (``[B, w]``)."""
    rows, width = values.shape
    n = W_dec.shape[0]
    if width == 0:
        return W_dec.new_zeros(rows, W_dec.shape[1])
    if SPARSE_COST_FACTOR * width >= n:
        dense = values.new_zeros(rows, n).scatter_(1, indices, values)
        return dense @ W_dec
    crow = torch.arange(0, rows * width + 1, width, device=values.device)
    code = torch.sparse_csr_tensor(
        crow,
        indices.reshape(-1),
        values.reshape(-1),
        size=(rows, n),
        check_invariants=False,
    )
    return code @ W_dec


def _chain_segments(
    z: Tensor, levels: Sequence[int], skip: int
) -> tuple[list[tuple[Tensor, Tensor] | None], Tensor]:
    """Entries of each rank segment ``[levels[j−1], levels[j])`` (``levels[−1] = 0``) of every row.

    One unsorted top-``levels[-1]`` of ``z``, then a chain of shrinking top-k calls on the
    survivors: cheaper than sorting each row. Returns the segments' ``(values, latents)``
    (``[B, width]`` each; ``None`` for segment ``skip``, which the caller never decodes) and the
    latents of the largest level (``[B, levels[-1]]``).
    """
    rows = z.shape[0]
    top_values, top_latents = torch.topk(z, levels[-1], dim=1, sorted=False)
    segments: list[tuple[Tensor, Tensor] | None] = [None] * len(levels)
    values, latents = top_values, top_latents
    for j in range(len(levels) - 1, 0, -1):
        inner_values, position = torch.topk(values, levels[j - 1], dim=1, sorted=False)
        if j != skip:
            outer = torch.ones_like(values, dtype=torch.bool).scatter_(1, position, False)
            width = levels[j] - levels[j - 1]
            segments[j] = (values[outer].view(rows, width), latents[outer].view(rows, width))
        values, latents = inner_values, latents.gather(1, position)
    segments[0] = (values, latents)
    return segments, top_latents


def nested_topk_decodes(
    z: Tensor, W_dec: Tensor, ks: Sequence[int], active: Tensor | None = None
) -> list[Tensor]:
    """``keep_topk(z, k) @ W_dec`` for every ``k`` in ``ks`` (ascending), from one full decode.

    ``z``: ``[B, n]``, non-negative (every architecture's code is); ``W_dec``: ``[n, d]``. Returns
    one ``[B, d]`` tensor per ``k`` (no bias; levels at or above the largest active count are the
    full decode itself). Exact up to floating-point rounding, except that among exactly tied
    values ``torch.topk`` may pick other latents than a separate top-k call would.

    With ``A`` the largest active count and levels ``k_1 < … < k_L < A``, rank segment ``s`` holds
    each row's entries ranked ``[k_s, k_{s+1})`` (``k_0 = 0``, ``k_{L+1} = A``). Level ``j`` is
    segments ``0..j``: small levels are decoded as heads ``Σ_{s ≤ j} C_s``, large ones as tails
    ``F − Σ_{s > j} C_s`` with ``F = z W_dec``, split at the widest segment, which is never
    decoded. ``active`` (``[B]``, the non-zero count of each row) saves recounting.
    """
    ks = [int(k) for k in ks]
    if ks != sorted(ks) or (ks and ks[0] < 1):
        raise ValueError(f"ks must be ascending positive integers, got {ks}")
    full = z @ W_dec
    out = [full] * len(ks)
    if active is None:
        active = (z > 0).sum(1)
    top = int(active.max()) if z.shape[0] else 0
    need = [i for i, k in enumerate(ks) if k < top]
    if not need:
        return out
    levels = [ks[i] for i in need]
    bounds = [0, *levels, top]
    widths = [b - a for a, b in itertools.pairwise(bounds)]
    split = max(range(len(widths)), key=lambda s: (widths[s], s))
    segments, top_latents = _chain_segments(z, levels, skip=split)

    def decode(s: int) -> Tensor:
        if s < len(levels):
            values, latents = segments[s]  # type: ignore[misc]
        else:  # ranks levels[-1] … top: what the largest level leaves of z
            rest = z.scatter(1, top_latents, 0.0)
            values, latents = torch.topk(rest, top - levels[-1], dim=1, sorted=False)
        return _decode_entries(values, latents, W_dec)

    head: Tensor | None = None
    for j in range(split):
        head = decode(j) if head is None else head + decode(j)
        out[need[j]] = head
    tail = full
    for j in range(len(levels) - 1, split - 1, -1):
        tail = tail - decode(j + 1)
        out[need[j]] = tail
    return out


# ------------------------------------------------------------------------------------------
# Linear probe
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearProbe:
    """A logistic probe fit on some labelled rows of a store; the other labelled rows are scored.

    Features are ``x / ‖x‖`` (as in the paper), standardised with the fit rows' statistics, then
    ``sklearn.linear_model.LogisticRegression(C)``: a linear classifier of the embedding
    direction. It depends on the store, the labels and the seed only, so one probe serves every
    SAE evaluated on the same data.
    """

    model: Any  # sklearn Pipeline(StandardScaler, LogisticRegression)
    label_codes: np.ndarray  # [N] class index per row, -1 where unlabelled
    scored: np.ndarray  # [N] bool: labelled and not used for fitting
    classes: tuple[str, ...]
    fit_rows: int
    label_column: str | None
    fit_seconds: float

    def logits(self, x: Tensor) -> np.ndarray:
        """Decision values ``[B, C]`` (``[B]`` for two classes) for raw embeddings ``[B, d]``."""
        unit = x.double() / x.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
        return np.asarray(self.model.decision_function(unit.cpu().numpy()))

    def predict(self, logits: np.ndarray) -> np.ndarray:
        column = (logits > 0).astype(int) if logits.ndim == 1 else logits.argmax(1)
        return np.asarray(self.model.classes_)[column]


@dataclass
class _ProbeScores:
    """Running sums of the probe comparison over the scored rows of each chunk."""

    probe: LinearProbe
    kl: float = 0.0
    agree: float = 0.0
    correct_x: float = 0.0
    correct_x_hat: float = 0.0
    rows: int = 0

    def update(self, lo: int, x: Tensor, x_hat: Tensor) -> None:
        mask = self.probe.scored[lo : lo + x.shape[0]]
        if not mask.any():
            return
        sel = torch.from_numpy(mask).to(x.device)
        logit_x, logit_hat = self.probe.logits(x[sel]), self.probe.logits(x_hat[sel])
        self.kl += float(probe_kl(logit_x, logit_hat).sum())
        self.agree += float(probe_agreement(logit_x, logit_hat).sum())
        truth = self.probe.label_codes[lo : lo + x.shape[0]][mask]
        self.correct_x += float((self.probe.predict(logit_x) == truth).sum())
        self.correct_x_hat += float((self.probe.predict(logit_hat) == truth).sum())
        self.rows += int(mask.sum())

    def summary(self) -> dict[str, Any]:
        rows = max(1, self.rows)
        probe = self.probe
        return {
            "label_column": probe.label_column,
            "classes": list(probe.classes),
            "features": "x / ||x|| (L2-normalised, as in the paper), standardised",
            "model": f"sklearn StandardScaler + LogisticRegression(C={probe.model[-1].C})",
            "fit_rows": probe.fit_rows,
            "scored_rows": self.rows,
            "kl": self.kl / rows,
            "agreement": self.agree / rows,
            "accuracy_x": self.correct_x / rows,
            "accuracy_x_hat": self.correct_x_hat / rows,
        }


def fit_probe(
    store: EmbeddingStore,
    labels: pd.Series,
    cfg: EvalConfig | None = None,
    label_column: str | None = None,
) -> LinearProbe:
    """Fit the LP-KL / LP-agreement probe on a seeded subset of the labelled rows.

    The subset holds at most ``cfg.probe_fit_rows`` rows and at most half of the labelled ones;
    every other labelled row is scored. Missing labels (NaN) are skipped.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    if len(labels) != store.count:
        raise InputError(f"{len(labels)} labels for {store.count} embeddings (rows must align)")
    present = labels.notna().to_numpy()
    codes_present, classes = pd.factorize(labels[present].astype(str), sort=True)
    label_codes = np.full(store.count, -1, dtype=np.int64)
    label_codes[present] = codes_present
    name = f"label column '{label_column}'" if label_column else "labels"
    if len(classes) < 2:
        raise InputError(f"{name} needs at least two classes for the probe, found {len(classes)}")
    labelled = np.flatnonzero(present)
    if len(labelled) < 4:
        raise InputError(f"{name} has {len(labelled)} labelled rows; the probe needs at least 4")
    order = np.random.default_rng(cfg.seed).permutation(labelled)
    n_fit = min(cfg.probe_fit_rows, len(labelled) // 2)
    fit_rows = np.sort(order[:n_fit])
    y_fit = label_codes[fit_rows]
    if len(np.unique(y_fit)) < 2:
        raise InputError(f"{name}: the probe's seeded fit subset holds a single class")
    x_fit = store.take(fit_rows).astype(np.float64)
    x_fit /= np.maximum(np.linalg.norm(x_fit, axis=1, keepdims=True), 1e-12)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe_c, max_iter=1000))
    with warnings.catch_warnings():
        # A probe that has not fully converged still defines a fixed classifier to compare
        # x and x̂ with; convergence warnings would only clutter the terminal.
        warnings.simplefilter("ignore")
        model.fit(x_fit, y_fit)
    scored = present.copy()
    scored[fit_rows] = False
    return LinearProbe(
        model,
        label_codes,
        scored,
        tuple(str(c) for c in classes),
        n_fit,
        label_column,
        time.perf_counter() - started,
    )


# ------------------------------------------------------------------------------------------
# The evaluation
# ------------------------------------------------------------------------------------------


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
    """Evaluate ``model`` on every row of ``store``; returns the eval JSON (``msae-audit/eval``) as a dict.

    ``labels`` (row-aligned, missing values allowed) enables LP-KL and LP-agreement: a logistic
    probe is fit on a seeded subset of the labelled rows (:func:`fit_probe`) and the remaining
    labelled rows are scored on ``x`` and ``x̂``. Pass ``probe`` to reuse one fit (when comparing
    several SAEs on the same data).
    ``on_progress(rows_done, rows_total)`` is called after every chunk.
    """
    cfg = cfg or EvalConfig()
    started = time.perf_counter()
    if store.dim != model.d_in:
        where = f" {sae_path}" if sae_path else ""
        raise InputError(
            f"embeddings {store.path} have dimension {store.dim} but the SAE{where} expects "
            f"{model.d_in}"
        )
    if store.count == 0:
        raise InputError(f"{store.path}: no embeddings to evaluate")
    device = resolve_device(cfg.device)
    fingerprint = sae_fingerprint(model)
    model = model.to(device).eval()
    n, total = model.n_latents, store.count
    chunk_rows = cfg.rows_per_chunk(n)
    ks = progressive_ks(n) if cfg.progressive else [n]

    if probe is None and labels is not None:
        probe = fit_probe(store, labels, cfg, label_column)
    if probe is not None and len(probe.label_codes) != store.count:
        raise InputError(f"the probe was fit for {len(probe.label_codes)} rows, not {store.count}")
    probe_scores = _ProbeScores(probe) if probe is not None else None

    spread = SpreadAccumulator()
    levels = [ReconstructionAccumulator() for _ in ks]
    fired = torch.zeros(n, dtype=torch.bool, device=device)
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
        fired |= z.amax(0) > 0
        spread.update(x)
        x_spread = (x - x.mean(1, keepdim=True)).pow(2).sum(1)
        x_norm = x.norm(dim=1)
        decodes = nested_topk_decodes(z, W_dec, ks, active)
        for k, acc, part in zip(ks, levels, decodes, strict=True):
            x_hat = model.postprocess(part + b_pre)
            acc.update(x, x_hat, active.clamp_max(k), x_spread=x_spread, x_norm=x_norm)
        if probe_scores is not None:
            probe_scores.update(lo, x, model.postprocess(decodes[-1] + b_pre))
        if on_progress is not None:
            on_progress(min(lo + chunk_rows, total), total)
    pass_seconds = time.perf_counter() - pass_started

    cknna_started = time.perf_counter()
    cknna_value, cknna_rows = _cknna_on_subsample(model, store, cfg, device, chunk_rows)
    cknna_seconds = time.perf_counter() - cknna_started
    do_value = decoder_orthogonality(W_dec)
    total_seconds = time.perf_counter() - started

    main = levels[-1].summary(spread, n)
    dead = int((~fired).sum())
    progressive = (
        [{"k": k, **acc.summary(spread, n)} for k, acc in zip(ks, levels, strict=True)]
        if cfg.progressive
        else []
    )
    probe_summary = probe_scores.summary() if probe_scores is not None else None
    result: dict[str, Any] = {
        "schema": EVAL_SCHEMA,
        "version": EVAL_VERSION,
        "msae_audit_version": __version__,
        "sae": _sae_info(model, sae_path, fingerprint),
        "store": _store_info(store),
        "inference": {
            "code": inference_description(model, cfg.topk, cfg.code),
            "topk": cfg.topk,
            "space": "raw embedding space (x̂ = post(decode(z)))",
        },
        "n_samples": total,
        "n_latents": n,
        "l0": main["l0"],
        "frac_zeros": main["frac_zeros"],
        "fvu": main["fvu"],
        "fvu_per_sample": main["fvu_per_sample"],
        "cosine": main["cosine"],
        "cknna": cknna_value,
        "decoder_orthogonality": do_value,
        "dead_latents": dead,
        "dead_fraction": dead / n,
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
        "timing": {
            "device": str(device),
            "seconds_total": total_seconds,
            "seconds_reconstruction_pass": pass_seconds,
            "seconds_cknna": cknna_seconds,
            "seconds_probe_fit": probe.fit_seconds if probe is not None else 0.0,
            "rows_per_second": total / pass_seconds if pass_seconds > 0 else None,
        },
    }
    return json_safe(result)


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
