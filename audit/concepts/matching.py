"""Matching latents to words by text: the cosine between a latent's decoder direction and each
word's text embedding (as in Discover-then-Name), and the self-consistency rank."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from audit.errors import InputError

DEFAULT_TOP_M = 5
DEFAULT_ALTERNATIVES = 5


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


#: CPU capabilities (``torch.backends.cpu.get_cpu_capability()``) without a bf16 matmul path:
#: torch emulates bf16 there, about 100× slower than fp32 (one 256×512×2048 product took 2.2 s
#: against 0.02 s on a 2-core AVX2 EPYC), so timing it would cost seconds and say no.
_NO_BF16 = frozenset({"DEFAULT", "NO AVX", "AVX2"})


@functools.cache
def _bf16_is_faster(device_type: str) -> bool:
    """Whether a bf16 matmul beats fp32 here (CPUs with AMX/AVX512-BF16 do; others do not).
    Measured once per process and device type."""
    if device_type != "cpu" or torch.backends.cpu.get_cpu_capability() in _NO_BF16:
        return False
    a = torch.randn(256, 512)
    b = torch.randn(512, 2048)
    timings = []
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            x @ y
        timings.append(time.perf_counter() - start)
    return timings[1] < 0.6 * timings[0]


def top_matches(
    directions: np.ndarray | torch.Tensor,
    texts: np.ndarray | torch.Tensor,
    k: int,
    *,
    chunk_rows: int | None = None,
    screen: str = "auto",
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each direction, the ``k`` most cosine-similar text rows: ``(scores, indices)``,
    both ``[n, k]``, best first.

    The ``[n, V]`` similarity matrix is never held whole: rows are processed in chunks and
    only each chunk's top entries are kept. With ``screen="bf16"`` (chosen by ``"auto"`` on
    CPUs where bf16 matmuls are faster) a chunk is first scored in bf16, the best ``k + 16``
    candidates are re-scored exactly in fp32 and re-ranked; reported scores are always fp32.
    """
    dev = torch.device(device)
    # np.array copies: inputs may be read-only memory maps.
    d = torch.as_tensor(np.array(directions, dtype=np.float32), device=dev)
    t = unit_rows(torch.as_tensor(np.array(texts, dtype=np.float32), device=dev))
    n, v = d.shape[0], t.shape[0]
    k = max(1, min(int(k), v))
    if screen == "auto":
        screen = "bf16" if _bf16_is_faster(dev.type) else "fp32"
    if screen not in ("fp32", "bf16"):
        raise InputError(f"unknown screening precision {screen!r}")
    candidates = min(v, k + 16) if screen == "bf16" else k
    if chunk_rows is None:
        # ~256 MB of similarities per chunk.
        chunk_rows = max(64, min(8192, (1 << 26) // max(v, 1)))
    t_screen = t.to(torch.bfloat16) if screen == "bf16" else t
    scores = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    with torch.no_grad():
        for lo in range(0, n, chunk_rows):
            hi = min(lo + chunk_rows, n)
            block = unit_rows(d[lo:hi])
            sims = block.to(t_screen.dtype) @ t_screen.T
            _, idx = torch.topk(sims, candidates, dim=1)
            if screen == "bf16":
                # Exact fp32 re-scoring of the candidates (elementwise: no reduced precision).
                exact = (block.unsqueeze(1) * t[idx]).sum(-1)
                vals, order = torch.topk(exact, k, dim=1)
                idx = torch.gather(idx, 1, order)
            else:
                vals = torch.gather(sims, 1, idx)
            scores[lo:hi] = vals.float().cpu().numpy()
            indices[lo:hi] = idx.cpu().numpy()
            if progress is not None:
                progress(hi, n)
    return scores, indices


def typical_input_norm(sae: Any) -> float:
    """√(‖μ‖² + d/s²): the RMS norm of the SAE's training inputs (E‖x − μ‖² = d/s²)."""
    mean = sae.mean.detach().float()
    return float(torch.sqrt(mean.pow(2).sum() + sae.d_in / sae.scale.detach().float() ** 2))


def self_ranks(
    sae: Any,
    word_embeddings: np.ndarray,
    latents: np.ndarray,
    word_index: np.ndarray | None = None,
    chunk_rows: int = 512,
) -> np.ndarray:
    """For each (word, latent) pair, the latent's rank among the word's own SAE activations
    (1 = strongest); 0 when the latent does not fire on it.

    The pair's word is ``word_embeddings[word_index[i]]`` (or row ``i`` without
    ``word_index``); pairs are processed sorted by word so that a word named on many latents
    is encoded once per chunk. Text and image embeddings of CLIP have different norms, so each
    text embedding is first rescaled to the SAE's typical input norm
    (:func:`typical_input_norm`).
    """
    latents = np.asarray(latents, dtype=np.int64)
    words = np.arange(len(latents)) if word_index is None else np.asarray(word_index)
    ranks = np.zeros(len(latents), dtype=np.int64)
    if not len(latents):
        return ranks
    device = sae.W_dec.device
    target = typical_input_norm(sae)
    order = np.argsort(words, kind="stable")
    with torch.no_grad():
        for lo in range(0, len(order), chunk_rows):
            pairs = order[lo : lo + chunk_rows]
            unique, inverse = np.unique(words[pairs], return_inverse=True)
            x = torch.as_tensor(np.array(word_embeddings[unique], dtype=np.float32), device=device)
            z = sae.encode(unit_rows(x) * target)[torch.as_tensor(inverse, device=device)]
            cols = torch.as_tensor(latents[pairs], device=device)
            own = z.gather(1, cols[:, None])
            rank = (z > own).sum(1) + 1
            rank = torch.where(own[:, 0] > 0, rank, torch.zeros_like(rank))
            ranks[pairs] = rank.cpu().numpy()
    return ranks
