"""Training batches from an embedding store: in memory when it fits, streamed when it does not.

Both sources are deterministic functions of ``(seed, epoch)`` and can start at any step, which
is what makes ``--resume`` reproduce an uninterrupted run exactly.

* :class:`InMemoryBatches` holds the preprocessed data on the device and draws each epoch's
  order from a seeded permutation.
* :class:`StreamingBatches` reads the memory-mapped store in chunks: each epoch visits the
  chunks in a seeded order, loads ``buffer_chunks`` of them at a time, shuffles rows inside
  that buffer and cuts it into batches. Memory stays bounded by the buffer.

With ``world_size > 1`` every rank gets its slice of each global batch (rows
``[rank·B/W, (rank+1)·B/W)``), so data-parallel gradients average to the single-process ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audit.errors import InputError
from audit.store import EmbeddingStore

DEFAULT_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class Preprocessing:
    mean: np.ndarray  # [d] float64
    scale: float

    def apply(self, block: np.ndarray) -> np.ndarray:
        return ((block - self.mean) * self.scale).astype(np.float32)


def fit_preprocessing(
    store: EmbeddingStore,
    mean_center: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    check_finite: bool = True,
) -> Preprocessing:
    """Mean ``μ`` and scale ``s = sqrt(d / E‖x − μ‖²)`` in two chunked float64 passes.

    The same passes check for NaN/inf, naming the first bad row.
    """
    from audit.sae.base import preprocessing_scale

    n, d = store.count, store.dim
    if n == 0:
        raise InputError(f"{store.path}: no embeddings to train on")
    total = np.zeros(d, dtype=np.float64)
    for lo, block in store.iter_chunks(chunk_rows):
        if check_finite and not np.isfinite(block).all():
            row = lo + int(np.argmax(~np.isfinite(block).all(axis=1)))
            raise InputError(f"{store.path}: row {row} contains NaN or inf values")
        total += block.sum(axis=0, dtype=np.float64)
    mean = total / n if mean_center else np.zeros(d)
    sq = 0.0
    for _, block in store.iter_chunks(chunk_rows):
        sq += float(np.square(block.astype(np.float64) - mean).sum())
    return Preprocessing(mean, preprocessing_scale(d, sq / n))


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


class InMemoryBatches:
    """The whole preprocessed data set as one tensor on the device."""

    def __init__(
        self,
        store: EmbeddingStore,
        prep: Preprocessing,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        self.count = store.count
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.data = torch.empty((store.count, store.dim), dtype=torch.float32, device=device)
        for lo, block in store.iter_chunks(chunk_rows):
            self.data[lo : lo + len(block)] = torch.from_numpy(prep.apply(block)).to(device)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[Tensor]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.count, generator=gen).to(self.data.device)
        for step in range(start_step, self.steps_per_epoch):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self.data[_rank_slice(rows, self.rank, self.world_size)]


class StreamingBatches:
    """Chunks of the memory-mapped store, shuffled inside a bounded buffer."""

    def __init__(
        self,
        store: EmbeddingStore,
        prep: Preprocessing,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        buffer_chunks: int = 4,
    ) -> None:
        self.store = store
        self.prep = prep
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.chunk_rows = max(1, chunk_rows)
        self.buffer_chunks = max(1, buffer_chunks)
        self.n_chunks = math.ceil(store.count / self.chunk_rows)

    @property
    def count(self) -> int:
        return self.store.count

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.store.count / self.batch_size)

    def _buffers(self, epoch: int) -> Iterator[tuple[int, list[int], np.random.Generator]]:
        rng = np.random.default_rng(epoch_seed(self.seed, epoch))
        chunk_order = rng.permutation(self.n_chunks)
        start = 0
        for g in range(0, self.n_chunks, self.buffer_chunks):
            chunks = [int(c) for c in chunk_order[g : g + self.buffer_chunks]]
            size = sum(min(self.chunk_rows, self.store.count - c * self.chunk_rows) for c in chunks)
            yield start, chunks, np.random.default_rng(epoch_seed(self.seed, epoch) + 1 + g)
            start += size

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[Tensor]:
        """The epoch's stream is the concatenation of shuffled buffers, cut into batches."""
        first_row = start_step * self.batch_size
        pending: list[np.ndarray] = []
        pending_rows = 0
        for buffer_start, chunks, rng in self._buffers(epoch):
            buffer_rows = sum(
                min(self.chunk_rows, self.store.count - c * self.chunk_rows) for c in chunks
            )
            if buffer_start + buffer_rows <= first_row:
                continue  # skipped without reading: its rows were consumed before the resume point
            block = np.concatenate(
                [self.store.read(c * self.chunk_rows, (c + 1) * self.chunk_rows) for c in chunks]
            )
            block = block[rng.permutation(len(block))]
            if buffer_start < first_row:
                block = block[first_row - buffer_start :]
            pending.append(block)
            pending_rows += len(block)
            while pending_rows >= self.batch_size:
                merged = np.concatenate(pending) if len(pending) > 1 else pending[0]
                batch, rest = merged[: self.batch_size], merged[self.batch_size :]
                pending, pending_rows = ([rest] if len(rest) else []), len(rest)
                yield self._to_device(batch)
        if pending_rows:
            yield self._to_device(np.concatenate(pending))

    def _to_device(self, batch: np.ndarray) -> Tensor:
        rows = np.arange(len(batch))
        local = batch[_rank_slice_np(rows, self.rank, self.world_size)]
        return torch.from_numpy(self.prep.apply(local)).to(self.device)


def _rank_slice(rows: Tensor, rank: int, world_size: int) -> Tensor:
    if world_size == 1:
        return rows
    per = math.ceil(len(rows) / world_size)
    return rows[rank * per : (rank + 1) * per]


def _rank_slice_np(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    if world_size == 1:
        return rows
    per = math.ceil(len(rows) / world_size)
    return rows[rank * per : (rank + 1) * per]


def memory_budget_bytes(device: torch.device, fraction: float = 0.5) -> int:
    """How much of the device's free memory training data may take."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * fraction)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * fraction)
    except OSError:
        pass
    return 4 << 30
