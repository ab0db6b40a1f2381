"""Out-of-core training: streamed batches, rank slices, bounded memory, the in-memory match."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch

from audit.data.planted import planted_embeddings
from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.data import InMemoryBatches, StreamingBatches, fit_preprocessing
from audit.sae.train import TrainConfig, train_sae
from audit.store import write_store

CPU = torch.device("cpu")
#: Python objects that torch's autograd and dispatcher allocate during a run, whatever the data.
INTERPRETER_ALLOWANCE = 1 << 20


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices: a second thread only adds synchronisation (and stalls on a busy machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def odd_store(tmp_path, rng):
    # 1001 rows in 3 shards: chunks, buffers, batches and shards all cut at different places.
    x = rng.normal(size=(1001, 8)).astype(np.float32)
    return write_store(tmp_path / "odd", x, shard_rows=400)


def _stream(store, prep, rank=0, world=1, shuffle="buffer", batch=64):
    return StreamingBatches(
        store, prep, batch, seed=4, device=CPU, rank=rank, world_size=world,
        chunk_rows=100, buffer_chunks=3, shuffle=shuffle,
    )  # fmt: skip


@pytest.mark.parametrize("shuffle", ["buffer", "global"])
@pytest.mark.parametrize("world", [2, 3])
def test_rank_slices_concatenate_to_the_single_process_batches(odd_store, shuffle, world):
    prep = fit_preprocessing(odd_store)
    single = _stream(odd_store, prep, shuffle=shuffle)
    ranks = [_stream(odd_store, prep, r, world, shuffle) for r in range(world)]
    for epoch in (0, 1):
        expected = list(single.batches(epoch))
        per_rank = [list(source.batches(epoch)) for source in ranks]
        # Every rank yields one batch per step (possibly empty), in lock-step.
        assert all(len(batches) == single.steps_per_epoch for batches in per_rank)
        for step, batch in enumerate(expected):
            parts = [batches[step] for batches in per_rank]
            assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
            torch.testing.assert_close(torch.cat(parts), batch, rtol=0, atol=0)
        # A rank resumed mid-epoch continues exactly where it was.
        tail = list(ranks[-1].batches(epoch, start_step=5))
        for a, b in zip(tail, per_rank[-1][5:], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_last_batch_smaller_than_the_world_leaves_empty_ranks(odd_store):
    prep = fit_preprocessing(odd_store)
    # 1001 = 10·100 + 1: the last global batch holds one row, which goes to the last rank.
    sizes = [
        [len(b) for b in StreamingBatches(odd_store, prep, 100, 0, CPU, r, 2, 64, 2).batches(0)]
        for r in range(2)
    ]
    assert sizes == [[50] * 10 + [0], [50] * 10 + [1]]
    mem = [
        [len(b) for b in InMemoryBatches(odd_store, prep, 100, 0, CPU, r, 2).batches(0)]
        for r in range(2)
    ]
    assert mem == sizes


def test_global_shuffle_stream_is_the_in_memory_order(odd_store):
    prep = fit_preprocessing(odd_store)
    memory = InMemoryBatches(odd_store, prep, 64, seed=4, device=CPU)
    stream = _stream(odd_store, prep, shuffle="global")
    for a, b in zip(memory.batches(2), stream.batches(2), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _matryoshka(dim: int) -> SAEConfig:
    return SAEConfig(arch="matryoshka", d_in=dim, n_latents=64, k_list=matryoshka_k_list(64, 4))


def _fvu(model, x: np.ndarray) -> float:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        err = (model(xt) - xt).pow(2).sum()
        return float(err / (xt - xt.mean(0)).pow(2).sum())


def test_streamed_training_matches_in_memory_training(tmp_path):
    data = planted_embeddings(n_samples=4000, dim=32, n_atoms=48, active=3, seed=3)
    store = write_store(tmp_path / "s", data.embeddings, shard_rows=1500)
    base = TrainConfig(epochs=3, batch_size=200, lr=2e-3, seed=1, checkpoint_every=0)
    memory = train_sae(
        store, _matryoshka(32), dataclasses.replace(base, data_on_device="yes"), tmp_path / "m"
    )
    # The global-shuffle stream reads rows in the in-memory order: the very same model.
    exact = dataclasses.replace(base, data_on_device="no", stream_shuffle="global")
    streamed_exact = train_sae(store, _matryoshka(32), exact, tmp_path / "g")
    for key, value in memory.model.state_dict().items():
        torch.testing.assert_close(streamed_exact.model.state_dict()[key], value, rtol=0, atol=0)
    # A small shuffle buffer (1/10 of the data) orders rows differently; the model is as good.
    buffered = dataclasses.replace(
        base, data_on_device="no", stream_chunk_rows=200, stream_buffer_chunks=3
    )
    streamed = train_sae(store, _matryoshka(32), buffered, tmp_path / "b")
    assert streamed.summary["data_source"].startswith("streamed (shuffle buffer of 600 rows")
    fvu_memory, fvu_stream = (
        _fvu(memory.model, data.embeddings),
        _fvu(streamed.model, data.embeddings),
    )
    assert fvu_memory < 0.5  # it learned something, so "as good" means something
    assert abs(fvu_stream - fvu_memory) <= 0.1 * fvu_memory, (fvu_stream, fvu_memory)


def test_auto_streams_when_the_data_do_not_fit(tmp_path, monkeypatch, planted_store):
    import audit.sae.train_source as train_module

    cfg = TrainConfig(epochs=1, batch_size=500, checkpoint_every=0)
    monkeypatch.setattr(train_module, "memory_budget_bytes", lambda device: 1 << 40)
    roomy = train_sae(planted_store, _matryoshka(32), cfg, tmp_path / "a")
    assert roomy.summary["data_source"] == "in-memory" and roomy.summary["data_on_device"]
    budget = planted_store.count * planted_store.dim * 4 - 1  # one byte short
    monkeypatch.setattr(train_module, "memory_budget_bytes", lambda device: budget)
    tight = train_sae(planted_store, _matryoshka(32), cfg, tmp_path / "b")
    assert (
        tight.summary["data_source"].startswith("streamed") and not tight.summary["data_on_device"]
    )


def _peak_numpy_bytes(fn) -> int:
    """Peak of the memory Python and numpy allocate while ``fn`` runs (torch shares numpy's)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_is_bounded_by_the_buffer_not_the_store(tmp_path, rng):
    rows, dim, chunk, chunks, batch = 100_000, 32, 1000, 2, 256
    store = write_store(
        tmp_path / "big", rng.normal(size=(rows, dim)).astype(np.float32), shard_rows=7000
    )
    store_bytes = rows * dim * 4
    buffer_bytes = chunk * chunks * dim * 4  # 256 KiB, 1/50 of the store
    # The measurement sees ordinary numpy reads: reading the store whole shows its full size.
    assert _peak_numpy_bytes(store.read) >= store_bytes
    # One buffer of float32 rows, its gather temporary, and a batch in float64 while it is
    # preprocessed (plus index arrays: 8 bytes per buffer row, a few of them).
    bound = 2 * buffer_bytes + 3 * batch * dim * 8 + 6 * chunk * chunks * 8
    assert bound < store_bytes / 8

    prep = fit_preprocessing(store, chunk_rows=chunk)
    for rank, world in ((0, 1), (1, 2)):
        source = StreamingBatches(store, prep, batch, 0, CPU, rank, world, chunk, chunks)
        seen = [0]

        def epoch(source=source, seen=seen) -> None:
            for x in source.batches(0):
                seen[0] += len(x)

        peak = _peak_numpy_bytes(epoch)
        assert seen[0] == rows // world
        assert peak <= bound, (rank, world, peak, bound)

    # A training run (the full preprocessing pass over the store, then streamed steps) adds
    # only fixed interpreter and autograd bookkeeping (Python objects, traced too) to that.
    cfg = TrainConfig(
        epochs=1,
        max_steps=60,  # 15 buffers: the steady state
        batch_size=batch,
        lr=1e-3,
        checkpoint_every=0,
        data_on_device="no",
        stream_chunk_rows=chunk,
        stream_buffer_chunks=chunks,
    )
    sae = SAEConfig(arch="topk", d_in=dim, n_latents=32, k=4)
    # A first, tiny run imports what training imports lazily (those are Python objects too).
    small = write_store(tmp_path / "small", store.read(0, 2 * batch))
    train_sae(small, sae, cfg, tmp_path / "warm-up")
    result: list = []
    peak = _peak_numpy_bytes(lambda: result.append(train_sae(store, sae, cfg, tmp_path / "sae")))
    assert result[0].summary["data_source"] == "streamed (shuffle buffer of 2000 rows)"
    assert peak <= bound + INTERPRETER_ALLOWANCE < store_bytes / 4, (peak, bound)


@pytest.mark.parametrize("shuffle", ["buffer", "global"])
def test_prefetched_batches_are_the_same_batches(odd_store, shuffle):
    prep = fit_preprocessing(odd_store)
    plain = _stream(odd_store, prep, shuffle=shuffle)
    ahead = _stream(odd_store, prep, shuffle=shuffle)
    ahead.prefetch = 2
    assert plain.prefetch == 0  # on a CPU the step's cores are not shared with a reader thread
    for epoch, start in ((0, 0), (1, 5)):
        expected = list(plain.batches(epoch, start))
        got = list(ahead.batches(epoch, start))
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prefetch_hands_errors_over_and_stops_when_the_consumer_does():
    import threading

    from audit.sae.data import prefetched

    def failing():
        yield torch.zeros(1)
        raise ValueError("disk gone")

    items = prefetched(failing(), 2)
    assert torch.equal(next(items), torch.zeros(1))
    with pytest.raises(ValueError, match="disk gone"):
        next(items)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield torch.tensor(i)
            i += 1

    items = prefetched(endless(), 2)
    assert [int(next(items)) for _ in range(3)] == [0, 1, 2]
    items.close()  # what a `break` in the training loop leads to
    assert not any(t.name == "msae-prefetch" for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1  # read ahead by at most the depth (plus one in hand)
