"""The labelled audit on the marker world: the label leaks through a pasted marker (a stamp, a
frame) in train and not in test; the audit ranks the marker concept first, seed after seed."""

from __future__ import annotations

import pytest

from audit.fairness import AuditSettings, run_audit, to_json
from tests.fairness.marker_world import (
    MARKER_COLUMN,
    TARGET_COLUMN,
    marker_task,
)

SEEDS = range(20)


def _audit(world, marker: str, seed: int) -> dict:
    task = marker_task(world, marker, seed)
    result, _ = run_audit(
        task.store, task.labels, world.sae, world.bank, "probe",
        # A strongly regularised probe takes the cheap cue, as the demo's does. The cue hurts
        # the unmarked circles, where zeroing the marker changes nothing: mean ablation
        # removes it in both directions.
        AuditSettings(TARGET_COLUMN, MARKER_COLUMN, seed=seed, ablation="mean", probe_c=1e-3),
    )  # fmt: skip
    return to_json(result)


@pytest.fixture(scope="module")
def outcomes(marker_world) -> dict[str, list[tuple]]:
    """Per marker, per seed: (seed, top concept, its ΔWGA, its CI's lower bound, flagged)."""
    out: dict[str, list[tuple]] = {}
    for marker in ("stamp", "frame"):
        out[marker] = []
        for seed in SEEDS:
            audit = _audit(marker_world, marker, seed)
            top = audit["concepts"][0]
            flagged = [c["name"] for c in audit["concepts"] if c["flagged"]]
            out[marker].append(
                (seed, top["name"], round(top["delta_wga"], 3), top["ci"][0], flagged)
            )
    return out


@pytest.mark.parametrize("marker", ["stamp", "frame"])
def test_the_audit_ranks_the_marker_first(outcomes, marker):
    # Measured, 2-core CPU VM, 2026-12-04, with this world (seed 0: corpus, SAE and bank) and
    # seed 1: the marker ranks first among every concept, named or not, in 20 of 20 task seeds
    # for each marker and world (its ΔWGA 0.055–0.20, the next concept's at most 0.06), and
    # its bootstrap CI excludes 0 in all 80. With a third of the SAE training (3000 scenes,
    # 10 epochs) world seed 1 ranked the stamp first in only about half the seeds: the SAE
    # must be trained past its first steps.
    first = [o for o in outcomes[marker] if o[1] == marker and o[2] >= 0.02 and o[3] > 0]
    assert len(first) >= 19, outcomes[marker]


@pytest.mark.parametrize("marker", ["stamp", "frame"])
def test_nothing_but_the_marker_is_flagged(outcomes, marker):
    # Measured, 2-core CPU VM, 2026-12-04: no other concept flagged in 80 of 80 audits (world
    # seeds 0 and 1, both markers, 20 task seeds). Before concepts below a flagged one were also
    # tested beyond it, "purple" was flagged beside the frame in 4/20 (ΔWGA 0.020–0.025, p ≤
    # 0.003: it repairs the borderline unmarked circles the marker leaves; beyond the frame its
    # effect is +0.002, p = 0.83) and "blue" beside the stamp with world seed 1.
    others = [o for o in outcomes[marker] if set(o[4]) - {marker}]
    assert not others, others


@pytest.mark.parametrize("marker", ["stamp", "frame"])
def test_the_audit_flags_only_the_marker(outcomes, marker):
    # Measured, 2-core CPU VM, 2026-12-04: the marker is the only flag in 19/20 seeds for each
    # marker with world seed 0 (world seed 1: stamp 18/20, frame 19/20). In each miss the marker
    # ranks first (ΔWGA 0.055–0.087) but its relocation-null p is 0.01–0.15. Before this, with
    # null draws that only made the smallest p attainable (1000 here), a stamp at p ≈ 0.002 read
    # 0.003 and missed BH (q 0.054), and without the test beyond stronger concepts "purple" was
    # flagged beside the frame: 16/20 (frame) and 17/20 (stamp).
    only = [o for o in outcomes[marker] if o[1] == marker and o[4] == [marker]]
    assert len(only) >= 19, outcomes[marker]
