"""``--export-head``: the flagged concepts' directions projected out of a linear head."""

from __future__ import annotations

import numpy as np
import pytest

from audit.discover import DiscoverSettings, run_discover
from audit.discover.export import projector
from audit.fairness.classifiers import load_classifier
from audit.fairness.config import AuditSettings
from audit.store import open_store, write_store
from tests.fairness.planted import ROLE_NAMES, planted_bias_world


def test_the_projector_removes_exactly_the_directions(rng):
    u = rng.normal(size=(3, 10))
    p = projector(u)
    np.testing.assert_allclose(p @ u.T, 0, atol=1e-10)
    np.testing.assert_allclose(p @ p, p, atol=1e-10)
    v = rng.normal(size=10)
    v_perp = p @ v
    np.testing.assert_allclose(p @ v_perp, v_perp, atol=1e-10)


@pytest.mark.parametrize("refit", [False, True])
def test_the_exported_head_repairs_the_worst_group(tmp_path, refit):
    world = planted_bias_world(n_samples=4000, seed=1, with_split=True)
    write_store(tmp_path / "s", world.embeddings, world.labels, model="p", modality="image")
    settings = DiscoverSettings(
        AuditSettings(target="Male", spurious="", split="test", ablation="zero")
    )
    result, _ = run_discover(
        open_store(tmp_path / "s"), world.labels, world.sae, world.bank, world.head, settings,
        export_path=tmp_path / "head.npz", refit=refit,
    )  # fmt: skip
    export = result.export
    assert export is not None and export.removed == (ROLE_NAMES["spurious"],)
    assert {s.split for s in export.scores} == {"train", "test"}
    for s in export.scores:
        assert s.worst_group_accuracy_after > s.worst_group_accuracy_before + 0.1
        assert s.delta_wga_ci[0] > 0
        assert s.accuracy_after > s.accuracy_before - 0.03
    head = load_classifier(tmp_path / "head.npz", world.embeddings.shape[1])
    u = world.sae.decoder_directions().detach().double().numpy()[world.roles["spurious"]]
    w = head.weight.double().numpy()
    assert abs(w @ u) < 1e-4 * np.linalg.norm(w) * np.linalg.norm(u)
