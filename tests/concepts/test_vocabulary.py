"""Vocabulary files, built-in lists and prompt templates."""

from __future__ import annotations

import numpy as np
import pytest

from audit.concepts import (
    Vocabulary,
    builtin_vocabularies,
    load_vocabulary,
    read_vocabulary_file,
    vocabulary_embeddings,
)
from audit.errors import InputError


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


def test_builtin_vocabularies_by_the_file_names_seen_in_concept_banks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no concept_banks/ folder here: the built-ins are meant
    for spec in ("world.txt", "concept_banks/world.txt"):
        vocab = load_vocabulary([spec])
        assert vocab.entries == load_vocabulary(["world"]).entries and vocab.sources == ["world"]
    (tmp_path / "world.txt").write_text("mine\n", encoding="utf-8")
    assert load_vocabulary(["world.txt"]).entries == ["mine"]  # an existing file wins
    with pytest.raises(InputError, match=r"unknown vocabulary 'colours'.*\(celeba, colors"):
        load_vocabulary(["colours"])
