"""Naming by text: the chunked cosine search, the random-direction threshold, self-consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.concepts import (
    name_latents,
    random_direction_threshold,
    sae_description,
    self_ranks,
    top_matches,
)
from audit.errors import InputError
from tests.concepts.worlds import planted_sae, random_vocab


@pytest.mark.parametrize("screen", ["fp32", "bf16"])
def test_chunked_top_matches_equal_brute_force(screen):
    rng = np.random.default_rng(1)
    directions = rng.standard_normal((700, 48)).astype(np.float32)
    texts = rng.standard_normal((3000, 48)).astype(np.float32)
    scores, indices = top_matches(directions, texts, 4, chunk_rows=128, screen=screen)
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    t = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    sims = d @ t.T
    expected_idx = np.argsort(-sims, axis=1)[:, :4]
    np.testing.assert_array_equal(indices, expected_idx)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected_idx, 1), atol=1e-5)


def test_random_direction_threshold_names_about_one_percent_of_random_latents():
    _, emb = random_vocab(400, 32)
    threshold, null = random_direction_threshold(emb, np.eye(32, dtype=np.float32))
    assert null.shape == (2000,) and abs(np.mean(null >= threshold) - 0.01) < 0.005
    rng = np.random.default_rng(7)
    other = rng.standard_normal((3000, 32)).astype(np.float32)
    best, _ = top_matches(other, emb, 1)
    assert np.mean(best[:, 0] >= threshold) < 0.03  # fresh random directions rarely pass
    # A dictionary confined to a subspace is compared with random directions in that subspace.
    flat = np.zeros((10, 32), dtype=np.float32)
    flat[:, :3] = rng.standard_normal((10, 3))
    t_flat, _ = random_direction_threshold(emb, flat)
    assert t_flat != threshold


def test_naming_finds_planted_words_and_validates_them():
    vocab, emb = random_vocab(200, 32, seed=2)
    sae = planted_sae(emb, n_planted=12)
    result = name_latents(sae, vocab, emb, bank_name="t", sae_info=sae_description(sae, "."))
    bank = result.bank
    for j in range(12):
        concept = bank.concepts[j]
        assert concept.name == f"word{j}" and concept.validated and concept.self_rank == 1
        assert concept.alternatives and concept.alternatives[0][1] <= concept.score
    unnamed = [c for c in bank.concepts[12:] if c.name is None]
    assert len(unnamed) >= 80 and all(c.closest.startswith("word") for c in unnamed)
    summary = bank.extra["summary"]
    assert summary["validated"] >= 12 and summary["latents"] == 96
    assert 0.0 < bank.threshold < 1.0 and "random unit directions" in bank.threshold_method


def test_self_consistency_fails_when_the_word_does_not_activate_the_latent():
    vocab, emb = random_vocab(50, 16, seed=3)
    sae = planted_sae(emb, n_planted=5, n_latents=48)
    with torch.no_grad():
        sae.W_enc[:, 0] = -sae.W_enc[:, 0]  # latent 0 now fires on the opposite direction
    ranks = self_ranks(sae, emb[:2], np.array([0, 1]))
    assert ranks[0] == 0 and ranks[1] == 1
    bank = name_latents(sae, vocab, emb, bank_name="t", sae_info={"fingerprint": "x"}).bank
    assert bank.concepts[0].name == "word0" and not bank.concepts[0].validated


def test_text_embedding_shape_is_checked():
    vocab, emb = random_vocab(10, 16)
    sae = planted_sae(emb, n_planted=2, n_latents=32)
    with pytest.raises(InputError, match="expected \\[10, 16\\]"):
        name_latents(sae, vocab, emb[:9], bank_name="x", sae_info={})


def test_self_ranks_with_shared_words_equal_one_pair_at_a_time():
    _, emb = random_vocab(30, 16, seed=6)
    sae = planted_sae(emb, n_planted=10, n_latents=48)
    rng = np.random.default_rng(0)
    latents = rng.integers(0, 48, 200)
    words = rng.integers(0, 5, 200)  # few words, many latents each
    shared = self_ranks(sae, emb, latents, word_index=words, chunk_rows=64)
    single = self_ranks(sae, emb[words], latents)
    np.testing.assert_array_equal(shared, single)
    assert (shared > 0).any()


def test_bf16_screening_is_not_timed_where_the_cpu_has_no_bf16_path(monkeypatch):
    """Without AVX-512 torch emulates bf16 about 100× slower than fp32: the choice is made
    from the CPU's capability, without a seconds-long timing, and at most once per process."""
    from audit.concepts import matching

    timed = []
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(matching.time, "perf_counter", lambda: timed.append(1) or 0.0)
    matching._bf16_is_faster.cache_clear()
    try:
        assert matching._bf16_is_faster("cpu") is False
        assert matching._bf16_is_faster("cuda") is False
        assert timed == []
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
        small = torch.randn(4, 4)
        monkeypatch.setattr(torch, "randn", lambda *shape: small)  # no slow emulated bf16 here
        matching._bf16_is_faster.cache_clear()
        matching._bf16_is_faster("cpu")
        calls = len(timed)
        assert calls > 0  # measured where bf16 may be fast ...
        matching._bf16_is_faster("cpu")
        assert len(timed) == calls  # ... once
    finally:
        matching._bf16_is_faster.cache_clear()
