"""Checkpoint format, safe loading and the reference-code importer."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from audit.errors import InputError
from audit.sae import SAEConfig, build_sae, load_sae, matryoshka_k_list, sae_fingerprint, save_sae
from audit.sae.reference import convert_reference, parse_reference_name


def _trained_like(arch="matryoshka", seed=0):
    kw = (
        {"k_list": matryoshka_k_list(32, 4)}
        if arch == "matryoshka"
        else {"k": 4}
        if arch in ("topk", "batchtopk")
        else {"l1": 0.01}
    )
    model = build_sae(SAEConfig(arch=arch, d_in=8, n_latents=32, **kw))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    model.set_preprocessing(torch.randn(8), 1.7)
    with torch.no_grad():
        model.b_enc.normal_()
        model.b_pre.normal_()
        if arch == "batchtopk":
            model.threshold.fill_(0.3)
    return model


@pytest.mark.parametrize("arch", ["matryoshka", "topk", "batchtopk", "relu"])
def test_save_load_round_trip(tmp_path, arch):
    model = _trained_like(arch)
    save_sae(model, tmp_path / "sae")
    tensors = load_file(str(tmp_path / "sae" / "sae.safetensors"))
    assert tensors["W_enc"].shape == (8, 32) and tensors["W_dec"].shape == (32, 8)
    assert (
        tensors["b_enc"].shape == (32,)
        and tensors["b_pre"].shape == (8,)
        and tensors["mean"].shape == (8,)
    )
    assert tensors["scale"].shape == ()
    assert ("threshold" in tensors) == (arch == "batchtopk")
    cfg = json.loads((tmp_path / "sae" / "config.json").read_text())
    assert cfg["format"] == "msae-audit/sae" and cfg["arch"] == arch
    loaded = load_sae(tmp_path / "sae")
    x = torch.randn(6, 8)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert sae_fingerprint(loaded) == sae_fingerprint(model)
    assert sae_fingerprint(_trained_like(arch, seed=1)) != sae_fingerprint(model)


def test_corrupt_truncated_and_mismatched_checkpoints(tmp_path):
    save_sae(_trained_like(), tmp_path / "sae")
    weights = tmp_path / "sae" / "sae.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_sae(tmp_path / "sae")
    weights.write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match="corrupt"):
        load_sae(tmp_path / "sae")
    # A checkpoint of another architecture/shape under this config.
    save_sae(_trained_like(), tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    cfg["n_latents"] = 64
    cfg["k_list"] = list(matryoshka_k_list(64, 4))
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="shape"):
        load_sae(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_sae(tmp_path / "other")
    with pytest.raises(InputError, match="not found"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing"):
        load_sae(tmp_path / "empty")


def _reference_blob(d=8, n=32, tied=False):
    g = torch.Generator().manual_seed(0)
    state = {
        "pre_bias": torch.randn(d, generator=g),
        "encoder": torch.randn(d, n, generator=g),
        "latent_bias": torch.randn(n, generator=g),
        "latents_activation_frequency": torch.zeros(n, dtype=torch.int64),
    }
    if not tied:
        state["decoder"] = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    return {
        "model": state,
        "mean_center": torch.randn(d, generator=g),
        "scaling_factor": 0.37,
        "target_norm": np.float64(np.sqrt(d)),
    }


@pytest.mark.parametrize(
    "name,arch",
    [
        ("32_8_TopKReLU_4_UW_False_False_0.0_cc3m_train.pth", "matryoshka"),
        ("32_8_TopKReLU_4_RW_False_False_0.0_cc3m_train.pth", "matryoshka"),
        ("32_8_TopKReLU_4_False_False_0.0_cc3m_train.pth", "topk"),
        ("32_8_BatchTopKReLU_4_False_False_0.0_cc3m_train.pth", "batchtopk"),
        ("32_8_ReLU_003_False_False_0.0_cc3m_train.pth", "relu"),
    ],
)
def test_reference_checkpoints_load_and_match_reference_maths(tmp_path, name, arch):
    blob = _reference_blob()
    torch.save(blob, tmp_path / name)
    model = load_sae(tmp_path / name)
    assert model.cfg.arch == arch
    # The reference decodes ReLU(pre) with pre = ((x − mean)·s − b_pre) W_enc + b_enc.
    x = torch.randn(5, 8)
    state = blob["model"]
    xt = (x - blob["mean_center"]) * blob["scaling_factor"]
    pre = (xt - state["pre_bias"]) @ state["encoder"] + state["latent_bias"]
    if arch in ("matryoshka", "relu", "batchtopk"):
        z = pre.clamp_min(0)
    else:
        v, i = torch.topk(pre, 4, dim=1)
        z = torch.zeros_like(pre).scatter(1, i, v.clamp_min(0))
    expected = (z @ state["decoder"] + state["pre_bias"]) / blob["scaling_factor"] + blob[
        "mean_center"
    ]
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    converted = convert_reference(tmp_path / name, tmp_path / "converted")
    torch.testing.assert_close(load_sae(converted)(x), model(x))


def test_reference_name_parsing():
    s = parse_reference_name(
        "6144_768_TopKReLU_64_UW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth"
    )
    assert (s["arch"], s["k_min"], s["weighting"], s["n_latents"], s["d_in"]) == (
        "matryoshka",
        64,
        "uw",
        6144,
        768,
    )
    assert parse_reference_name("6144_768_ReLU_003_False_False_0.0_x.pth")["l1"] == pytest.approx(
        0.003
    )
    for bad in (
        "model.pt",
        "32_8_JumpReLU_32_False_False_0.0_x.pt",
        "32_8_TopKabs_4_False_False_0.0_x.pt",
    ):
        with pytest.raises(InputError):
            parse_reference_name(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/msae_audit_pwned",))


def test_pickles_that_need_code_are_refused_and_never_run(tmp_path):
    marker = "/tmp/msae_audit_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "32_8_TopKReLU_4_UW_False_False_0.0_x.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": _Evil()}, fh)
    with pytest.raises(InputError, match="refused"):
        load_sae(path)
    torch.save({"model": {"encoder": _Evil()}}, path)
    with pytest.raises(InputError, match="refused"):
        load_sae(path)
    assert not os.path.exists(marker)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError):
        load_sae(path)


class _NeedsPrint:
    def __reduce__(self):  # a builtins global: torch's refusal then bolds part of its message
        return (print, ("unpickled",))


def test_a_refused_pickle_is_one_plain_line(tmp_path):
    path = tmp_path / "32_8_TopKReLU_4_UW_False_False_0.0_x.pt"
    torch.save({"model": _NeedsPrint()}, path)
    with pytest.raises(InputError, match="refused to load") as info:
        load_sae(path)
    message = str(info.value)
    assert "\x1b" not in message and "\n" not in message, message
    assert "do those steps only if you trust" in message  # torch's reason, without its bold


_REF_NAME = "32_8_TopKReLU_4_UW_False_False_0.0_x.pt"


def _edited_blob(where: str, key: str, value: object) -> dict:
    blob = _reference_blob()
    (blob["model"] if where == "state" else blob)[key] = value
    return blob


@pytest.mark.parametrize(
    "where,key,value,message",
    [
        ("state", "encoder", [[0.0] * 32] * 8, "'encoder' must be a tensor, got list"),
        ("state", "latent_bias", "abc", "'latent_bias' must be a tensor, got str"),
        ("state", "decoder", 3.0, "'decoder' must be a tensor, got float"),
        ("state", "pre_bias", torch.zeros(8, dtype=torch.complex64), "complex"),
        ("blob", "mean_center", "abc", "mean_center must be a number or a tensor, got 'abc'"),
        ("blob", "mean_center", None, "mean_center must be a number or a tensor, got None"),
        ("blob", "mean_center", True, "mean_center must be a number or a tensor, got True"),
        ("blob", "scaling_factor", "abc", "scaling_factor must be a number, got 'abc'"),
        ("blob", "scaling_factor", None, "scaling_factor must be a number, got None"),
        ("blob", "scaling_factor", torch.ones(2), "scaling_factor must be a number, got a tensor"),
        ("blob", "scaling_factor", float("nan"), "scale contains NaN or inf"),
    ],
)
def test_reference_entries_of_the_wrong_kind_are_one_line(tmp_path, where, key, value, message):
    """Only tensors and finite numbers are used; anything else is an InputError naming the
    entry (not an AttributeError or ValueError from using it)."""
    torch.save(_edited_blob(where, key, value), tmp_path / _REF_NAME)
    with pytest.raises(InputError) as info:
        load_sae(tmp_path / _REF_NAME)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_reference_numbers_may_be_tensors_or_numpy_scalars(tmp_path):
    blob = _reference_blob()
    blob["scaling_factor"] = torch.tensor(0.37)
    blob["mean_center"] = np.float64(0.5)
    torch.save(blob, tmp_path / _REF_NAME)
    model = load_sae(tmp_path / _REF_NAME)
    assert float(model.scale) == pytest.approx(0.37)
    torch.testing.assert_close(model.mean, torch.full((8,), 0.5))


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_truncated_reference_archive_is_corrupt_not_refused(tmp_path, keep):
    """A cut-off zip is damage, not a pickle the restricted unpickler refused (torch fails with
    a PytorchStreamReader RuntimeError or an OSError, depending on where the cut falls)."""
    path = tmp_path / _REF_NAME
    torch.save(_reference_blob(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        load_sae(path)
    assert "refused" not in str(info.value)


def test_a_refused_legacy_pickle_prints_no_torch_warning(tmp_path):
    """torch warns about pickle protocol 4 before its refusal; the error line is enough."""
    import contextlib
    import warnings

    path = tmp_path / _REF_NAME
    torch.save(_reference_blob(), path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # This torch's restricted unpickler may refuse protocol 4; either way, quietly.
        with contextlib.suppress(InputError):
            load_sae(path)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("n_latents", [2_000_000, 10**12])
def test_a_config_of_another_size_is_refused_before_the_model_is_built(
    tmp_path, monkeypatch, n_latents
):
    """The weights' shapes are compared with config.json first: a model of the config's size
    (gigabytes, or more than any machine has) is never allocated for a mismatched file."""
    save_sae(_trained_like(), tmp_path / "sae")
    config = json.loads((tmp_path / "sae" / "config.json").read_text())
    config.update(n_latents=n_latents, k_list=[4, n_latents])
    (tmp_path / "sae" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("audit.sae.checkpoint.build_sae", _must_not_build)
    with pytest.raises(InputError, match="is this checkpoint for another model"):
        load_sae(tmp_path / "sae")


def test_a_reference_name_of_another_size_is_refused_before_the_model_is_built(
    tmp_path, monkeypatch
):
    path = tmp_path / "1000000000000_8_TopKReLU_4_UW_False_False_0.0_x.pt"
    torch.save(_reference_blob(), path)
    monkeypatch.setattr("audit.sae.checkpoint.build_sae", _must_not_build)
    with pytest.raises(InputError, match="is this checkpoint for another model"):
        load_sae(path)


def _must_not_build(cfg):  # type: ignore[no-untyped-def]
    raise AssertionError(f"built a {cfg.n_latents}-latent model before checking the weights")
