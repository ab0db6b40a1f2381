"""``msae-audit concepts`` and ``concepts show`` through the command line."""

from __future__ import annotations

import numpy as np
import pytest

from audit.concepts import load_bank
from audit.sae import save_sae
from tests.concepts.worlds import planted_sae
from tests.conftest import assert_one_line_error


@pytest.fixture
def planted(tmp_path):
    """A vocabulary file, its text embeddings (.npy) and an SAE whose first 8 latents are the
    directions of the first 8 words."""
    rng = np.random.default_rng(123)
    words = [f"concept{i}" for i in range(60)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("# test words\n" + "\n".join(words) + "\n", encoding="utf-8")
    emb = rng.standard_normal((60, 24)).astype(np.float32)
    np.save(tmp_path / "text.npy", emb)
    save_sae(planted_sae(emb, n_planted=8, n_latents=64), tmp_path / "sae")
    save_sae(planted_sae(emb, n_planted=8, n_latents=64, seed=9), tmp_path / "other_sae")
    return tmp_path


def test_concepts_from_text_embeddings_and_show(cli, planted, monkeypatch):
    monkeypatch.chdir(planted)
    args = ["concepts", "--sae", "sae", "--vocab", "vocab.txt", "--text-embeddings", "text.npy"]
    result = cli(*args, "--name", "mybank")
    assert result.exit_code == 0, result.stderr
    assert "latents have a validated name" in " ".join(result.stdout.split())
    bank = load_bank("mybank")  # ./concept_banks/mybank.yaml
    assert (planted / "concept_banks" / "mybank.yaml").exists()
    assert [c.name for c in bank.concepts[:8]] == [f"concept{i}" for i in range(8)]
    assert all(c.validated for c in bank.concepts[:8])
    shown = cli("concepts", "show", "mybank")
    assert shown.exit_code == 0 and "concept3" in shown.stdout
    assert cli("concepts", "show", "mybank", "--sae", "sae").exit_code == 0
    refused = cli("concepts", "show", "mybank", "--sae", "other_sae")
    assert_one_line_error(refused, 2, "built for another SAE")
    out = cli(*args, "--out", "elsewhere/b.yaml", "--threshold", "0.99")
    assert out.exit_code == 0 and load_bank("elsewhere/b.yaml").threshold == pytest.approx(0.99)


@pytest.mark.parametrize(
    "content,message",
    [(b"\x00\x01\x02", "binary"), (b"\xc3\x28 bad\n", "not UTF-8"), (b"# nothing\n\n", "empty")],
)
def test_bad_vocabulary_exits_2(cli, planted, content, message):
    (planted / "bad.txt").write_bytes(content)
    result = cli(
        "concepts",
        "--sae",
        planted / "sae",
        "--vocab",
        planted / "bad.txt",
        "--text-embeddings",
        planted / "text.npy",
        "--out",
        planted / "b.yaml",
    )
    assert_one_line_error(result, 2, message)


def test_text_embeddings_must_align(cli, planted):
    np.save(planted / "short.npy", np.load(planted / "text.npy")[:50])
    np.save(planted / "narrow.npy", np.load(planted / "text.npy")[:, :10])
    base = [
        "concepts",
        "--sae",
        planted / "sae",
        "--vocab",
        planted / "vocab.txt",
        "--out",
        planted / "b.yaml",
    ]
    assert_one_line_error(
        cli(*base, "--text-embeddings", planted / "short.npy"), 2, "50 text embeddings for 60"
    )
    assert_one_line_error(
        cli(*base, "--text-embeddings", planted / "narrow.npy"), 2, "dimension 10"
    )
    assert_one_line_error(cli(*base[:-2]), 2, "--name")
    assert_one_line_error(
        cli(*base, "--vocab", "nonexistent_builtin", "--text-embeddings", planted / "text.npy"),
        2,
        "unknown vocabulary",
    )


def test_concepts_with_probe_images(cli, tmp_path, monkeypatch):
    """``--probe-images``: names checked against images; the table shows the image scores."""
    from tests.concepts.worlds import MARKER, marker_world

    world = marker_world(seed=0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "words.txt").write_text("\n".join(world.vocab.entries) + "\n", encoding="utf-8")
    np.save(tmp_path / "texts.npy", world.texts)
    np.save(tmp_path / "probe.npy", world.images)
    save_sae(world.sae, tmp_path / "sae")
    result = cli(
        "concepts",
        "--sae",
        "sae",
        "--vocab",
        "words.txt",
        "--text-embeddings",
        "texts.npy",
        "--probe-images",
        "probe.npy",
        "--name",
        "marker",
    )
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "checked against 3000 probe images" in text and "AUC" in text
    bank = load_bank("marker")
    assert bank.extra["validation"]["method"] == "image"
    assert bank.concepts[world.latent_of["marker"]].name == MARKER
    word_file = tmp_path / "concept_banks" / "marker.words.safetensors"
    assert "with its word file" in text and word_file.is_file()
    assert bank.word_checks and MARKER in bank.word_checks  # read back from that file
    shown = cli("concepts", "show", "marker")
    assert f"word file: {len(bank.word_checks)} words" in " ".join(shown.stdout.split())
    word_file.unlink()  # a bank copied without it: show says what that costs
    shown = " ".join(cli("concepts", "show", "marker").stdout.split())
    assert "word file" in shown and "not again on the audited ones" in shown
    short = cli(
        *["concepts", "--sae", "sae", "--vocab", "words.txt"],
        *["--text-embeddings", "texts.npy", "--out", "b.yaml"],
        *["--probe-images", "texts.npy"],
    )
    assert_one_line_error(short, 2, "too few to validate names")


def test_names_are_checked_against_the_sae_training_store_by_default(cli, tmp_path):
    """Without --probe-images, an SAE trained here has its names checked against the store it
    was trained on (while that store is there unchanged); --text-only skips the check."""
    from audit.data.planted import planted_embeddings
    from audit.store import write_store

    data = planted_embeddings(n_samples=4000, dim=32, n_atoms=32, active=3, seed=0)
    planted_store = write_store(tmp_path / "store", data.embeddings, model="planted")
    trained = cli("train", "--embeddings", planted_store.path, "--out", tmp_path / "sae",
                  "--epochs", "1", "-q")  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    rng = np.random.default_rng(0)
    (tmp_path / "words.txt").write_text("\n".join(f"w{i}" for i in range(40)) + "\n")
    np.save(tmp_path / "texts.npy", rng.standard_normal((40, planted_store.dim)).astype(np.float32))
    args = ["concepts", "--sae", tmp_path / "sae", "--vocab", tmp_path / "words.txt"]
    args += ["--text-embeddings", tmp_path / "texts.npy", "-q"]
    found = cli(*args, "--out", tmp_path / "image.yaml")
    assert found.exit_code == 0, found.stderr
    said = " ".join(found.stderr.split())
    assert f"checking names against the images the SAE was trained on: {planted_store.path}" in said
    assert load_bank(tmp_path / "image.yaml").extra["validation"]["method"] == "image"
    unwrapped = "".join(found.stdout.split())  # a long path may wrap anywhere
    assert f"probeimagesof{planted_store.path}".replace(" ", "") in unwrapped
    skipped = cli(*args, "--out", tmp_path / "text.yaml", "--text-only")
    assert skipped.exit_code == 0 and "checking names" not in skipped.stderr
    assert load_bank(tmp_path / "text.yaml").extra["validation"]["method"] != "image"
    both = cli(*args, "--out", tmp_path / "x.yaml", "--text-only", "--probe-images", "p.npy")
    assert_one_line_error(both, 2, "either --probe-images or --text-only")
    (tmp_path / "sae" / "training.json").unlink()  # weights alone, as released SAEs come
    alone = cli(*args, "--out", tmp_path / "alone.yaml")
    assert alone.exit_code == 0
    said = " ".join(alone.stderr.split())
    assert "naming from text alone: no images to check names against" in said
    assert load_bank(tmp_path / "alone.yaml").extra["validation"]["method"] != "image"
