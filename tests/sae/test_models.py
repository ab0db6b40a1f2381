"""Architectures: k-list rules, weightings, inference codes, unit norm, BatchTopK independence."""

from __future__ import annotations

import pytest
import torch

from audit.errors import InputError
from audit.sae import SAEConfig, build_sae, keep_topk, matryoshka_k_list


def test_k_list_doubles_and_appends_n_once():
    assert matryoshka_k_list(4096, 64) == (64, 128, 256, 512, 1024, 2048, 4096)
    assert matryoshka_k_list(6144, 64) == (64, 128, 256, 512, 1024, 2048, 4096, 6144)
    assert matryoshka_k_list(100, 64) == (64, 100)
    assert matryoshka_k_list(64, 64) == (64,)
    assert matryoshka_k_list(10, 64) == (10,)
    with pytest.raises(InputError, match="--k-min must be positive"):
        matryoshka_k_list(10, 0)


def test_weightings():
    ks = matryoshka_k_list(512, 64)  # 4 levels
    uw = SAEConfig(arch="matryoshka", d_in=8, n_latents=512, k_list=ks, weighting="uw")
    rw = SAEConfig(arch="matryoshka", d_in=8, n_latents=512, k_list=ks, weighting="rw")
    assert uw.level_weights == (1.0, 1.0, 1.0, 1.0)
    assert rw.level_weights == (4.0, 3.0, 2.0, 1.0)  # the smallest k weighs most


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(arch="nope", d_in=4, n_latents=8), "unknown architecture"),
        (dict(arch="topk", d_in=4, n_latents=8), "k"),
        (dict(arch="topk", d_in=4, n_latents=8, k=9), "k"),
        (dict(arch="matryoshka", d_in=4, n_latents=8, k_list=(2, 4)), "end with n_latents"),
        (dict(arch="matryoshka", d_in=4, n_latents=8, k_list=(4, 2, 8)), "increasing"),
        (dict(arch="relu", d_in=4, n_latents=8), "l1"),
        (dict(arch="relu", d_in=4, n_latents=8, l1=0.1, loss="l2"), "loss"),
        # config.json's JSON types: true is not k = 1, "false" is not a boolean
        (dict(arch="topk", d_in=4, n_latents=8, k=True), "k=True"),
        (dict(arch="matryoshka", d_in=4, n_latents=8, k_list=(True, 8)), "k_list"),
        (dict(arch="topk", d_in=4, n_latents=8, k=2, mean_center="false"), "mean_center"),
        (dict(arch="topk", d_in=4, n_latents=8, k=2, embedding_model=5), "embedding_model"),
        (dict(arch="topk", d_in=4, n_latents=8, k=2, modality=["image"]), "modality"),
    ],
)
def test_invalid_configs(kwargs, message):
    with pytest.raises(InputError, match=message):
        SAEConfig(**kwargs)


def test_config_json_round_trip_and_spec_keys():
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=8,
        n_latents=32,
        k_list=matryoshka_k_list(32, 4),
        embedding_model="ViT-B-32",
        modality="image",
    )
    data = cfg.to_json()
    for key in (
        "format",
        "version",
        "arch",
        "d_in",
        "n_latents",
        "k_list",
        "weighting",
        "embedding_model",
        "modality",
    ):
        assert key in data
    assert data["format"] == "msae-audit/sae" and data["version"] == 1
    assert SAEConfig.from_json(data) == cfg
    topk = SAEConfig(arch="topk", d_in=8, n_latents=32, k=4).to_json()
    assert topk["k"] == 4 and "k_list" not in topk
    relu = SAEConfig(arch="relu", d_in=8, n_latents=32, l1=0.01).to_json()
    assert relu["l1"] == 0.01


def _model(arch: str, **kw):
    defaults = dict(d_in=16, n_latents=64)
    if arch == "matryoshka":
        kw.setdefault("k_list", matryoshka_k_list(64, 4))
    if arch in ("topk", "batchtopk"):
        kw.setdefault("k", 5)
    if arch == "relu":
        kw.setdefault("l1", 0.01)
    model = build_sae(SAEConfig(arch=arch, **defaults, **kw))
    model.reset_parameters(torch.Generator().manual_seed(0), enc_scale=1.0)
    return model


def test_preprocessing_round_trip_and_decoder_directions():
    model = _model("matryoshka")
    mean, scale = torch.randn(16), 2.5
    model.set_preprocessing(mean, scale)
    x = torch.randn(5, 16)
    torch.testing.assert_close(model.postprocess(model.preprocess(x)), x)
    torch.testing.assert_close(model.decoder_directions(), model.W_dec / scale)
    # Decoding a one-hot code moves the reconstruction along that latent's raw-space direction.
    z = torch.zeros(2, 64)
    z[1, 7] = 3.0
    delta = model.decode(z)[1] - model.decode(z)[0]
    torch.testing.assert_close(delta, 3.0 * model.decoder_directions()[7])


def test_inference_codes():
    x = torch.randn(10, 16)
    topk = _model("topk")
    z = topk.encode(x)
    assert ((z > 0).sum(1) <= 5).all() and (z >= 0).all()
    pre = topk.pre_activations(topk.preprocess(x))
    values, indices = torch.topk(pre, 5, dim=1)
    expected = torch.zeros_like(pre).scatter(1, indices, values.clamp_min(0))
    torch.testing.assert_close(z, expected)
    msae = _model("matryoshka")
    torch.testing.assert_close(
        msae.encode(x), msae.pre_activations(msae.preprocess(x)).clamp_min(0)
    )
    limited = msae.encode(x, topk=3)
    assert ((limited > 0).sum(1) <= 3).all()
    torch.testing.assert_close(keep_topk(msae.encode(x), 3), limited)


def test_decoder_rows_stay_unit_norm_after_steps():
    model = _model("matryoshka")
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    x = torch.randn(64, 16)
    for _ in range(5):
        out = model.training_loss(model.preprocess(x))
        opt.zero_grad()
        out.loss.backward()
        model.project_decoder_grad()
        # The projected gradient has no component along its own row.
        parallel = (model.W_dec.grad * model.W_dec).sum(1)
        assert parallel.abs().max() < 1e-5
        opt.step()
        model.normalize_decoder()
        torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(64))


def test_batchtopk_inference_does_not_depend_on_the_batch():
    model = _model("batchtopk")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randn(256, 16)
    for i in range(4):
        out = model.training_loss(model.preprocess(data[i * 64 : (i + 1) * 64]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.after_step(out)
    assert float(model.threshold) > 0
    batch = torch.randn(32, 16)
    together = model.encode(batch)
    alone = torch.cat([model.encode(batch[i : i + 1]) for i in range(32)])
    torch.testing.assert_close(together, alone)
    assert (
        (together == 0) | (model.pre_activations(model.preprocess(batch)) > model.threshold)
    ).all()


def test_batchtopk_per_latent_thresholds_track_each_latents_smallest_kept_activation():
    model = _model("batchtopk", threshold_kind="per_latent")
    assert model.threshold.shape == (64,)
    x = model.preprocess(torch.randn(64, 16))
    out = model.training_loss(x)
    model.after_step(out)
    code = model.batch_code(model.pre_activations(x)).detach()
    kept = code > 0
    # First step: every kept latent's threshold is its own smallest kept activation; the
    # others are still unestimated (negative) and infer with the largest estimated one.
    for j in range(64):
        if kept[:, j].any():
            assert float(model.threshold[j]) == pytest.approx(float(code[kept[:, j], j].min()))
        else:
            assert float(model.threshold[j]) < 0
    theta = model.inference_threshold()
    assert (theta[~kept.any(0)] == model.threshold.max()).all()
    assert (theta[kept.any(0)] == model.threshold[kept.any(0)]).all()
    # Second step on other rows: only the latents kept there move, by the EMA.
    before = model.threshold.clone()
    x2 = model.preprocess(torch.randn(64, 16))
    out2 = model.training_loss(x2)
    model.after_step(out2)
    kept2 = model.batch_code(model.pre_activations(x2)) > 0
    unmoved = ~kept2.any(0)
    assert torch.equal(model.threshold[unmoved], before[unmoved])
    both = kept2.any(0) & (before >= 0)
    assert both.any() and not torch.equal(model.threshold[both], before[both])
    # Inference: the code of a row does not depend on its batch, and each latent fires exactly
    # above its own threshold.
    batch = torch.randn(32, 16)
    together = model.encode(batch)
    alone = torch.cat([model.encode(batch[i : i + 1]) for i in range(32)])
    torch.testing.assert_close(together, alone)
    pre = model.pre_activations(model.preprocess(batch))
    assert torch.equal(together > 0, pre > model.inference_threshold())


def test_batchtopk_training_keeps_k_per_row_on_average():
    model = _model("batchtopk")
    out = model.training_loss(model.preprocess(torch.randn(40, 16)))
    assert int(out.active.sum()) <= 5 * 40


def test_relu_loss_adds_the_l1_penalty():
    model = _model("relu", l1=0.5)
    x = model.preprocess(torch.randn(8, 16))
    out = model.training_loss(x)
    z = model.pre_activations(x).clamp_min(0)
    recon = ((z @ model.W_dec + model.b_pre - x) ** 2).mean()
    torch.testing.assert_close(out.loss, recon + 0.5 * (z.sum(1) / x.norm(dim=1)).mean())


def test_auxk_loss_only_with_dead_latents():
    model = _model("topk", aux_k=8)
    x = model.preprocess(torch.randn(16, 16))
    assert float(model.training_loss(x, dead=torch.zeros(64, dtype=torch.bool)).aux_loss) == 0.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:20] = True
    out = model.training_loss(x, dead=dead)
    assert float(out.aux_loss) > 0
    out.loss.backward()
    # Only the dead latents' encoder columns receive gradient from the auxiliary term's choices.
    assert model.W_enc.grad[:, :20].abs().sum() > 0
