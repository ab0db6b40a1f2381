"""Training batches from an embedding store: in memory when it fits, streamed when it does not.

Both sources are deterministic functions of ``(seed, epoch)`` and can start at any step, which
is what makes ``--resume`` reproduce an uninterrupted run exactly.

* :class:`InMemoryBatches` holds the preprocessed data on the device and draws each epoch's
  order from a seeded permutation.
* :class:`StreamingBatches` reads the memory-mapped store. With ``shuffle="buffer"`` (the
  default) each epoch visits fixed-size chunks in a seeded order, takes ``buffer_chunks`` of
  them at a time, shuffles the rows inside that buffer and cuts the concatenated stream into
  batches: memory stays bounded by one buffer, and reads stay within a window of the file.
  With ``shuffle="global"`` it reads each batch's rows directly, in *the same order as
  InMemoryBatches* (only the ``[N]`` index permutation is held; reads are random over the file).

With ``world_size > 1`` every rank gets its slice of each global batch (rows
``[⌊r·B/W⌋, ⌊(r+1)·B/W⌋)``, see :func:`rank_bounds`), and the streaming source reads only
those rows: the ranks' slices concatenated are exactly the single-process batch. A last batch
with fewer rows than ranks leaves some ranks an empty ``[0, d]`` batch; every rank still yields
one batch per step, so collective operations stay in lock-step.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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
    # E‖x̃ − mean(x̃)‖², the data's variance per row in preprocessed space: the denominator of
    # the training FVU, so a small batch (a last one of one row) is not divided by its own
    # spread. None in checkpoints written before it was recorded (the batch's own then).
    variance: float | None = None

    def apply(self, block: np.ndarray) -> np.ndarray:
        return ((block - self.mean) * self.scale).astype(np.float32)


#: ``all_reduce(array, op)`` combines a float64 array across ranks (``op`` is "sum" or "min").
AllReduce = Callable[[np.ndarray, str], np.ndarray]


def fit_preprocessing(
    store: EmbeddingStore,
    mean_center: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    check_finite: bool = True,
    *,
    rank: int = 0,
    world_size: int = 1,
    all_reduce: AllReduce | None = None,
    scale_rule: str = "unit",
) -> Preprocessing:
    """Mean ``μ`` and scale ``s = sqrt(d / E‖x − μ‖²)`` (``scale_rule="reference"``: the paper's
    ``√d / E‖x − μ‖²``) in two chunked float64 passes.

    The same passes check for NaN/inf, naming the first bad row. With ``world_size > 1`` each
    rank reads only its contiguous share of the rows and ``all_reduce`` combines the partial
    sums, so every rank gets the same result (equal to the single-process one up to the order
    of float64 additions).
    """
    from audit.sae.base import preprocessing_scale

    n, d = store.count, store.dim
    if n == 0:
        raise InputError(f"{store.path}: no embeddings to train on")
    _check_rank(rank, world_size)
    if world_size > 1 and all_reduce is None:
        raise ValueError("fit_preprocessing needs all_reduce when world_size > 1")
    lo, hi = rank_bounds(n, rank, world_size)
    total = np.zeros(d, dtype=np.float64)
    bad_row = n  # n means "none found"
    for start, block in store.iter_chunks(chunk_rows, lo, hi):
        if check_finite and not np.isfinite(block).all():
            bad_row = start + int(np.argmax(~np.isfinite(block).all(axis=1)))
            break
        total += block.sum(axis=0, dtype=np.float64)
    if world_size > 1:
        assert all_reduce is not None
        # Every rank must raise the same error, or the others would wait forever.
        bad_row = int(all_reduce(np.array([bad_row], dtype=np.float64), "min")[0])
        total = all_reduce(total, "sum")
    if bad_row < n:
        raise InputError(f"{store.path}: row {bad_row} contains NaN or inf values")
    mean = total / n if mean_center else np.zeros(d)
    sq = 0.0
    for _, block in store.iter_chunks(chunk_rows, lo, hi):
        deviation = block.astype(np.float64)
        deviation -= mean  # in place: one float64 copy of the chunk, not three
        sq += float(np.einsum("ij,ij->", deviation, deviation))
    if world_size > 1:
        assert all_reduce is not None
        sq = float(all_reduce(np.array([sq], dtype=np.float64), "sum")[0])
    scale = preprocessing_scale(d, sq / n, scale_rule)
    # Around the data mean x̄: E‖x − μ‖² − ‖x̄ − μ‖² (μ = x̄ when mean-centring).
    spread = sq / n - float(np.sum((total / n - mean) ** 2))
    return Preprocessing(mean, scale, max(spread, 0.0) * scale**2)


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


class InMemoryBatches:
    """The whole preprocessed data set as one tensor on the device (every rank holds a copy)."""

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
        _check_rank(rank, world_size)
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
        order = epoch_order(self.seed, epoch, self.count).to(self.data.device)
        for step in range(start_step, self.steps_per_epoch):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            lo, hi = rank_bounds(len(rows), self.rank, self.world_size)
            yield self.data[rows[lo:hi]]


class StreamingBatches:
    """Rows read from the memory-mapped store batch by batch; memory bounded by one buffer."""

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
        shuffle: str = "buffer",
        prefetch: int | None = None,
    ) -> None:
        _check_rank(rank, world_size)
        if shuffle not in SHUFFLE_MODES:
            raise InputError(
                f"stream shuffle must be one of {', '.join(SHUFFLE_MODES)}, got {shuffle!r}"
            )
        self.store = store
        self.prep = prep
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.chunk_rows = max(1, chunk_rows)
        self.buffer_chunks = max(1, buffer_chunks)
        self.shuffle = shuffle
        self.n_chunks = math.ceil(store.count / self.chunk_rows)
        # Batches read ahead by a thread while the device trains (None: 2 on a GPU, 0 on a CPU,
        # whose cores the step already uses).
        self.prefetch = (2 if device.type == "cuda" else 0) if prefetch is None else prefetch

    @property
    def count(self) -> int:
        return self.store.count

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.store.count / self.batch_size)

    @property
    def buffer_rows(self) -> int:
        """Rows in one shuffle buffer (the bound on what a rank holds is ``buffer_rows / W``)."""
        return min(self.count, self.chunk_rows * self.buffer_chunks)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[Tensor]:
        if self.shuffle == "global":
            batches = self._global_batches(epoch, start_step)
        else:
            batches = self._buffered_batches(epoch, start_step)
        return prefetched(batches, self.prefetch) if self.prefetch else batches

    # -- shuffle="global": the in-memory order, read row by row --------------------------------
    def _global_batches(self, epoch: int, start_step: int) -> Iterator[Tensor]:
        order = epoch_order(self.seed, epoch, self.count).numpy()
        for step in range(start_step, self.steps_per_epoch):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            lo, hi = rank_bounds(len(rows), self.rank, self.world_size)
            yield self._to_device(self.store.take(rows[lo:hi]))

    # -- shuffle="buffer": chunks in a seeded order, rows shuffled inside each buffer ----------
    def _buffer_plan(self, epoch: int) -> Iterator[tuple[int, list[int], int]]:
        """``(first stream position, chunks, permutation seed)`` of each buffer of the epoch."""
        rng = np.random.default_rng(epoch_seed(self.seed, epoch))
        chunk_order = rng.permutation(self.n_chunks)
        start = 0
        for g in range(0, self.n_chunks, self.buffer_chunks):
            chunks = [int(c) for c in chunk_order[g : g + self.buffer_chunks]]
            yield start, chunks, epoch_seed(self.seed, epoch) + 1 + g
            start += sum(self._chunk_size(c) for c in chunks)

    def _chunk_size(self, chunk: int) -> int:
        return min(self.chunk_rows, self.count - chunk * self.chunk_rows)

    def _buffer_rows_in_stream_order(self, chunks: list[int], perm_seed: int) -> np.ndarray:
        rows = np.concatenate(
            [
                np.arange(c * self.chunk_rows, c * self.chunk_rows + self._chunk_size(c))
                for c in chunks
            ]
        )
        return rows[np.random.default_rng(perm_seed).permutation(len(rows))]

    def _owned(self, positions: np.ndarray) -> np.ndarray:
        """Which stream positions fall in this rank's slice of their batch."""
        batch = positions // self.batch_size
        offset = positions - batch * self.batch_size
        length = np.minimum(self.batch_size, self.count - batch * self.batch_size)
        lo = self.rank * length // self.world_size
        hi = (self.rank + 1) * length // self.world_size
        return (offset >= lo) & (offset < hi)

    def _local_span(self, step: int) -> tuple[int, int]:
        """Stream positions ``[start, stop)`` of this rank's rows of ``step``."""
        first = step * self.batch_size
        lo, hi = rank_bounds(min(self.batch_size, self.count - first), self.rank, self.world_size)
        return first + lo, first + hi

    def _buffered_batches(self, epoch: int, start_step: int) -> Iterator[Tensor]:
        """The epoch's stream is the concatenation of shuffled buffers, cut into batches.

        Each buffer's permutation is over row *indices*; a rank reads only the rows of the
        buffer that land in its slices (one sorted, forward pass over the buffer's window).
        """
        first = start_step * self.batch_size
        step = start_step
        pending: deque[np.ndarray] = deque()  # this rank's rows read but not yet yielded
        for buffer_start, chunks, perm_seed in self._buffer_plan(epoch):
            buffer_stop = buffer_start + sum(self._chunk_size(c) for c in chunks)
            if buffer_stop <= first:
                continue  # consumed before the resume point: neither permuted nor read
            # Leftover rows are views into the previous buffer: copy them (less than a batch)
            # so that buffer is freed before the next one is read.
            for i, block in enumerate(pending):
                if block.base is not None:
                    pending[i] = block.copy()
            rows = self._buffer_rows_in_stream_order(chunks, perm_seed)
            positions = np.arange(max(buffer_start, first), buffer_stop)
            rows = rows[positions - buffer_start]
            if self.world_size > 1:
                rows = rows[self._owned(positions)]
            if len(rows):
                pending.append(self.store.take(rows))
            del rows, positions
            # Yield every step whose rows for this rank have all been read.
            while step < self.steps_per_epoch and self._local_span(step)[1] <= buffer_stop:
                start, stop = self._local_span(step)
                yield self._to_device(_pop_rows(pending, stop - start, self.store.dim))
                step += 1

    def _to_device(self, local: np.ndarray) -> Tensor:
        batch = torch.from_numpy(self.prep.apply(local))
        if self.device.type == "cuda":
            # From page-locked memory the copy runs asynchronously, behind the running step.
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)


SHUFFLE_MODES = ("buffer", "global")


def prefetched(items: Iterator[Tensor], depth: int) -> Iterator[Tensor]:
    """``items`` in the same order, produced up to ``depth`` ahead by a background thread.

    Errors in the producer are raised in the consumer. When the consumer stops early (or is
    garbage-collected), the producer is told to stop and its thread ends.
    """
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            put(("error", exc))

    thread = threading.Thread(target=produce, name="msae-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ahead.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def epoch_order(seed: int, epoch: int, count: int) -> Tensor:
    """The epoch's row permutation used by InMemoryBatches and ``shuffle="global"`` streaming."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(count, generator=gen)


def rank_bounds(batch_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch that ``rank`` trains on (sizes differ by at most 1)."""
    return rank * batch_rows // world_size, (rank + 1) * batch_rows // world_size


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"invalid rank {rank} for world size {world_size}")


def _pop_rows(pending: deque[np.ndarray], count: int, dim: int) -> np.ndarray:
    """The first ``count`` rows of the queued blocks (a view when they lie in one block)."""
    parts: list[np.ndarray] = []
    while count > 0:
        head = pending[0]
        if len(head) <= count:
            parts.append(pending.popleft())
            count -= len(head)
        else:
            parts.append(head[:count])
            pending[0] = head[count:]
            count = 0
    if not parts:
        return np.empty((0, dim), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
