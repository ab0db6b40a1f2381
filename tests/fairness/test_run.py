"""The orchestrator on awkward inputs: empty cells, many attribute values, no named concepts,
extra JSON fields, the L2 head path."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from audit.errors import InputError
from audit.fairness import dumps
from audit.fairness.classifiers import LinearHead
from tests.fairness.planted import ROLE_NAMES, planted_bias_world
from tests.fairness.test_planted import audit


def test_empty_cell_is_ignored():
    world = planted_bias_world(n_samples=2000, seed=0)
    keep = ~((world.labels["Male"] == 1) & (world.labels["Blond_Hair"] == 1)).to_numpy()
    world.embeddings, world.labels = (
        world.embeddings[keep],
        world.labels[keep].reset_index(drop=True),
    )
    result = audit(world)
    assert len(result["groups"]) == 3 and "Male=1, Blond_Hair=1" not in result["worst_group"]
    assert all(np.isfinite(c["delta_wga"]) for c in result["concepts"])
    # A gate cannot pass on a group that is not there: every all-cell check is skipped.
    assert result["empty_groups"] == ["Male=1, Blond_Hair=1"]
    from audit.fairness.gate import GROUP_CHECKS

    for check in result["checks"]:
        if check["name"] in GROUP_CHECKS:
            assert check["status"] == "skipped" and "has no rows" in check["reason"], check


def test_three_valued_attribute():
    world = planted_bias_world(n_samples=2000, seed=0)
    rng = np.random.default_rng(0)
    hair = np.where(
        world.labels["Blond_Hair"] == 1, "blond", rng.choice(["dark", "red"], len(world.labels))
    )
    world.labels["Blond_Hair"] = hair
    result = audit(world)
    assert len(result["groups"]) == 6 and len(result["attribute_groups"]) == 3
    top = result["concepts"][0]
    assert top["name"] == ROLE_NAMES["spurious"] and top["collateral_damage"] is None


def test_no_validated_names_flags_nothing():
    world = planted_bias_world(n_samples=2000, seed=0)
    bank = copy.deepcopy(world.bank)
    for c in bank.concepts:
        c.validated = False
    world.bank = bank
    result = audit(world)
    assert result["family"]["size"] == 0 and result["flagged_concepts"] == 0
    assert all(not c["tested"] for c in result["concepts"]) and result["dose_response"] == []


def test_extra_fields_are_recorded_and_protected():
    from pathlib import Path

    from audit.fairness import AuditSettings, run_audit
    from audit.store import EmbeddingStore

    world = planted_bias_world(n_samples=1500, seed=0)
    store = EmbeddingStore(Path("m.npy"), {"dim": world.embeddings.shape[1]}, [world.embeddings])
    args = (
        store,
        world.labels,
        world.sae,
        world.bank,
        world.head,
        AuditSettings("Male", "Blond_Hair"),
    )
    result, _ = run_audit(*args, extra={"demo": {"planted_concept": "blond hair"}})
    assert result.extra["demo"] == {"planted_concept": "blond hair"} and '"demo"' in dumps(result)
    with pytest.raises(InputError, match="may not replace audit fields: verdict"):
        run_audit(*args, extra={"verdict": "pass"})


def test_l2_head_path_is_exact_and_finds_the_shortcut():
    world = planted_bias_world(n_samples=3000, seed=0)
    # A head on L2-normalised inputs: the raw head's direction, its bias centring the margins.
    x = world.embeddings / np.linalg.norm(world.embeddings, axis=1, keepdims=True)
    w = world.head.weight.numpy()
    bias = -float(np.median(x @ w))
    head = LinearHead(world.head.weight.clone(), bias, "l2")
    result = audit(world, head)
    assert result["data"]["classifier_kind"] == "linear_l2"
    assert result["concepts"][0]["name"] == ROLE_NAMES["spurious"]


@pytest.mark.parametrize("stem", ["../../x", "a/b", ".hidden", ""])
def test_report_names_cannot_escape_the_report_folder(tmp_path, stem):
    from audit.report import audit_files

    with pytest.raises(InputError, match="invalid report name"):
        audit_files(
            tmp_path / "none", sae=tmp_path, bank="b", classifier="probe", target="y",
            spurious="a", out_dir=tmp_path / "reports", stem=stem,
        )  # fmt: skip
    assert not (tmp_path / "reports").exists() and not (tmp_path.parent / "x.json").exists()
