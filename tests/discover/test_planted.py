"""`discover` on planted worlds (tests/fairness/planted.py): the head leans on "blond hair",
which no column tells discover about; a decoy ("necktie") goes with the target but is unused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from audit.discover import DiscoverSettings, run_discover
from audit.fairness.config import AuditSettings
from audit.store import open_store, write_store
from tests.fairness.planted import ROLE_NAMES, planted_bias_world

SEEDS = range(20)


def discover_world(tmp_path, ablation: str | None = None, **kwargs):
    world = planted_bias_world(n_samples=3000, **kwargs)
    root = tmp_path / f"s{kwargs.get('seed', 0)}{kwargs.get('bias', True)}"
    write_store(root, world.embeddings, world.labels, model="planted", modality="image")
    base = AuditSettings(target="Male", spurious="")
    settings = DiscoverSettings(replace(base, ablation=ablation) if ablation else base)
    result, _ = run_discover(open_store(root), world.labels, world.sae, world.bank, world.head,
                             settings)  # fmt: skip
    return world, result


def test_the_planted_shortcut_is_ranked_first_and_flagged_the_decoy_never(tmp_path):
    top = flagged = 0
    for seed in SEEDS:
        _, result = discover_world(tmp_path, seed=seed)
        first = result.concepts[0]
        top += first.name == ROLE_NAMES["spurious"]
        flagged += first.flagged and first.name == ROLE_NAMES["spurious"]
        names = {c.name for c in result.concepts if c.flagged}
        target = next(c for c in result.concepts if c.name == ROLE_NAMES["target"])
        assert target.target_concept and not target.flagged, seed
        assert ROLE_NAMES["decoy"] not in names and ROLE_NAMES["target"] not in names, seed
    assert top >= 19 and flagged >= 19, (top, flagged)


def test_a_null_head_flags_nothing(tmp_path):
    """The head reads the target only. (A head that also reads an independent concept, like the
    planted "smiling", makes that concept's groups unequal — its inactive positives sit lower —
    and the default mean edit, which repairs them, rightly flags it.)"""
    flagged = [
        [c.name for c in discover_world(tmp_path, seed=s, bias=False, background_scale=0.0,
                                       nuisance_weight=0.0)[1]
         .concepts if c.flagged]
        for s in SEEDS
    ]  # fmt: skip
    assert sum(bool(f) for f in flagged) <= 1, flagged


def test_with_an_unbiased_head_every_flag_is_a_concept_the_head_uses(tmp_path):
    for seed in range(5):
        world, result = discover_world(tmp_path, seed=seed, bias=False)
        for c in result.concepts:
            if c.flagged:
                assert max(abs(world.weights[j]) for j in c.latents) > 0.05, (seed, c.name)


def test_the_groups_and_delta_wga_match_a_direct_count(tmp_path):
    """Golden check of the JSON fields against counts made here from the planted codes."""
    world, result = discover_world(tmp_path, seed=3, ablation="zero")
    c = next(c for c in result.concepts if c.name == ROLE_NAMES["spurious"])
    # The SAE's decoder is the planted atoms, so the concept's activation is its planted code.
    z = world.codes[:, world.roles["spurious"]]
    active = z > c.threshold
    y = world.labels["Male"].to_numpy()
    margin = world.embeddings.astype(np.float64) @ world.head.weight.double().numpy().ravel()
    margin += float(world.head.bias)
    ok = (margin > 0) == (y == 1)
    accs = {}
    for g in c.groups:
        rows = (y == int(g.target)) & (active == g.active)
        assert g.n == int(rows.sum())
        accs[g.name] = ok[rows].mean()
        assert g.accuracy == pytest.approx(accs[g.name])
    assert c.worst_group_accuracy == pytest.approx(min(accs.values()))
    # Removing the concept takes its planted weight times its code off the margin.
    ok_after = (margin - world.weights[world.roles["spurious"]] * z > 0) == (y == 1)
    wga_after = min(ok_after[(y == int(g.target)) & (active == g.active)].mean() for g in c.groups)
    assert c.wga_after == pytest.approx(wga_after, abs=2e-3)
    assert c.delta_wga == pytest.approx(wga_after - min(accs.values()), abs=2e-3)
    assert c.flagged and c.delta_wga > 0.1 and c.ci[0] > 0 and c.q <= 0.05


def test_a_torchscript_classifier_gives_the_linear_heads_numbers(tmp_path):
    """The rerun kind: screened to first order, then exact by decode-and-rerun."""
    import torch

    from audit.fairness.classifiers import ScriptedClassifier
    from tests.fairness.test_planted import _Head

    world, linear = discover_world(tmp_path, seed=0)
    scripted = ScriptedClassifier(
        torch.jit.script(_Head(world.head.weight, world.head.bias)), "raw", "m.pt", "sha256:0"
    )
    settings = DiscoverSettings(AuditSettings(target="Male", spurious=""))
    store = open_store(tmp_path / "s0True")
    result, _ = run_discover(store, world.labels, world.sae, world.bank, scripted, settings)
    assert result.data.classifier_kind == "rerun"
    top, ref = result.concepts[0], linear.concepts[0]
    assert top.name == ref.name == ROLE_NAMES["spurious"] and top.flagged and top.exact
    assert top.delta_wga == pytest.approx(ref.delta_wga, abs=1e-5)
    assert top.ci == pytest.approx(ref.ci, abs=1e-5)


def test_checks_that_need_the_attribute_are_skipped_and_say_why(tmp_path):
    """discover has no labelled attribute: the gap, equalized odds, parity and the attribute's
    own direction are skipped with that reason."""
    from audit.discover.judge import ATTRIBUTE_CHECKS, NEEDS_ATTRIBUTE

    _, result = discover_world(tmp_path, seed=0)
    by_name = {c.name: c for c in result.checks}
    for name in ATTRIBUTE_CHECKS:
        assert by_name[name].status == "skipped" and by_name[name].reason == NEEDS_ATTRIBUTE
    assert "attribute_direction_delta_wga" in ATTRIBUTE_CHECKS
