"""Naming checked against images: polarity, selectivity, concepts across latents, the null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.concepts import ImageNamingSettings, load_bank, name_latents, save_bank, self_ranks
from audit.concepts.auc import auc
from audit.concepts.images import (
    activation_covariance,
    choose_words,
    make_probe,
    robust_z,
    word_directions,
)
from audit.errors import InputError
from tests.concepts.worlds import COLOURS, MARKER, SHAPES, marker_world, planted_sae, random_vocab

INFO = {"fingerprint": "x"}


def _truth(world, name: str) -> np.ndarray:
    """Which images show ``name`` (or, for ``no <word>``, do not)."""
    absent = name.startswith("no ")
    word = name[3:] if absent else name
    if word in COLOURS:
        shown = world.colour == COLOURS.index(word)
    elif word in SHAPES:
        shown = world.shape == SHAPES.index(word)
    elif word == MARKER:
        shown = world.marked
    else:
        shown = np.zeros(len(world.images), dtype=bool)  # a word no image shows
    return ~shown if absent else shown


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marker_world_names_follow_the_images_and_their_polarity(seed):
    world = marker_world(seed=seed)
    bank = name_latents(
        world.sae,
        world.vocab,
        world.texts,
        bank_name="m",
        sae_info=INFO,
        probe_images=world.images,
        image_settings=ImageNamingSettings(seed=seed),
    ).bank
    of = world.latent_of
    for word in COLOURS:
        assert bank.concepts[of[word]].name == word and bank.concepts[of[word]].validated
    for word in SHAPES:  # half of all images: their zero-shot labels are noisier
        assert bank.concepts[of[word]].name in (word, None)
        assert bank.concepts[of[word]].nearest == word
    assert bank.concepts[of["marker"]].name == MARKER  # missed by text naming (modality gap)
    # The latent that fires whenever the marker is absent: "no red frame" or nothing, never a
    # word it merely co-occurs with.
    absence = bank.concepts[of["no marker"]]
    assert absence.name in (None, f"no {MARKER}")
    assert absence.image.word == MARKER and absence.image.polarity == "absent"
    assert absence.label in ("no red frame", f"latent {of['no marker']} (~no {MARKER})")
    # A near copy of the red latent is part of the red concept.
    red = next(g for g in bank.concept_groups() if g.name == "red")
    assert {of["red"], of["red copy"]} <= set(red.latents)
    # Every validated concept predicts what its name says, in the right direction.
    with torch.no_grad():
        z = world.sae.encode(torch.as_tensor(world.images))
    for g in bank.concept_groups():
        if g.validated:
            value = auc(z[:, list(g.latents)].sum(1), torch.as_tensor(_truth(world, g.name)))
            assert value >= 0.9, (g.name, g.latents, value)


def test_text_validation_has_no_selectivity_for_an_absence_latent():
    """Why images are needed: the latent that fires whenever the marker is absent fires on
    every text embedding (texts have no marker), so the text self-consistency check passes it
    for almost any word."""
    world = marker_world(seed=0)
    latent = world.latent_of["no marker"]
    words = np.arange(len(world.vocab))
    ranks = self_ranks(world.sae, world.texts, np.full(len(words), latent), word_index=words)
    assert np.mean((ranks >= 1) & (ranks <= 5)) > 0.8
    text = name_latents(world.sae, world.vocab, world.texts, bank_name="t", sae_info=INFO).bank
    assert not text.concepts[world.latent_of["marker"]].validated


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_gets_no_validated_names(seed):
    """Random image embeddings, words and SAE: the random-latent null leaves (almost)
    everything unnamed."""
    rng = np.random.default_rng(seed)
    vocab, texts = random_vocab(60, 24, seed=seed)
    sae = planted_sae(texts, n_planted=0, n_latents=64, seed=seed)
    images = rng.standard_normal((2000, 24)).astype(np.float32)
    bank = name_latents(
        sae,
        vocab,
        texts,
        bank_name="n",
        sae_info=INFO,
        probe_images=images,
        image_settings=ImageNamingSettings(seed=seed),
    ).bank
    assert sum(g.validated for g in bank.concept_groups()) <= 1


def test_responses_equal_the_explicit_images_by_words_computation():
    """The factorised response ``cov(z, x̂)·(t̂_w − t̄)`` equals the covariance of each latent
    with each word's per-image centred similarity computed image by image."""
    world = marker_world(n=600, seed=3)
    settings = ImageNamingSettings()
    probe = make_probe(world.sae, world.images, settings)
    directions = word_directions(world.texts)
    covariance = activation_covariance(probe.z_fit, probe.unit_fit, chunk_rows=97)
    fast = covariance @ directions.T
    unit_x = probe.unit_fit.double()
    unit_t = torch.as_tensor(world.texts).double()
    unit_t = unit_t / unit_t.norm(dim=1, keepdim=True)
    sims = unit_x @ unit_t.T
    centred = sims - sims.mean(1, keepdim=True)  # per image, over the vocabulary
    z = probe.z_fit.double()
    naive = (z - z.mean(0)).T @ (centred - centred.mean(0)) / (z.shape[0] - 1)
    torch.testing.assert_close(fast.double(), naive, atol=1e-5, rtol=1e-4)
    choice = choose_words(covariance, directions, absence_factor=2.0)
    scores = robust_z(naive.float())
    j = world.latent_of["green"]
    assert choice.word[j] == int(scores[j].argmax()) and not choice.absent[j]


def test_robust_z_when_most_words_respond_alike():
    """Golden values by hand. Most words respond alike (MAD 0): the scale falls back to
    1.2533 x the mean absolute deviation, so a word a little above the rest is not selective
    by a factor of 1e10; a row with no spread scores 0; the usual case is (r - med) / 1.4826 MAD."""
    alike = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])  # median 0, MAD 0, mean |dev| 0.2
    torch.testing.assert_close(robust_z(alike), alike / (1.2533 * 0.2))
    assert robust_z(torch.full((1, 6), 0.3)).abs().max() == 0
    spread = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0]])  # median 3, MAD 1
    torch.testing.assert_close(robust_z(spread), (spread - 3.0) / 1.4826)


def test_bank_keeps_the_text_and_image_scores_behind_each_decision(tmp_path):
    world = marker_world(seed=0)
    bank = name_latents(
        world.sae,
        world.vocab,
        world.texts,
        bank_name="m",
        sae_info=INFO,
        probe_images=world.images,
        probe_source={"path": "probe-store"},
    ).bank
    loaded = load_bank(save_bank(bank, tmp_path / "m.yaml"))
    assert loaded.extra["validation"]["method"] == "image"
    assert loaded.extra["naming"]["probe"]["path"] == "probe-store"
    assert loaded.extra["summary"]["concepts"] >= 7
    red = next(g for g in loaded.concept_groups() if g.name == "red")
    assert red.image.auc > red.image.auc_threshold and red.image.selectivity >= 3
    assert red.score == max(loaded.concepts[j].score for j in red.latents)  # text cosine
    latent = loaded.concepts[world.latent_of["red"]]
    assert latent.image.word == "red" and latent.image.auc is not None and latent.closest


def test_probe_images_are_checked():
    world = marker_world(n=400, seed=0)
    settings = ImageNamingSettings()
    with pytest.raises(InputError, match="SAE expects \\[rows, 48\\]"):
        make_probe(world.sae, world.images[:, :10], settings)
    with pytest.raises(InputError, match="too few to validate"):
        make_probe(world.sae, world.images[:50], settings)
    poisoned = world.images.copy()
    poisoned[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        make_probe(world.sae, poisoned, settings)


def test_verdicts_in_chunks_equal_one_candidate_at_a_time():
    """The candidates are judged in chunks (one rank pass, one product per chunk): each
    candidate's held-out AUC equals the AUC of its own summed core, and its selectivity the
    robust z of its word among the whole vocabulary's responses, computed alone."""
    from audit.concepts import grouping
    from audit.concepts.naming import gather_evidence

    world = marker_world(n=600, seed=4)
    settings = ImageNamingSettings(seed=4)
    evidence = gather_evidence(world.sae, world.vocab, world.texts, world.images, settings)
    members = grouping.concept_members(
        evidence.probe.z_fit, evidence.labels, evidence.choice, evidence.kin_auc
    )
    assert len(members) > 5 and any(len(m.core) > 1 for m in members)
    verdicts = grouping.evaluate(evidence, members, settings, chunk=3)  # several chunks
    labels = evidence.labels
    for m, verdict in zip(members, verdicts, strict=True):
        # The greedy core started from the lead latent's AUC as the ranks give it is the core
        # grown from scratch.
        y_fit = labels.fit[:, labels.column(m.word)] ^ m.absent
        lead = max(m.core, key=lambda j: auc(evidence.probe.z_fit[:, j], y_fit))
        rest = [j for j in m.kin if j != lead]
        rest.sort(key=lambda j: -auc(evidence.probe.z_fit[:, j], y_fit))
        again = grouping.greedy_members(evidence.probe.z_fit, y_fit, np.array([lead, *rest]))
        assert tuple(sorted(again)) == m.core
        summed = evidence.probe.z_hold[:, list(m.core)].sum(1)
        y = labels.hold[:, labels.column(m.word)] ^ m.absent
        scores = verdict.group.image
        np.testing.assert_equal(scores.auc, auc(summed, y))
        responses = evidence.covariance[list(m.core)].sum(0) @ evidence.directions.T
        alone = float(robust_z(responses.reshape(1, -1))[0, m.word])
        assert scores.selectivity == pytest.approx(-alone if m.absent else alone, rel=1e-5)
        assert verdict.validated == (
            scores.auc > evidence.auc_threshold and scores.selectivity >= settings.min_selectivity
        )


def test_order_statistics_and_robust_z_equal_sorting_and_torch_median():
    """Selection gives the values a sort puts at each place (ties, constant rows, odd and even
    lengths), and the robust z built on it equals the one built on ``torch.median``."""
    from audit.concepts.images import MAD_TO_SD, MEAN_AD_TO_SD, order_statistics

    g = torch.Generator().manual_seed(5)
    for m in (1, 2, 7, 500, 2001):
        rows = torch.randn(9, m, generator=g)
        rows[:3] = rows[:3].round()  # ties
        rows[3] = 1.0  # constant
        ks = sorted({0, (m - 1) // 2, m - 1})
        ordered = rows.sort(dim=1).values
        for k, found in zip(ks, order_statistics(rows, ks), strict=True):
            assert torch.equal(found[:, 0], ordered[:, k])
        median = rows.median(dim=1, keepdim=True).values
        deviation = (rows - median).abs()
        mad = deviation.median(dim=1, keepdim=True).values
        scale = torch.where(mad > 0, MAD_TO_SD * mad, MEAN_AD_TO_SD * deviation.mean(1, True))
        assert torch.equal(robust_z(rows), (rows - median) / scale.clamp_min(1e-12))
