"""Issue 13's marker world without the label: the label leaks through a pasted marker (a
stamp, a frame) in train and not in test, and ``discover``, given only the classifier and the
images, names the marker first and flags nothing else that is not a real weak group
(tests/fairness/marker_world.py; the world is the session's ``marker_world`` fixture, shared
with the labelled audit's test)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from audit.discover import DiscoverSettings, run_discover
from audit.fairness.classifiers import fit_probe
from audit.fairness.config import AuditSettings
from tests.fairness.marker_world import TARGET_COLUMN, marker_task

SEEDS = range(20)


def _outcomes(world, marker: str) -> list[tuple]:
    settings = DiscoverSettings(AuditSettings(target=TARGET_COLUMN, spurious="", split="test"))
    out = []
    for seed in SEEDS:
        task = marker_task(world, marker, seed)
        labels = task.labels[[TARGET_COLUMN, "split"]]  # no marker column: discover finds it
        train = (labels["split"] == "train").to_numpy()
        x = np.asarray(task.store.read())
        # The probe the labelled test audits: strongly regularised, it takes the cheap cue.
        head = fit_probe(x[train], labels[TARGET_COLUMN].to_numpy()[train], seed=seed, c=1e-3)
        result, _ = run_discover(task.store, labels, world.sae, world.bank, head, settings)
        top = result.concepts[0]
        flagged = [c.name for c in result.concepts if c.flagged]
        out.append((seed, top.name, round(top.delta_wga, 3), flagged))
    return out


@pytest.fixture(scope="module")
def outcomes(marker_world) -> Callable[[str], list[tuple]]:
    """A marker's 20 discover runs, made once for every test of this module that reads them."""
    return functools.cache(lambda marker: _outcomes(marker_world, marker))


def _alone(outcomes: list[tuple], marker: str) -> list[tuple]:
    """The seeds where the marker ranks first and is the only flag."""
    return [o for o in outcomes if o[1] == marker and o[3] == [marker]]


def test_discover_names_the_frame_first(outcomes):
    # Measured, 2-core CPU VM, 2026-12-04: the frame ranks first in 20 of 20 seeds with world
    # seeds 0 and 1 (its ΔWGA 0.064–0.146 with world seed 0, the next concept's at most 0.023).
    frame = outcomes("frame")
    assert sum(o[1] == "frame" for o in frame) >= 19, frame
    # ... and flags it (whatever else is flagged beside it: see the next test). Measured: 20 of
    # 20 seeds with world seed 0, 19 of 20 with world seed 1 (seed 12: first, not significant).
    assert sum(o[1] == "frame" and "frame" in o[3] for o in frame) >= 17, frame


def test_discover_flags_only_the_frame(outcomes):
    # Issue 13's criterion, met by the frame. Measured, 2-core Intel Xeon VM, 2026-12-05: the
    # only flag in 20/20 seeds with this world (seed 0). It depends on the SAE's training run:
    # with world seed 1 (another corpus, SAE and bank) it is the only flag in 9/20, "blue"
    # beside it — there too a real weak group of the frame-trained probe (docs/discover.md).
    assert len(_alone(outcomes("frame"), "frame")) >= 19, outcomes("frame")


def _accuracy_drops(world, marker: str, seed: int) -> dict[str, float]:
    """Per colour, how much accuracy the leaky probe (the one discover audits) costs that
    colour's worse-off class against a probe fit on balanced data, both scored on held-out
    test rows: a colour that loses a lot is a real weak group of the leaky probe, which
    discover is right to flag."""
    task = marker_task(world, marker, seed)
    labels = task.labels
    x, y = np.asarray(task.store.read()), labels[TARGET_COLUMN].to_numpy()
    train = (labels["split"] == "train").to_numpy()
    balanced_fit = ~train & (np.arange(len(y)) % 2 == 0)
    held_out = ~train & ~balanced_fit
    heads = {
        name: fit_probe(x[rows], y[rows], seed=seed, c=1e-3)
        for name, rows in (("leaky", train), ("balanced", balanced_fit))
    }
    drops = {}
    for colour in sorted(set(labels["colour"])):
        worst = 0.0
        for target in (0, 1):
            cell = held_out & (labels["colour"] == colour).to_numpy() & (y == target)
            right = {
                name: float(((head.margin(torch.from_numpy(x[cell])).numpy() > 0) == target).mean())
                for name, head in heads.items()
            }
            worst = max(worst, right["balanced"] - right["leaky"])
        drops[colour] = worst
    return drops


@pytest.fixture(scope="module")
def stamp_drops(marker_world) -> list[dict[str, float]]:
    return [_accuracy_drops(marker_world, "stamp", seed) for seed in SEEDS]


def test_the_stamp_probe_really_fails_blue_circles(stamp_drops):
    """Why discover flags "blue" beside the stamp: blue objects are a real weak group of the
    stamp-trained probe, not an artefact. The stamp is pink; a probe that reads "pink ⇒ circle"
    pushes blue circles towards "square". In every seed blue is the colour that loses most under
    the leaky probe against one fit on balanced data. Measured, 20 seeds (2-core Intel Xeon VM,
    2026-12-05): blue circles 0.57–0.81 accurate under the leaky probe against 0.91–1.00
    balanced (a drop of 0.14–0.38); no other colour's class drops more than 0.14, in most seeds
    under 0.1 (75–96 held-out rows per cell)."""
    for seed, drops in zip(SEEDS, stamp_drops, strict=True):
        assert drops["blue"] >= 0.1 and max(drops, key=drops.get) == "blue", (seed, drops)


# Accuracy a colour's worse-off class must lose to the leaky probe to count as a real weak group.
# Measured (below): blue loses 0.23-0.38 in every seed where it is flagged, no other colour
# more than 0.14 in any seed (about 80 held-out rows per cell: differences under ~0.15 are
# within noise).
REAL_WEAK_GROUP_DROP = 0.2


def test_discover_flags_the_stamp_and_nothing_that_is_not_a_real_weak_group(outcomes, stamp_drops):
    """Issue 13's "names the marker first and flags only it", for a world where the marker is
    not the only weak group: in this world "only the stamp" is not the right answer (blue
    objects really fail, the test above), so discover must rank the stamp first, flag it, and
    flag nothing else but colours that lose at least REAL_WEAK_GROUP_DROP of accuracy to the
    leaky probe in that seed. Measured, 2-core Intel Xeon VM, 2026-12-05: the stamp first and
    flagged in 20/20 seeds, the only other flag "blue" (15/20; it loses 0.23–0.38 in those
    seeds). A spurious flag — a colour that does not lose, a shape, the target — fails it."""
    right = []
    for (seed, top, _, flagged), drops in zip(outcomes("stamp"), stamp_drops, strict=True):
        beside = set(flagged) - {"stamp"}
        real = {c for c, drop in drops.items() if drop >= REAL_WEAK_GROUP_DROP}
        if top == "stamp" and "stamp" in flagged and beside <= real:
            right.append(seed)
    assert len(right) >= 19, (outcomes("stamp"), stamp_drops)
