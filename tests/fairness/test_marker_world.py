"""The labelled audit on the marker world: the label leaks through a pasted stamp in train and
not in test; the audit ranks the stamp concept first, seed after seed."""

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
def stamp_world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small kernels: one thread is faster on a shared 2-core machine
    yield build_marker_world(tmp_path_factory.mktemp("marker_world"), marker="stamp")
    torch.set_num_threads(threads)


def _audit(world, seed: int) -> dict:
    task = marker_task(world, seed)
    result, _ = run_audit(
        task.store, task.labels, world.sae, world.bank, "probe",
        # A strongly regularised probe takes the cheap cue, as the demo's does. The cue hurts
        # the unmarked circles, where zeroing the marker changes nothing: mean ablation
        # removes it in both directions.
        AuditSettings(TARGET_COLUMN, MARKER_COLUMN, seed=seed, ablation="mean", probe_c=1e-3),
    )  # fmt: skip
    return to_json(result)


def test_the_audit_ranks_the_marker_first(stamp_world):
    outcomes = []
    for seed in SEEDS:
        audit = _audit(stamp_world, seed)
        top = audit["concepts"][0]
        flagged = [c["name"] for c in audit["concepts"] if c["flagged"]]
        outcomes.append((seed, top["name"], round(top["delta_wga"], 3), top["ci"][0], flagged))
    # Measured, 2-core CPU VM, 2026-12-04, this world (SAE seed 0) and SAE seed 1: the stamp
    # ranks first among every concept, named or not, in 20 of 20 task seeds for both (its ΔWGA
    # 0.06–0.16, the next concept's at most 0.05),
    # and its bootstrap CI excludes 0 in all 40. Being the *only* flagged concept is not yet
    # reliable (14 and 7 of 20): some seeds' stamp misses q ≤ 0.05 against the matched null,
    # and with SAE seed 1 "blue", whose latents fire less on stamped images, reaches
    # ΔWGA 0.02–0.04 and is flagged beside it.
    first = [o for o in outcomes if o[1] == "stamp" and o[2] >= 0.02 and o[3] > 0]
    assert len(first) >= 19, outcomes
