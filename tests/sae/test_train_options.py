"""Training options: b_pre at the geometric median, encoder scale, warm-up, the reference's
renormalisation order and input scale, and nmse's reference point without mean-centring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.errors import InputError
from audit.sae import SAEConfig, build_sae, matryoshka_k_list
from audit.sae.base import preprocessing_scale
from audit.sae.data import fit_preprocessing
from audit.sae.init import geometric_median, initial_b_pre
from audit.sae.nested import naive_nested_loss, nested_topk_loss
from audit.sae.train import TrainConfig, lr_factor, train_sae
from audit.store import write_store


def test_geometric_median_golden_and_robust():
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [100.0, 0.0]])
    torch.testing.assert_close(
        geometric_median(line), torch.tensor([2.0, 0.0], dtype=torch.float64)
    )
    # A feature present in 30 % of the samples pulls the mean, not the median.
    rng = np.random.default_rng(0)
    base, atom = np.zeros(16), np.eye(16)[3]
    present = rng.random(4000) < 0.3
    x = base + present[:, None] * 2.0 * atom + 0.01 * rng.normal(size=(4000, 16))
    median = geometric_median(torch.from_numpy(x)).numpy()
    assert abs(median[3]) < 0.05 < abs(x.mean(0)[3] - base[3])


def test_initial_b_pre_is_the_median_of_preprocessed_rows(tmp_path, planted):
    store = write_store(tmp_path / "s", planted.embeddings)
    prep = fit_preprocessing(store)
    torch.testing.assert_close(initial_b_pre("zero", store, prep, 0), torch.zeros(store.dim))
    b = initial_b_pre("geometric_median", store, prep, 0)
    x = torch.from_numpy(prep.apply(planted.embeddings)).double()
    # It minimises the summed distances (better than the mean, 0 after centring).
    assert (x - b.double()).norm(dim=1).sum() < x.norm(dim=1).sum()
    torch.testing.assert_close(initial_b_pre("geometric_median", store, prep, 0), b)


def test_warmup_then_constant_then_decay():
    factors = [lr_factor(s, 100, 0.2, warmup_steps=10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10:80] == [1.0] * 70 and factors[90] == pytest.approx(0.5)
    assert [lr_factor(s, 100, 0.2) for s in range(100)] == [
        lr_factor(s, 100, 0.2, 0) for s in range(100)
    ]


def test_reference_scale_rule():
    assert preprocessing_scale(256, 0.5) == pytest.approx(np.sqrt(256 / 0.5))
    assert preprocessing_scale(256, 0.5, "reference") == pytest.approx(16 / 0.5)


def test_rescaling_decoder_rows_keeps_the_relu_reconstruction():
    cfg = SAEConfig("matryoshka", 8, 32, k_list=matryoshka_k_list(32, 4))
    model = build_sae(cfg)
    with torch.no_grad():
        model.W_dec.mul_(torch.rand(32, 1) + 0.5)
        model.b_enc.normal_()
    x = torch.randn(6, 8)
    before = model(x)
    model.rescale_decoder_rows()
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(32))
    torch.testing.assert_close(model(x), before)


@pytest.mark.parametrize(
    "options",
    [
        {"decoder_renorm": "before_clip", "enc_init_scale": 0.01},
        {"b_pre_init": "geometric_median", "warmup_steps": 10, "scale_rule": "reference"},
    ],
)
def test_options_train_resume_exactly_and_save_unit_rows(tmp_path, planted_store, options):
    cfg = SAEConfig("matryoshka", planted_store.dim, 64, k_list=matryoshka_k_list(64, 4))
    train = {"epochs": 2, "batch_size": 128, "lr": 1e-3, "seed": 3, "checkpoint_every": 5}
    full = train_sae(planted_store, cfg, TrainConfig(**train, **options), tmp_path / "full")
    tcfg = TrainConfig(**train, **options)
    train_sae(planted_store, cfg, tcfg, tmp_path / "resumed", stop_after=17)
    resumed = train_sae(planted_store, cfg, tcfg, tmp_path / "resumed", resume=True)
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    torch.testing.assert_close(full.model.W_dec.norm(dim=1), torch.ones(64))
    assert full.summary["final"]["fvu"] < 0.5


def test_nmse_divides_by_the_distance_to_the_data_mean(tmp_path, planted):
    """Without mean-centring, nmse's denominator is ‖x̃ − mean(x̃)‖², as in the reference code."""
    store = write_store(tmp_path / "s", planted.embeddings + 0.5)  # far from the origin
    cfg = SAEConfig(
        "matryoshka", store.dim, 64, k_list=matryoshka_k_list(64, 4), loss="nmse",
        mean_center=False,
    )  # fmt: skip
    result = train_sae(
        store, cfg, TrainConfig(epochs=1, batch_size=256, lr=1e-3, max_steps=3), tmp_path / "m"
    )
    model = result.model
    x = torch.from_numpy(planted.embeddings + 0.5)
    expected_center = (x.double().mean(0) * float(model.scale)).float()
    torch.testing.assert_close(model.nmse_center, expected_center, rtol=1e-4, atol=1e-5)
    x_tilde = model.preprocess(x[:200])
    x_hat = model.decode_tilde(model.encode(x[:200]))
    by_hand = ((x_hat - x_tilde).pow(2).sum(1) / (x_tilde - expected_center).pow(2).sum(1)).mean()
    torch.testing.assert_close(model.reconstruction_loss(x_tilde, x_hat), by_hand)
    # The fast nested loss and the naive one agree with the reference point too.
    pre = model.pre_activations(x_tilde)
    params = (model.W_enc, model.b_enc, model.W_dec, model.b_pre)
    fast = nested_topk_loss(
        x_tilde, *params, model.k_list, model.level_weights, "nmse", center=expected_center
    )
    naive, _ = naive_nested_loss(
        pre, x_tilde, model.W_dec, model.b_pre, model.k_list, model.level_weights, "nmse",
        expected_center,
    )  # fmt: skip
    torch.testing.assert_close(fast.loss, naive, rtol=1e-5, atol=1e-7)
    # nmse_center="origin" keeps the old denominator ‖x̃‖².
    origin = train_sae(
        store, cfg, TrainConfig(epochs=1, batch_size=256, lr=1e-3, max_steps=1,
                                nmse_center="origin"), tmp_path / "o",
    ).model  # fmt: skip
    torch.testing.assert_close(origin.nmse_center, torch.zeros(store.dim))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_steps": -1},
        {"enc_init_scale": 0.0},
        {"b_pre_init": "median"},
        {"decoder_renorm": "never"},
        {"scale_rule": "sqrt"},
        {"nmse_center": "mean"},
        {"dead_window": 0},  # every latent would count as dead from the first step
    ],
)
def test_invalid_options(kwargs):
    with pytest.raises(InputError):
        TrainConfig(**kwargs)


def test_doctests():
    import doctest

    from audit.sae import base, init

    for module in (base, init):
        assert doctest.testmod(module).failed == 0
