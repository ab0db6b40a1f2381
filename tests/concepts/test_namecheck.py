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


def _planted(rng, positives: int, negatives: int, separation: float):  # type: ignore[no-untyped-def]
    """Activations of ``positives`` rows showing the word and ``negatives`` not showing it,
    normal with means ``separation`` apart (AUC Φ(separation / √2)), and word scores that
    label exactly the positives (threshold 0)."""
    shows = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    activation = rng.standard_normal(shows.size) + separation * shows
    return activation, np.where(shows, 1.0, -1.0)


def test_a_name_is_refuted_only_beyond_its_interval(rng):
    from audit.concepts.bank import ImageScores

    word, evidence = WordCheck("red", np.zeros(2), 0.0), ImageScores("red", auc_threshold=0.9)
    # AUC about 0.84, below the threshold 0.9: with 15 labelled rows the interval reaches past
    # it (undecided); with 1 500 it does not (refuted).
    few = check_name(*_planted(rng, 15, 1985, 1.4), word, evidence)
    many = check_name(*_planted(rng, 1500, 1500, 1.4), word, evidence)
    assert few is not None and many is not None
    assert few.auc < 0.9 < few.auc_upper and few.holds is None
    assert many.auc_upper < 0.9 and many.holds is False
    strong = check_name(*_planted(rng, 15, 1985, 3.0), word, evidence)
    assert strong is not None and strong.holds is True  # AUC ≈ 0.98 holds even on 15 rows


def test_the_auc_interval_matches_the_spread_of_repeated_samples(rng):
    """Hanley and McNeil's standard error against the AUC's spread over 400 samples drawn
    from the same two normal distributions."""
    from audit.concepts.auc import auc
    from audit.concepts.namecheck import auc_upper_bound

    for positives, negatives, separation in ((30, 300, 1.0), (200, 200, 2.0)):
        values = []
        for _ in range(400):
            activation, scores = _planted(rng, positives, negatives, separation)
            values.append(auc(torch.as_tensor(activation), torch.as_tensor(scores > 0)))
        mean, spread = float(np.mean(values)), float(np.std(values))
        standard_error = (auc_upper_bound(mean, positives, negatives) - mean) / 1.96
        assert abs(standard_error - spread) <= 0.15 * spread, (standard_error, spread)


def test_a_concept_active_mostly_where_its_word_is_not_shown_is_refuted(rng):
    """The demo's "heart" on circles and squares: 23 rows read as hearts sit at the top of the
    concept's ranking (a high AUC), but it is active on a third of all rows, which show no
    heart — so the name does not describe where the concept acts."""
    from audit.concepts.bank import ImageScores

    n = 2000
    shows = np.zeros(n, bool)
    shows[:23] = True
    activation = np.where(shows, 3.0, 0.0) + rng.random(n)
    active = activation > 0.5  # the 23 and about half of the others
    word, evidence = WordCheck("heart", np.zeros(2), 0.0), ImageScores("heart", auc_threshold=0.9)
    scores = np.where(shows, 1.0, -1.0)
    found = check_name(activation, scores, word, evidence, active)
    assert found is not None and found.auc >= 0.99  # the ranking alone would pass it
    assert found.share < 0.05 and found.share_upper < 0.5 and found.holds is False
    # Active only where it shows, the same concept holds.
    assert check_name(activation, scores, word, evidence, shows).holds is True
