"""Issue 13's marker world without the label: the label leaks through a pasted marker (a
stamp, a frame) in train and not in test, and ``discover``, given only the classifier and the
images, names the marker first and flags only it (tests/fairness/marker_world.py; the world is
the session's ``marker_world`` fixture, shared with the labelled audit's test)."""

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


@pytest.mark.xfail(
    strict=False,
    reason="depends on the SAE (issue 13 point 5): with world seed 0 the frame is the only flag "
    "in 20/20 seeds, with world seed 1 in 9/20 ('blue' beside it, significant even beyond the "
    "frame — and a real weak group of that world's frame-trained probe, blue circles 0.79-0.82 "
    "accurate against 0.90-0.94 balanced; docs/discover.md, 'Marker world')",
)
def test_discover_flags_only_the_frame(outcomes):
    assert len(_alone(outcomes("frame"), "frame")) >= 19, outcomes("frame")


def test_discover_names_the_stamp_first_and_flags_it(outcomes):
    # Measured, 2-core CPU VM, 2026-12-04, world seed 0: first and flagged in 20/20 seeds (with
    # world seed 1: first in 12/20, "blue" first in the rest).
    stamp = outcomes("stamp")
    good = [o for o in stamp if o[1] == "stamp" and "stamp" in o[3]]
    assert len(good) >= 19, stamp


def test_the_stamp_probe_really_fails_blue_circles(marker_world):
    """Why discover flags "blue" beside the stamp: blue circles are a real weak group of the
    stamp-trained probe, not an artefact. The stamp is pink; a probe that reads "pink ⇒ circle"
    pushes blue circles towards "square". In every seed blue is the colour whose circles lose
    most under the leaky probe against one fit on balanced data. Measured, 20 seeds (2-core
    Intel Xeon VM, 2026-12-05): blue circles 0.57–0.81 accurate under the leaky probe against
    0.91–1.00 balanced (a drop of 0.14–0.38); the other colours' circles drop at most 0.14, in
    most seeds under 0.1 (75–96 held-out rows per cell)."""
    for seed in SEEDS:
        task = marker_task(marker_world, "stamp", seed)
        labels = task.labels
        x, y = np.asarray(task.store.read()), labels[TARGET_COLUMN].to_numpy()
        train = (labels["split"] == "train").to_numpy()
        test = ~train
        balanced_fit = test & (np.arange(len(y)) % 2 == 0)
        held_out = test & ~balanced_fit
        heads = {
            name: fit_probe(x[rows], y[rows], seed=seed, c=1e-3)
            for name, rows in (("leaky", train), ("balanced", balanced_fit))
        }
        drop = {}
        for colour in sorted(set(labels["colour"])):
            circles = held_out & (labels["colour"] == colour).to_numpy() & (y == 1)
            right = {
                name: float((head.margin(torch.from_numpy(x[circles])).numpy() > 0).mean())
                for name, head in heads.items()
            }
            drop[colour] = right["balanced"] - right["leaky"]
        assert drop["blue"] >= 0.1 and max(drop, key=drop.get) == "blue", (seed, drop)


@pytest.mark.xfail(
    strict=True,
    reason="not met (issue 13 point 5, docs/discover.md 'Marker world'): 'blue' is flagged beside "
    "the stamp in 15/20 seeds, significant even beyond it — blue circles are a real weak group of "
    "the stamp-trained probe (test_the_stamp_probe_really_fails_blue_circles), so 'only the "
    "stamp' is not the right answer in this world; the shipped tiny CLIP sees a stamp only in "
    "that pink (benchmarks/marker_colours.py), so a cleaner world needs a retrained tiny CLIP",
)
def test_discover_names_the_stamp_first_and_flags_only_it(outcomes):
    assert len(_alone(outcomes("stamp"), "stamp")) >= 19, outcomes("stamp")
