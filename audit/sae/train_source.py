"""Where a training run's batches come from (``--data-on-device``), and the order they come in.

``yes`` holds the preprocessed store on the device; ``no`` streams it from the memory map;
``auto`` picks ``yes`` when it fits in half the free device memory. Two sources with the same
:func:`data_order` give the same batches, so a resumed run keeps its checkpoint's order.
"""

from __future__ import annotations

import numpy as np
import torch

from audit.distributed import DistContext
from audit.errors import InputError
from audit.sae.data import InMemoryBatches, Preprocessing, StreamingBatches, memory_budget_bytes
from audit.sae.train_config import TrainConfig
from audit.store import EmbeddingStore

#: The order of :class:`InMemoryBatches` and of ``global`` streaming: a seeded permutation.
PERMUTATION_ORDER = "a seeded permutation"


def batch_source(
    store: EmbeddingStore,
    prep: Preprocessing,
    cfg: TrainConfig,
    device: torch.device,
    dist_ctx: DistContext | None = None,
    resumed_order: str | None = None,
) -> InMemoryBatches | StreamingBatches:
    """The run's source of batches. A resumed run reads the data in its checkpoint's order
    (``resumed_order``) whatever ``auto`` decides now: trained in memory and no longer fitting,
    it streams in the same order (``global``); trained through a shuffle buffer, it keeps
    streaming. Settings that would change the order are refused with one line."""
    dist_ctx = dist_ctx or DistContext(device=device)
    budget = memory_budget_bytes(device)
    if device.type == "cpu":
        budget //= max(1, dist_ctx.local_world_size)  # each local process holds its own copy
    fits = store.count * store.dim * 4 <= budget
    # Every rank must pick the same source (their orders differ): stream if any rank must.
    fits = bool(dist_ctx.all_reduce_numpy(np.array([float(fits)]), "min")[0])
    in_memory = cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and fits)
    shuffle = cfg.stream_shuffle
    if resumed_order == PERMUTATION_ORDER:
        shuffle = "global"  # streamed, the in-memory order
    elif resumed_order is not None and cfg.data_on_device == "auto":
        in_memory = False  # a shuffle buffer's order exists only streamed
    order = _order(in_memory, shuffle, cfg.stream_chunk_rows, cfg.stream_buffer_chunks)
    if resumed_order is not None and order != resumed_order:
        raise InputError(
            f"the interrupted run read the data in the order of {resumed_order}, these settings "
            f"would read it in that of {order}; resume with its --data-on-device and --stream-* "
            "options (or start over with --overwrite)"
        )
    rank, world_size = dist_ctx.rank, dist_ctx.world_size
    if in_memory:
        return InMemoryBatches(
            store, prep, cfg.batch_size, cfg.seed, device, rank, world_size, cfg.stream_chunk_rows
        )
    return StreamingBatches(
        store,
        prep,
        cfg.batch_size,
        cfg.seed,
        device,
        rank,
        world_size,
        cfg.stream_chunk_rows,
        cfg.stream_buffer_chunks,
        shuffle,
    )


def data_order(source: InMemoryBatches | StreamingBatches) -> str:
    """The order ``source`` reads the data in (recorded in checkpoints)."""
    if isinstance(source, InMemoryBatches):
        return PERMUTATION_ORDER
    return _order(False, source.shuffle, source.chunk_rows, source.buffer_chunks)


def describe_source(source: InMemoryBatches | StreamingBatches) -> str:
    if isinstance(source, InMemoryBatches):
        return "in-memory"
    if source.shuffle == "global":
        return "streamed (global shuffle)"
    return f"streamed (shuffle buffer of {source.buffer_rows} rows)"


def _order(in_memory: bool, shuffle: str, chunk_rows: int, buffer_chunks: int) -> str:
    if in_memory or shuffle == "global":
        return PERMUTATION_ORDER
    return f"a shuffle buffer of {buffer_chunks} chunks of {chunk_rows} rows"
