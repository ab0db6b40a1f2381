"""Issue 13's marker world, attribute-free: `discover` names the pasted frame first and flags
only it in at least 19 of 20 seeds (tests/discover/marker_world.py)."""

from __future__ import annotations

import pytest

from audit.concepts import load_bank
from audit.discover import DiscoverSettings, run_discover
from audit.fairness.classifiers import fit_probe
from audit.fairness.config import AuditSettings
from audit.sae import load_sae
from audit.store import open_store, write_store
from tests.discover.marker_world import MARKER, build_marker_pool, draw_marker_world

SEEDS = range(20)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return build_marker_pool(tmp_path_factory.mktemp("marker"))


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known gap (docs/discover.md, 'Marker world'): with the demo SAE the probe's reliance "
    "on the frame is weak (ΔWGA ≈ 0.01–0.06; 'frame' ranked first in 13/20 seeds, flagged in "
    "1/20), and a probe pushed onto the marker (C = 0.001) is caught through 'stamp' and "
    "'small', whose decoder directions carry the frame cue, not through 'frame'",
)
def test_discover_names_the_marker_first_and_flags_only_it(pool, tmp_path):
    sae, bank = load_sae(pool.sae), load_bank(pool.bank)
    settings = DiscoverSettings(AuditSettings(target="is_circle", spurious="", split="test"))
    outcomes = []
    for seed in SEEDS:
        x, labels = draw_marker_world(pool, seed)
        train = (labels["split"] == "train").to_numpy()
        head = fit_probe(x[train], labels["is_circle"].to_numpy()[train], seed=seed)
        write_store(tmp_path / str(seed), x, labels, model="tiny", modality="image")
        result, _ = run_discover(open_store(tmp_path / str(seed)), labels, sae, bank, head,
                                 settings)  # fmt: skip
        flagged = [c.name for c in result.concepts if c.flagged]
        outcomes.append((result.concepts[0].name, flagged))
    good = sum(top == MARKER and flagged == [MARKER] for top, flagged in outcomes)
    assert good >= 19, outcomes
