"""SAEs and vocabularies by ``hf:`` name, read from a Hub cache built on disk, offline."""

from __future__ import annotations

import io
import json
import time

import pytest
import torch

from audit.concepts import load_vocabulary
from audit.errors import InputError
from audit.sae import hub, load_sae, sae_fingerprint, save_sae
from audit.sae.hub import HubRef, Release, parse_hub_ref
from tests.conftest import assert_one_line_error
from tests.sae.hub_cache import COMMIT, write_hub_cache
from tests.sae.test_checkpoint import _reference_blob, _trained_like

REF_NAME = "32_8_TopKReLU_4_RW_False_False_0.0_cc3m_ViT-B~16_train_image_1000_8.pth"
REF_PATH = f"ViT-B_16/centered/{REF_NAME}"


def _pt_bytes(blob) -> bytes:
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    return buffer.getvalue()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hub cache under HF_HOME, offline; returns the cache folder (HF_HOME/hub)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_reference_checkpoint_loads_by_hf_name_offline(tmp_path, hf_cache):
    blob = _reference_blob()
    write_hub_cache(hf_cache, "someone/msae", {REF_PATH: _pt_bytes(blob)})
    torch.save(blob, tmp_path / REF_NAME)
    local = load_sae(tmp_path / REF_NAME)
    for spec in (f"hf:someone/msae/{REF_PATH}", f"hf:someone/msae/{REF_PATH}@{COMMIT}"):
        model = load_sae(spec)
        x = torch.randn(4, 8)
        torch.testing.assert_close(model(x), local(x))
        assert sae_fingerprint(model) == sae_fingerprint(local)
    cfg = model.cfg
    assert (cfg.arch, cfg.weighting, cfg.k_list) == ("matryoshka", "rw", (4, 8, 16, 32))
    # The CLIP model the reference embedded with, as open_clip names it (celeba uses this).
    assert (cfg.embedding_model, cfg.pretrained, cfg.modality) == (
        "ViT-B-16-quickgelu",
        "openai",
        "image",
    )
    torch.testing.assert_close(model.scale, torch.tensor(blob["scaling_factor"]))


def test_pickled_code_in_a_hub_checkpoint_is_refused(tmp_path, hf_cache):
    from tests.hostile_files import torch_pickle

    marker = tmp_path / "payload-ran"
    evil = torch_pickle(tmp_path / REF_NAME, marker).read_bytes()
    write_hub_cache(hf_cache, "someone/msae", {REF_PATH: evil})
    with pytest.raises(InputError, match="refused to load"):
        load_sae(f"hf:someone/msae/{REF_PATH}")
    assert not marker.exists()


def test_our_format_by_folder_file_and_repository_root(tmp_path, hf_cache):
    model = _trained_like("topk")
    folder = save_sae(model, tmp_path / "sae")
    files = {name: (folder / name).read_bytes() for name in ("config.json", "sae.safetensors")}
    write_hub_cache(
        hf_cache, "someone/saes", {**files, **{f"vit/{k}": v for k, v in files.items()}}
    )
    x = torch.randn(3, 8)
    for spec in ("hf:someone/saes", "hf:someone/saes/vit", "hf:someone/saes/vit/sae.safetensors"):
        torch.testing.assert_close(load_sae(spec)(x), model.eval()(x))


def test_release_repository_and_folder_name_the_release(hf_cache, monkeypatch, cli):
    release = Release("b16", "someone/msae", REF_PATH, "test release")
    monkeypatch.setattr(hub, "RELEASES", (release,))
    result = cli("models", "--json", hf_cache.parent / "models.json")
    assert result.exit_code == 0 and "b16" in result.stdout
    listed = json.loads((hf_cache.parent / "models.json").read_text())["releases"]
    assert listed[0]["cached"] is None and listed[0]["k_levels"] == [4, 8, 16, 32]
    assert (listed[0]["clip_model"], listed[0]["expansion"]) == ("ViT-B-16-quickgelu", 4.0)

    write_hub_cache(hf_cache, "someone/msae", {REF_PATH: _pt_bytes(_reference_blob())})
    for spec in ("hf:someone/msae", "hf:someone/msae/ViT-B_16/centered", listed[0]["sae"]):
        assert load_sae(spec).cfg.extra["imported_from"] == REF_NAME
    cli("models", "--json", hf_cache.parent / "models.json")
    listed = json.loads((hf_cache.parent / "models.json").read_text())["releases"]
    assert listed[0]["cached"] and listed[0]["cached"].endswith(REF_NAME)


def test_vocabulary_by_hf_name(hf_cache, monkeypatch):
    write_hub_cache(hf_cache, "someone/vocab", {"words/list.txt": b"red car\nblue sky\nred car\n"})
    vocab = load_vocabulary("hf:someone/vocab/words/list.txt")
    assert vocab.entries == ["red car", "blue sky"]
    monkeypatch.setattr(hub, "VOCABULARIES", {"someone/vocab": "words/list.txt"})
    assert load_vocabulary(["hf:someone/vocab", "hf:someone/vocab"]).entries == vocab.entries


def test_missing_from_an_offline_cache_is_one_line_naming_repo_and_cache(hf_cache, cli, tmp_path):
    write_hub_cache(hf_cache, "someone/msae", {REF_PATH: _pt_bytes(_reference_blob())})
    for spec, words in (
        ("hf:nobody/nothing/x.pt", "nobody/nothing"),
        (f"hf:someone/msae/{REF_PATH}@v2", "someone/msae"),  # another revision
        ("hf:someone/msae/other.pth", "someone/msae"),
    ):
        with pytest.raises(InputError) as info:
            load_sae(spec)
        message = str(info.value)
        assert words in message and str(hf_cache) in message and "\n" not in message
    np_path = tmp_path / "x.npy"
    import numpy as np

    np.save(np_path, np.zeros((4, 8), dtype=np.float32))
    result = cli("eval", "--sae", "hf:nobody/nothing", "--embeddings", np_path, "-q")
    assert_one_line_error(result, 2, "not in the Hugging Face cache")


def test_unreachable_hub_uses_the_cache_and_fails_fast_without_it(hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    write_hub_cache(hf_cache, "someone/msae", {REF_PATH: _pt_bytes(_reference_blob())})
    assert load_sae(f"hf:someone/msae/{REF_PATH}").cfg.arch == "matryoshka"
    started = time.monotonic()
    with pytest.raises(InputError, match="cannot be reached"):
        load_sae("hf:nobody/nothing/x.pt")
    # One attempt, no retries with back-off (those take 23 s and more).
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "spec",
    ["hf:", "hf:onlyowner", "hf:a/b/../c.pt", "hf:a/b//c.pt", "hf:a/b/c.pt@", "hf:-a/b"],
)
def test_malformed_hf_names(spec):
    with pytest.raises(InputError):
        parse_hub_ref(spec)


def test_hub_ref_round_trip():
    ref = parse_hub_ref("hf:o/r/a/b.pth@main")
    assert ref == HubRef("o/r", "a/b.pth", "main") and str(ref) == "hf:o/r/a/b.pth@main"


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub.hub_cache_dir() == tmp_path / "cache"


def test_doctests():
    import doctest

    from audit.sae import checkpoint

    for module in (hub, checkpoint):
        assert doctest.testmod(module).failed == 0


def test_reference_names_record_the_clip_model():
    from audit.sae.reference import parse_reference_name

    name = "6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth"
    s = parse_reference_name(name)
    assert (s["embedding_model"], s["pretrained"], s["modality"]) == (
        "ViT-L-14-quickgelu", "openai", "image"
    )  # fmt: skip
    text = parse_reference_name(
        "2048_512_TopKReLU_64_UW_False_False_0.0_cc3m_RN50_val_text_9_512.pt"
    )
    assert (text["embedding_model"], text["modality"]) == ("RN50-quickgelu", "text")
    assert "embedding_model" not in parse_reference_name("32_8_TopKReLU_4_False_False_0.0_x.pth")
