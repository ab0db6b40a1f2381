"""Vocabularies, the chunked naming maths, the random-direction threshold and bank validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.concepts import (
    Vocabulary,
    builtin_vocabularies,
    load_bank,
    load_vocabulary,
    name_latents,
    random_direction_threshold,
    read_vocabulary_file,
    sae_description,
    save_bank,
    self_ranks,
    top_matches,
    vocabulary_embeddings,
)
from audit.errors import InputError
from audit.sae import SAEConfig, build_sae, matryoshka_k_list, sae_fingerprint


def planted_sae(words: np.ndarray, n_planted: int, n_latents: int = 96, seed: int = 0):
    """An SAE whose first ``n_planted`` decoder rows are (noisy) copies of word directions and
    the rest random; the encoder is the decoder's transpose, so a word activates its latent."""
    rng = np.random.default_rng([seed, 991])  # a stream no test draws its words from
    d = words.shape[1]
    rows = rng.standard_normal((n_latents, d))
    unit_words = words / np.linalg.norm(words, axis=1, keepdims=True)
    rows[:n_planted] = unit_words[:n_planted] + 0.05 * rng.standard_normal((n_planted, d))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    cfg = SAEConfig(
        arch="matryoshka", d_in=d, n_latents=n_latents, k_list=matryoshka_k_list(n_latents, 16)
    )
    sae = build_sae(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor(rows, dtype=torch.float32))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(-0.2)  # a word activates only latents close to it
        sae.set_preprocessing(torch.zeros(d), 1.0 / np.sqrt(1.0))
    return sae.eval()


def random_vocab(n: int, d: int, seed: int = 0) -> tuple[Vocabulary, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    emb += 0.5 * rng.standard_normal(d).astype(np.float32)  # a shared text component, like CLIP
    return Vocabulary([f"word{i}" for i in range(n)], ["test"], "sha256:x"), emb


# ------------------------------------------------------------------------------------------
# Vocabulary files
# ------------------------------------------------------------------------------------------


def test_vocabulary_rules(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(
        "\ufeff# a comment\r\nred\r\n\r\n  light   blue \nRed\n# another\nstriped\nred\n".encode()
    )
    assert read_vocabulary_file(path) == ["red", "light blue", "striped"]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"red\x00\x01\x02blue", "binary"),
        (b"caf\xe9\nred\n", r"not UTF-8 text \(line 1\)"),
        (b"# only comments\n\n   \n", "empty"),
        (b"", "empty"),
        (("x" * 300 + "\n").encode(), "line 1 is 300 characters"),
    ],
)
def test_malformed_vocabularies_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_vocabulary_file(path)


def test_builtin_vocabularies_load_and_merge():
    names = builtin_vocabularies()
    for expected in ("celeba", "colors", "textures", "shapes", "objects", "people", "world"):
        assert expected in names
        assert len(read_vocabulary_file(names[expected])) >= 20
    merged = load_vocabulary(["world", "colors"])
    assert merged.entries[:6] == ["circle", "square", "triangle", "star", "cross", "heart"]
    assert len({e.lower() for e in merged.entries}) == len(merged.entries)  # "red" once
    assert load_vocabulary("world,colors").entries == merged.entries
    with pytest.raises(InputError, match="unknown vocabulary 'nope'"):
        load_vocabulary(["nope"])
    with pytest.raises(InputError, match="not found"):
        load_vocabulary(["missing/file.txt"])


def test_template_averaging_keeps_raw_scale():
    vocab = Vocabulary(["a", "b"], [], "")

    def encode(texts):
        base = {"a": [3.0, 0.0], "b": [0.0, 2.0]}
        return np.array([base[t[-1]] if t.endswith(("a", "b")) else [1.0, 1.0] for t in texts])

    emb = vocabulary_embeddings(vocab, encode, ["{}", "x {}"])
    np.testing.assert_allclose(emb, [[3.0, 0.0], [0.0, 2.0]], atol=1e-6)
    with pytest.raises(InputError, match="placeholder"):
        vocabulary_embeddings(vocab, encode, ["no placeholder"])


# ------------------------------------------------------------------------------------------
# Naming maths
# ------------------------------------------------------------------------------------------


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


def test_bank_round_trip_and_refusal_for_another_sae(tmp_path):
    vocab, emb = random_vocab(100, 24, seed=4)
    sae = planted_sae(emb, n_planted=6, n_latents=64)
    other = planted_sae(emb, n_planted=6, n_latents=64, seed=5)
    bank = name_latents(sae, vocab, emb, bank_name="b", sae_info=sae_description(sae, "x")).bank
    path = save_bank(bank, tmp_path / "b.yaml")
    loaded = load_bank(path)
    assert [c.name for c in loaded.concepts] == [c.name for c in bank.concepts]
    assert loaded.extra["summary"] == bank.extra["summary"]
    loaded.check_sae(sae_fingerprint(sae))
    with pytest.raises(InputError, match="built for another SAE"):
        loaded.check_sae(sae_fingerprint(other))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(threshold="abc"), "threshold must be a number"),
        (lambda d: d.update(threshold=float("nan")), "threshold must be finite"),
        (
            lambda d: d["concepts"][0].update(latent=999),
            "names latent 999, but the bank's SAE has 64",
        ),
        (lambda d: d["concepts"][0].update(latent=-1), "non-negative integer"),
        (lambda d: d["concepts"][0].update(latent=1.5), "non-negative integer"),
        (lambda d: d["concepts"][1].update(latent=d["concepts"][0]["latent"]), "listed twice"),
        (lambda d: d["concepts"][0].update(alternatives=[[]]), "pairs"),
        (lambda d: d["concepts"][0].update(validated="no"), "true or false"),
        (lambda d: d["concepts"][0].update(score=float("inf")), "score must be finite"),
        (lambda d: d.update(vocabulary=[1]), "'vocabulary' must be a mapping"),
    ],
)
def test_tampered_bank_fields_are_input_errors(tmp_path, edit, message):
    import yaml

    vocab, emb = random_vocab(40, 16, seed=4)
    sae = planted_sae(emb, n_planted=4, n_latents=64)
    bank = name_latents(sae, vocab, emb, bank_name="b", sae_info=sae_description(sae, "x")).bank
    data = bank.to_yaml_dict()
    edit(data)
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        load_bank(path)


def test_check_sae_refuses_latents_the_sae_does_not_have():
    vocab, emb = random_vocab(40, 16, seed=4)
    sae = planted_sae(emb, n_planted=4, n_latents=64)
    bank = name_latents(sae, vocab, emb, bank_name="b", sae_info={"fingerprint": "f"}).bank
    bank.check_sae("f", n_latents=64)
    with pytest.raises(InputError, match="names latent 32, but the SAE has 32 latents"):
        bank.check_sae("f", n_latents=32)


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


@pytest.mark.parametrize(
    "name", ["../../x", "..", ".hidden", "-rf", "a/b", "a\\b", "/etc/passwd", "a\x01b", "", "x\n"]
)
def test_bank_names_cannot_escape_the_banks_folder(tmp_path, name):
    from audit.concepts import bank_path_for_name

    with pytest.raises(InputError, match="invalid bank name"):
        bank_path_for_name(name, tmp_path)


def test_plain_bank_names_stay_inside_the_banks_folder(tmp_path):
    from audit.concepts import bank_path_for_name

    for name in ("demo", "celeba-v2.1", "ünïcode_ok"):
        path = bank_path_for_name(name, tmp_path)
        assert path.parent == tmp_path / "concept_banks" and path.name == f"{name}.yaml"
