"""Names checked again on other images (audit.concepts.namecheck): on fresh images of the world
they were named in, every validated name holds, either polarity; the word scores are the
explicit products."""

from __future__ import annotations

import doctest

import numpy as np
import torch

import audit.concepts.namecheck
from audit.concepts import name_latents
from audit.concepts.bank import WordCheck
from audit.concepts.namecheck import MIN_LABELLED, check_name, word_scores
from tests.concepts.worlds import marker_world


def test_doctests():
    result = doctest.testmod(audit.concepts.namecheck)
    assert result.attempted > 0 and result.failed == 0


def test_word_scores_are_unit_images_times_directions(rng):
    x = rng.standard_normal((50, 6)).astype(np.float32) * 3
    checks = [WordCheck(w, rng.standard_normal(6).astype(np.float32), 0.0) for w in "ab"]
    scores = word_scores([x[:20], x[20:]], checks)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = unit @ np.stack([c.direction for c in checks]).T
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_every_validated_name_holds_on_fresh_images_of_its_world():
    world = marker_world(n=4000, seed=0)
    named_on, fresh = world.images[:2000], world.images[2000:]
    bank = name_latents(
        world.sae, world.vocab, world.texts, bank_name="m", sae_info={},
        probe_images=named_on,
    ).bank  # fmt: skip
    checks = bank.word_checks
    assert checks
    with torch.no_grad():
        z = world.sae.encode(torch.as_tensor(fresh)).numpy()
    groups = [g for g in bank.concept_groups() if g.validated]
    polarities = {g.image.polarity for g in groups}
    results = {}
    for g in groups:
        scores = word_scores([fresh], [checks[g.image.word]])[:, 0]
        results[g.name] = check_name(z[:, list(g.latents)].sum(1), scores, checks[g.image.word],
                                     g.image)  # fmt: skip
    assert len(results) >= 7 and polarities == {"present", "absent"}  # "no red" is one
    assert all(r is not None and r.holds for r in results.values()), results
    # The labels on fresh images follow what the world planted: "red" shows on red images.
    red = word_scores([fresh], [checks["red"]])[:, 0] > checks["red"].threshold
    truth = world.colour[2000:] == 0  # COLOURS[0] is red
    assert (red == truth).mean() >= 0.9 and red.sum() >= MIN_LABELLED
