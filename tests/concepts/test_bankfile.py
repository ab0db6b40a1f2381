"""Bank files: round trips, tampered fields, the SAE a bank belongs to."""

from __future__ import annotations

import pytest

from audit.concepts import (
    bank_to_dict,
    load_bank,
    name_latents,
    sae_description,
    save_bank,
)
from audit.errors import InputError
from audit.sae import sae_fingerprint
from tests.concepts.worlds import planted_sae, random_vocab


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
            lambda d: d["latents"][0].update(latent=999),
            "names latent 999, but the bank's SAE has 64",
        ),
        (lambda d: d["latents"][0].update(latent=-1), "non-negative integer"),
        (lambda d: d["latents"][0].update(latent=1.5), "non-negative integer"),
        (lambda d: d["latents"][1].update(latent=d["latents"][0]["latent"]), "listed twice"),
        (lambda d: d["latents"][0].update(alternatives=[[]]), "pairs"),
        (lambda d: d["concepts"][0].update(validated="no"), "true or false"),
        (lambda d: d["latents"][0].update(score=float("inf")), "score must be finite"),
        (lambda d: d["concepts"][0].update(latents=[0, 0]), "listed twice"),
        (lambda d: d["concepts"][0].update(latent=999), "not in 'latents'"),
        (lambda d: d["concepts"].append(dict(d["concepts"][0])), "is in concepts #0 and #"),
        (lambda d: d["concepts"][0].update(image={"word": "x", "polarity": "up"}), "polarity"),
        (lambda d: d["concepts"][0].update(image={"word": "x", "auc": "high"}), "auc must be"),
        (lambda d: d.update(version=3), "unsupported concept bank version 3"),
        (lambda d: d["concepts"][0].update(core=[999]), "is not part of latents"),
        (lambda d: d.update(vocabulary=[1]), "'vocabulary' must be a mapping"),
    ],
)
def test_tampered_bank_fields_are_input_errors(tmp_path, edit, message):
    import yaml

    vocab, emb = random_vocab(40, 16, seed=4)
    sae = planted_sae(emb, n_planted=4, n_latents=64)
    bank = name_latents(sae, vocab, emb, bank_name="b", sae_info=sae_description(sae, "x")).bank
    data = bank_to_dict(bank)
    assert data["concepts"], "the edits need a named concept"
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


def _image_bank(tmp_path):  # type: ignore[no-untyped-def]
    from tests.concepts.worlds import marker_world

    world = marker_world(seed=0)
    bank = name_latents(
        world.sae, world.vocab, world.texts, bank_name="m", sae_info={"fingerprint": "f",
        "d_in": 48}, probe_images=world.images,
    ).bank  # fmt: skip
    return bank, save_bank(bank, tmp_path / "m.yaml")


def test_the_word_file_round_trips_beside_the_bank(tmp_path):
    import numpy as np

    bank, path = _image_bank(tmp_path)
    assert bank.word_checks and "red" in bank.word_checks
    validated = {g.image.word for g in bank.concept_groups() if g.validated and g.image}
    assert set(bank.word_checks) == validated  # one check per validated concept's word
    loaded = load_bank(path)
    assert loaded.word_checks is not None and set(loaded.word_checks) == set(bank.word_checks)
    for word, check in bank.word_checks.items():
        again = loaded.word_checks[word]
        np.testing.assert_array_equal(again.direction, check.direction)
        assert again.threshold == check.threshold
    assert (tmp_path / "m.words.safetensors").is_file() and not loaded.notes()


def _replace_word_file(data: dict, path, content: bytes) -> None:  # type: ignore[no-untyped-def]
    from audit.fileio import file_sha256

    path.write_bytes(content)
    data["word_checks"]["sha256"] = file_sha256(path)  # recorded: only the content is wrong


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda d, f: f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0"),
            "does not match the sha256",
        ),
        (lambda d, f: d["word_checks"].update(file="../m.words.safetensors"), "a file name beside"),
        (
            lambda d, f: d["word_checks"].update(words=d["word_checks"]["words"][1:]),
            "directions for",
        ),
        (lambda d, f: d["word_checks"]["words"][0].update(threshold="x"), "words #0 is malformed"),
        (lambda d, f: d.update(word_checks=[1]), "must be a mapping with a 'words' list"),
        (lambda d, f: _replace_word_file(d, f, b"not safetensors"), "not a word file"),
    ],
)
def test_a_damaged_word_file_is_an_input_error(tmp_path, tamper, message):
    import yaml

    _, path = _image_bank(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    tamper(data, tmp_path / "m.words.safetensors")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_bank(path)
