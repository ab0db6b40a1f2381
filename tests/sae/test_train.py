"""Training: dictionary recovery, determinism, interruption/resume, streaming, schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.data.planted import atom_recovery, planted_embeddings
from audit.errors import InputError
from audit.sae import SAEConfig, load_sae, matryoshka_k_list
from audit.sae.data import InMemoryBatches, StreamingBatches, fit_preprocessing
from audit.sae.train import TrainConfig, lr_factor, train_sae
from audit.store import write_store


def test_lr_schedule_constant_then_linear_decay():
    factors = [lr_factor(s, 100, 0.2) for s in range(100)]
    assert factors[:80] == [1.0] * 80
    assert (
        factors[80] == pytest.approx(1.0)
        and factors[90] == pytest.approx(0.5)
        and factors[99] == pytest.approx(0.05)
    )
    assert lr_factor(5, 10, 0.0) == 1.0


def test_preprocessing_gives_unit_mean_square_per_dimension(planted_store):
    prep = fit_preprocessing(planted_store)
    x = prep.apply(planted_store.read())
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    assert (x**2).sum(1).mean() == pytest.approx(planted_store.dim, rel=1e-4)


@pytest.mark.parametrize("mean_center", [True, False])
@pytest.mark.parametrize("rule", ["unit", "reference"])
def test_preprocessing_records_the_datas_variance_in_preprocessed_space(
    planted_store, mean_center, rule
):
    """The training FVU's denominator: E‖x̃ − mean(x̃)‖², with or without mean-centring."""
    prep = fit_preprocessing(planted_store, mean_center=mean_center, scale_rule=rule)
    x = prep.apply(planted_store.read()).astype(np.float64)
    expected = ((x - x.mean(0)) ** 2).sum(1).mean()
    assert prep.variance == pytest.approx(expected, rel=1e-5)


def test_dictionary_recovery_on_planted_clip_like_data(tmp_path):
    data = planted_embeddings(n_samples=20_000, dim=64, n_atoms=64, active=4, seed=0)
    store = write_store(tmp_path / "s", data.embeddings)
    cfg = SAEConfig(arch="matryoshka", d_in=64, n_latents=256, k_list=matryoshka_k_list(256, 4))
    result = train_sae(
        store,
        cfg,
        TrainConfig(epochs=20, batch_size=256, lr=1e-3, checkpoint_every=0, seed=0),
        tmp_path / "sae",
    )
    cosines = atom_recovery(data.atoms, result.model.decoder_directions().detach().numpy())
    assert cosines.min() >= 0.9, np.sort(cosines)[:5]


def _small_run(tmp_path, store, name, **kw):
    cfg = SAEConfig(
        arch="matryoshka", d_in=store.dim, n_latents=64, k_list=matryoshka_k_list(64, 4), aux_k=8
    )
    tcfg = TrainConfig(
        epochs=3,
        batch_size=128,
        lr=1e-3,
        seed=7,
        checkpoint_every=5,
        dead_window=500,
        **kw.pop("train", {}),
    )
    return cfg, tcfg, train_sae(store, cfg, tcfg, tmp_path / name, **kw)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("data_on_device", ["yes", "no"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, planted_store, data_on_device):
    extra = {"data_on_device": data_on_device, "stream_chunk_rows": 700, "stream_buffer_chunks": 2}
    _, _, full = _small_run(tmp_path, planted_store, "full", train=extra)
    total = full.state.step
    _, _, part = _small_run(
        tmp_path, planted_store, "resumed", train=extra, stop_after=total // 2 + 3
    )
    assert part.summary == {"interrupted": True}
    assert (tmp_path / "resumed" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "resumed" / "sae.safetensors").exists()
    _, _, resumed = _small_run(tmp_path, planted_store, "resumed", train=extra, resume=True)
    assert resumed.state.step == total
    a, b = _weights(full.model), _weights(resumed.model)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not (tmp_path / "resumed" / "checkpoint.safetensors").exists()
    torch.testing.assert_close(load_sae(tmp_path / "resumed").W_dec, full.model.W_dec.cpu())


def test_a_resumed_run_keeps_its_data_order_when_auto_decides_otherwise(
    tmp_path, planted_store, monkeypatch
):
    """Trained in memory, resumed when the data no longer fit (``auto`` would stream through a
    shuffle buffer): the rest of the epoch must come in the same order, so the weights equal an
    uninterrupted run's; and the reverse, a buffered run resumed where the data fit."""
    import audit.sae.train_source as train_module

    roomy, tight = 1 << 40, planted_store.count * planted_store.dim * 4 - 1
    extra = {"stream_chunk_rows": 700, "stream_buffer_chunks": 2}  # 4000 rows: 6 chunks
    for first, then in ((roomy, tight), (tight, roomy)):
        monkeypatch.setattr(train_module, "memory_budget_bytes", lambda device, b=first: b)
        name = f"full-{first}"
        _, _, full = _small_run(tmp_path, planted_store, name, train=extra)
        part = f"resumed-{first}"
        _small_run(tmp_path, planted_store, part, train=extra, stop_after=full.state.step // 3 + 2)
        monkeypatch.setattr(train_module, "memory_budget_bytes", lambda device, b=then: b)
        _, _, resumed = _small_run(tmp_path, planted_store, part, train=extra, resume=True)
        assert resumed.state.data_order == full.state.data_order
        for key, value in _weights(full.model).items():
            torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_resume_refuses_another_data_order(tmp_path, planted_store):
    streamed = {"data_on_device": "no", "stream_chunk_rows": 700, "stream_buffer_chunks": 2}
    _small_run(tmp_path, planted_store, "r", train=streamed, stop_after=3)
    for other in ({**streamed, "data_on_device": "yes"}, {**streamed, "stream_chunk_rows": 500}):
        with pytest.raises(InputError, match="read the data in the order of a shuffle buffer"):
            _small_run(tmp_path, planted_store, "r", train=other, resume=True)


def test_same_seed_same_model_different_seed_different_model(tmp_path, planted_store):
    _, _, a = _small_run(tmp_path, planted_store, "a")
    _, _, b = _small_run(tmp_path, planted_store, "b")
    torch.testing.assert_close(a.model.W_dec, b.model.W_dec, rtol=0, atol=0)
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=planted_store.dim,
        n_latents=64,
        k_list=matryoshka_k_list(64, 4),
        aux_k=8,
    )
    c = train_sae(
        planted_store, cfg, TrainConfig(epochs=3, batch_size=128, lr=1e-3, seed=8), tmp_path / "c"
    )
    assert not torch.equal(a.model.W_dec, c.model.W_dec)


def test_resume_refuses_changed_settings(tmp_path, planted_store):
    _small_run(tmp_path, planted_store, "r", stop_after=3)
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=planted_store.dim,
        n_latents=64,
        k_list=matryoshka_k_list(64, 4),
        aux_k=8,
    )
    with pytest.raises(InputError, match="different training settings"):
        train_sae(
            planted_store,
            cfg,
            TrainConfig(epochs=4, batch_size=128, lr=1e-3, seed=7),
            tmp_path / "r",
            resume=True,
        )
    (tmp_path / "r" / "checkpoint.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt checkpoint"):
        _small_run(tmp_path, planted_store, "r", resume=True)


def test_streaming_and_in_memory_batches_cover_every_row_once(planted_store):
    prep = fit_preprocessing(planted_store)
    full = prep.apply(planted_store.read())
    mem = InMemoryBatches(planted_store, prep, 300, seed=3, device=torch.device("cpu"))
    stream = StreamingBatches(
        planted_store,
        prep,
        300,
        seed=3,
        device=torch.device("cpu"),
        chunk_rows=512,
        buffer_chunks=2,
    )
    for source in (mem, stream):
        rows = torch.cat(list(source.batches(epoch=1))).numpy()
        assert rows.shape == full.shape
        # Same multiset of rows: compare sorted by the first coordinate.
        np.testing.assert_allclose(rows[np.lexsort(rows.T)], full[np.lexsort(full.T)], rtol=1e-6)
        assert len(list(source.batches(epoch=1))) == source.steps_per_epoch
        # Starting mid-epoch yields exactly the tail of the same order.
        tail = list(source.batches(epoch=1, start_step=4))
        head = list(source.batches(epoch=1))
        for a, b in zip(tail, head[4:], strict=True):
            torch.testing.assert_close(a, b)
    # Different epochs, different orders.
    assert not torch.equal(next(mem.batches(0)), next(mem.batches(1)))


def test_nan_inputs_are_refused(tmp_path, rng):
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[13] = np.nan
    store = write_store(tmp_path / "s", np.nan_to_num(x))
    np.save(tmp_path / "bad.npy", x)
    from audit.store import open_store

    bad = open_store(tmp_path / "bad.npy")
    cfg = SAEConfig(arch="topk", d_in=8, n_latents=16, k=2)
    with pytest.raises(InputError, match="row 13"):
        train_sae(bad, cfg, TrainConfig(epochs=1), tmp_path / "o")
    wrong = SAEConfig(arch="topk", d_in=9, n_latents=16, k=2)
    with pytest.raises(InputError, match="dimension"):
        train_sae(store, wrong, TrainConfig(epochs=1), tmp_path / "o")
