"""The labelled audit on the marker world: the label leaks through a pasted marker (a stamp, a
frame) in train and not in test; the audit ranks the marker concept first, seed after seed."""

from __future__ import annotations

import pytest
import torch

from audit.fairness import AuditSettings, run_audit, to_json
from tests.fairness.marker_world import (
    MARKER_COLUMN,
    TARGET_COLUMN,
    build_marker_world,
    marker_task,
)

SEEDS = range(20)


@pytest.fixture(scope="module")
def marker_world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small kernels: one thread is faster on a shared 2-core machine
    yield build_marker_world(tmp_path_factory.mktemp("marker_world"))
    torch.set_num_threads(threads)


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


@pytest.mark.parametrize("marker", ["stamp", "frame"])
def test_the_audit_ranks_the_marker_first(marker_world, marker):
    outcomes = []
    for seed in SEEDS:
        audit = _audit(marker_world, marker, seed)
        top = audit["concepts"][0]
        flagged = [c["name"] for c in audit["concepts"] if c["flagged"]]
        outcomes.append((seed, top["name"], round(top["delta_wga"], 3), top["ci"][0], flagged))
    # Measured, 2-core CPU VM, 2026-12-04, with this world (seed 0: corpus, SAE and bank) and
    # seed 1: the marker ranks first among every concept, named or not, in 20 of 20 task seeds
    # for each marker and world (its ΔWGA 0.055–0.20, the next concept's at most 0.06), and
    # its bootstrap CI excludes 0 in all 80. Being the *only* flagged concept is not yet
    # reliable (stamp 17 and 18 of 20, frame 16 and 19): a colour ("purple") reaches
    # ΔWGA ≥ 0.02 and is flagged beside it, or the marker misses q ≤ 0.05 against the matched
    # null. With a third of the SAE training (3000 scenes, 10 epochs) world seed 1 ranked the
    # stamp first in only about half the seeds: the SAE must be trained past its first steps.
    first = [o for o in outcomes if o[1] == marker and o[2] >= 0.02 and o[3] > 0]
    assert len(first) >= 19, outcomes
