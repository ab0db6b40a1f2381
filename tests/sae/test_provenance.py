"""The store an SAE was trained on, found again from its training record: the default images
``concepts`` checks names against, only while it is there and unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.checkpoint import load_sae, save_sae
from audit.sae.provenance import TRAINING_RECORD, data_fingerprint, training_store
from audit.sae.train import TrainConfig, train_sae
from audit.store import write_store


def _train(store, out):
    cfg = SAEConfig(
        arch="matryoshka", d_in=store.dim, n_latents=32, k_list=matryoshka_k_list(32, 4)
    )
    tcfg = TrainConfig(epochs=1, batch_size=256, lr=1e-3, seed=0, checkpoint_every=0)
    return train_sae(store, cfg, tcfg, out)


@pytest.fixture
def trained(tmp_path, planted_store):
    _train(planted_store, tmp_path / "sae")
    return tmp_path / "sae", planted_store


def test_the_store_an_sae_was_trained_on_is_found_again(trained):
    sae, store = trained
    found, why_not = training_store(sae)
    assert found == store.path and why_not == ""
    record = json.loads((sae / TRAINING_RECORD).read_text())["data"]
    assert record == data_fingerprint(store)  # what training wrote is what is compared


def test_a_store_that_is_gone_or_holds_other_embeddings_is_not_used(trained, planted):
    sae, store = trained
    path = store.path
    shutil.rmtree(path)
    assert training_store(sae) == (None, f"the store it was trained on, {path}, is not there")
    # The same path, the same shape, other rows: the fingerprint tells them apart.
    rng = np.random.default_rng(1)
    write_store(path, rng.standard_normal(planted.embeddings.shape).astype(np.float32),
                model="planted", modality="image")  # fmt: skip
    found, why_not = training_store(sae)
    assert found is None and "no longer holds the embeddings it was trained on" in why_not


def test_text_embeddings_are_no_images_to_check_names_against(tmp_path, planted):
    store = write_store(tmp_path / "texts", planted.embeddings, model="planted", modality="text")
    _train(store, tmp_path / "sae")
    found, why_not = training_store(tmp_path / "sae")
    assert found is None and "text embeddings" in why_not


def test_saes_without_a_usable_training_record_name_none(trained, tmp_path):
    sae, _ = trained
    assert training_store(sae / "sae.safetensors")[0] is None  # a file, not the SAE's folder
    save_sae(load_sae(sae), tmp_path / "copied")  # the weights alone, as released SAEs come
    found, why_not = training_store(tmp_path / "copied")
    assert found is None and "records no training data" in why_not
    (sae / TRAINING_RECORD).write_text("{not json", encoding="utf-8")
    found, why_not = training_store(sae)
    assert found is None and why_not.endswith("names no training store")


def test_a_store_given_by_a_relative_path_is_found_from_another_directory(
    tmp_path, planted, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    store = write_store("stores/planted", planted.embeddings, model="planted", modality="image")
    _train(store, tmp_path / "sae")
    monkeypatch.chdir(tmp_path / "stores")
    assert training_store(tmp_path / "sae") == (tmp_path / "stores" / "planted", "")


def test_checkpoints_that_name_their_data_by_path_only_still_resume_from_the_same_place(
    tmp_path, planted_store, monkeypatch
):
    """Checkpoints written before fingerprints held content recorded the path as given; it is
    resolved from the directory training resumes in, so the same relative path matches."""
    from audit.errors import InputError
    from audit.sae.train_checkpoint import _check_same_data

    monkeypatch.chdir(planted_store.path.parent)
    now = data_fingerprint(planted_store)
    legacy = {"path": planted_store.path.name, "count": now["count"], "dim": now["dim"]}
    _check_same_data(tmp_path / "checkpoint", legacy, now)  # no error
    with pytest.raises(InputError, match="different embeddings"):
        _check_same_data(tmp_path / "checkpoint", {**legacy, "path": "elsewhere"}, now)
