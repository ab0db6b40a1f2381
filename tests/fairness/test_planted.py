"""The planted-bias world: the audit finds the planted shortcut, ignores the decoy and the
nuisance, stays quiet without a planted bias, and is reproducible."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.fairness import AuditSettings, dumps, run_audit, to_json
from audit.fairness.classifiers import ScriptedClassifier
from audit.store import EmbeddingStore
from tests.fairness.planted import ROLE_NAMES, planted_bias_world

SPURIOUS, DECOY, NUISANCE = ROLE_NAMES["spurious"], ROLE_NAMES["decoy"], ROLE_NAMES["nuisance"]


def memory_store(x: np.ndarray) -> EmbeddingStore:
    return EmbeddingStore(Path("planted.npy"), {"dim": x.shape[1]}, [x])


def audit(world, classifier=None, **settings) -> dict:
    """The audit JSON (as a dictionary) of a planted world."""
    result, _ = run_audit(
        memory_store(world.embeddings), world.labels, world.sae, world.bank,
        classifier if classifier is not None else world.head,
        AuditSettings("Male", "Blond_Hair", **settings),
    )  # fmt: skip
    return to_json(result)


def row(result: dict, name: str) -> dict:
    return next(c for c in result["concepts"] if c["name"] == name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_shortcut_ranks_first_and_only_it_is_flagged(seed):
    result = audit(planted_bias_world(n_samples=4000, seed=seed), seed=seed)
    top = result["concepts"][0]
    assert result["worst_group"] == "Male=1, Blond_Hair=1"
    assert top["name"] == SPURIOUS and top["rank"] == 1
    assert top["flagged"] and top["ci"][0] > 0.05 and top["q"] <= 0.05
    assert top["delta_wga"] > top["null_band"][1]  # far outside the matched null
    assert [c["name"] for c in result["concepts"] if c["flagged"]] == [SPURIOUS]
    assert not row(result, DECOY)["flagged"] and not row(result, NUISANCE)["flagged"]
    # Under zero ablation the shortcut's collateral damage is zero: it is inactive on non-blond
    # samples, so zeroing it changes nothing there.
    zero = audit(planted_bias_world(n_samples=4000, seed=seed), seed=seed, ablation="zero")
    assert zero["concepts"][0]["name"] == SPURIOUS and zero["concepts"][0]["flagged"]
    assert zero["concepts"][0]["collateral_damage"] == 0.0


def test_decoy_is_group_dependent_but_unused():
    result = audit(planted_bias_world(n_samples=4000, seed=4))
    decoy = row(result, DECOY)
    acts = decoy["mean_activation"]
    assert (
        acts["Male=1, Blond_Hair=0"] > 3 * acts["Male=0, Blond_Hair=0"]
    )  # an activation-gap ranking would pick it
    assert decoy["delta_wga"] == 0.0 and decoy["flip_rate"] == 0.0 and not decoy["flagged"]


def test_nuisance_that_raises_wga_is_not_flagged():
    """A group-independent concept whose removal shifts every margin towards the worst group's
    class raises WGA with a bootstrap CI above 0 — the matched null is what keeps it unflagged."""
    # Zero ablation: removing the nuisance from the half of the samples that carry it moves
    # their margins all one way (the mean edit moves the other half back, a weaker case).
    world = planted_bias_world(n_samples=4000, seed=5, nuisance_weight=-1.0)
    result = audit(world, seed=5, ablation="zero")
    nuisance = row(result, NUISANCE)
    assert nuisance["delta_wga"] > 0.05 and nuisance["ci"][0] > 0
    assert nuisance["flip_rate"] > 0.03 and nuisance["p"] > 0.05 and not nuisance["flagged"]
    assert result["concepts"][0]["name"] == SPURIOUS and result["concepts"][0]["flagged"]


def test_dose_response_is_monotone_for_the_planted_concept():
    # α = 0 is the zero ablation: its WGA is the audit's WGA + ΔWGA under that edit.
    result = audit(planted_bias_world(n_samples=4000, seed=1), seed=1, ablation="zero")
    curve = result["dose_response"][0]
    assert curve["name"] == SPURIOUS and curve["alphas"][0] == 0 and curve["alphas"][-1] == 3
    wga = np.array(curve["worst_group_accuracy"])
    assert np.all(np.diff(wga) <= 1e-9) and wga[0] - wga[-1] > 0.3
    assert wga[curve["alphas"].index(1.0)] == pytest.approx(
        result["worst_group_accuracy"], abs=1e-6
    )
    assert wga[0] == pytest.approx(
        result["worst_group_accuracy"] + row(result, SPURIOUS)["delta_wga"], abs=3e-6
    )


def test_false_flag_rate_without_a_planted_bias():
    """20 seeds of a hard null world: small groups and a classifier that leans on many
    group-independent concepts, so ΔWGA ≥ min_dwga happens by chance; flags must not."""
    runs_with_flags, chance_effects = 0, 0
    for seed in range(20):
        world = planted_bias_world(
            n_samples=2000, seed=100 + seed, bias=False, background_scale=1.0
        )
        result = audit(world, seed=seed, null_min_draws=400)
        runs_with_flags += any(c["flagged"] for c in result["concepts"])
        chance_effects += sum(c["tested"] and c["delta_wga"] >= 0.02 for c in result["concepts"])
    assert chance_effects >= 5  # the test has teeth: the point estimate alone would flag these
    assert runs_with_flags / 20 <= 0.05


def test_same_inputs_and_seed_give_identical_json():
    world = planted_bias_world(n_samples=3000, seed=2)
    first, second = dumps(audit(world, seed=7)), dumps(audit(world, seed=7))
    assert first == second
    assert dumps(audit(world, seed=8)) != first  # the seed does matter (bootstrap, null)


def test_unnamed_latents_are_listed_but_never_flagged():
    world = planted_bias_world(n_samples=4000, seed=0)
    bank = copy.deepcopy(world.bank)
    spurious = next(c for c in bank.concepts if c.name == SPURIOUS)
    spurious.name, spurious.validated = None, False
    world.bank = bank
    result = audit(world)
    top = result["concepts"][0]
    assert top["label"] == f"latent {world.roles['spurious']} (~{SPURIOUS})"
    assert not top["tested"] and not top["flagged"] and top["q"] is None
    assert result["flagged_concepts"] == 0


def test_a_concept_named_on_absence_is_said_as_absence_and_its_image_scores_are_reported():
    from audit.concepts import ABSENT, PRESENT, ImageScores

    world = planted_bias_world(n_samples=2000, seed=0)
    bank = copy.deepcopy(world.bank)
    by_latent = bank.by_latent()
    shortcut = by_latent[world.roles["spurious"]]
    shortcut.name = "no blond hair"
    shortcut.image = ImageScores("blond hair", ABSENT, 9.5, 0.97, 0.88)
    by_latent[world.roles["decoy"]].image = ImageScores(DECOY, PRESENT, 7.25, 0.93, 0.88)
    by_latent[len(world.roles)].image = ImageScores("glasses", PRESENT, 1.5, 0.6, 0.88)
    unnamed = next(c for c in bank.concepts if c.name is None)
    unnamed.image = ImageScores("tree", ABSENT, 3.0, 0.7, 0.88)
    world.bank = bank
    from audit.fairness.reliance import build_concept_rows

    labels = {r.latent: r.label for r in build_concept_rows(bank, world.sae.n_latents)}
    assert labels[unnamed.latent] == f"latent {unnamed.latent} (~absence of tree)"
    result = audit(world)
    top = result["concepts"][0]
    assert top["name"] == "no blond hair" and top["label"] == "absence of blond hair"
    assert top["evidence"] == {"word": "blond hair", "polarity": "absent", "selectivity": 9.5,
                               "auc": 0.97, "auc_threshold": 0.88}  # fmt: skip
    assert row(result, DECOY)["evidence"]["polarity"] == "present"
    assert row(result, DECOY)["label"] == DECOY
    assert "evidence" not in row(result, NUISANCE)  # a text-only name: no image scores
    from audit.fairness import parse_result
    from audit.report.html import render_html

    page = render_html(parse_result(result))
    assert "absence of blond hair" in page and "held-out AUC 0.970" in page
    assert "selectivity 9.5" in page


def test_latents_sharing_a_name_are_one_row():
    result = audit(planted_bias_world(n_samples=2000, seed=0))
    hats = [c for c in result["concepts"] if c["name"] == "hat"]
    assert len(hats) == 1 and len(hats[0]["latents"]) == 2
    assert result["family"]["size"] == len([c for c in result["concepts"] if c["tested"]])


@pytest.mark.parametrize("shortcut", ["presence", "absence"])
def test_default_edit_finds_presence_and_absence_shortcuts(shortcut):
    """Under the default edit the planted concept ranks first and is the only flag, whether the
    classifier leans on its presence or on its absence (5 seeds each); the same data with a
    classifier that ignores it (the null head) flags nothing."""
    assert AuditSettings.default("ablation") == "mean"
    for seed in range(5):
        world = planted_bias_world(n_samples=4000, seed=seed, shortcut=shortcut)
        result = audit(world, seed=seed)
        top = result["concepts"][0]
        assert result["family"]["ablation"] == "mean"
        assert top["name"] == SPURIOUS and top["rank"] == 1 and top["flagged"], (seed, top)
        assert [c["name"] for c in result["concepts"] if c["flagged"]] == [SPURIOUS], seed
        null = planted_bias_world(n_samples=4000, seed=seed, shortcut=shortcut, bias=False)
        assert not any(c["flagged"] for c in audit(null, seed=seed)["concepts"]), seed


def test_zero_ablation_misses_an_absence_shortcut():
    """Why zero is not the default: setting a concept to 0 changes nothing where it is already
    absent, and that is where an absence shortcut hurts."""
    world = planted_bias_world(n_samples=4000, seed=0, shortcut="absence")
    result = audit(world, ablation="zero")
    assert result["worst_group"] == "Male=1, Blond_Hair=0"
    assert row(result, SPURIOUS)["delta_wga"] <= 0 and not row(result, SPURIOUS)["flagged"]


def test_zero_ablation_also_finds_a_presence_shortcut():
    result = audit(planted_bias_world(n_samples=4000, seed=0), ablation="zero")
    assert result["concepts"][0]["name"] == SPURIOUS and result["concepts"][0]["flagged"]
    assert result["family"]["ablation"] == "zero"


class _Head(torch.nn.Module):
    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w[:, None].clone())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), x @ self.w + self.b], dim=1)  # [B, 2] scores


def test_torchscript_classifier_matches_the_linear_head():
    world = planted_bias_world(n_samples=3000, seed=0)
    linear = audit(world)
    scripted = ScriptedClassifier(
        torch.jit.script(_Head(world.head.weight, world.head.bias)), "raw", "m.pt", "sha256:0"
    )
    result = audit(world, scripted)
    assert result["data"]["classifier_kind"] == "rerun"
    top, ref = result["concepts"][0], linear["concepts"][0]
    assert top["name"] == ref["name"] == SPURIOUS and top["flagged"]
    assert top["delta_wga"] == pytest.approx(ref["delta_wga"], abs=3e-6)
    assert top["ci"] == pytest.approx(ref["ci"], abs=1e-6)


def test_probe_is_fit_on_train_and_audited_on_test():
    world = planted_bias_world(n_samples=4000, seed=0, with_split=True)
    result = audit(world, "probe")
    n_test = int((world.labels["split"] == "test").sum())
    assert result["data"]["rows_audited"] == n_test and result["data"]["split"] == "test split"
    assert result["inputs"]["classifier"]["kind"] == "probe"
    assert result["inputs"]["classifier"]["train_rows"] == 4000 - n_test
    # The probe learns the data's correlation: blond hair is evidence for "not Male".
    assert row(result, SPURIOUS)["delta_wga"] > 0


def test_integrity_failure_refuses_attribution():
    world = planted_bias_world(n_samples=2000, seed=0)
    with torch.no_grad():  # a dictionary that no longer spans the data
        world.sae.W_dec.copy_(torch.linalg.qr(torch.randn(48, 48))[0][: world.sae.n_latents])
    from audit.sae import sae_fingerprint

    world.bank.sae["fingerprint"] = sae_fingerprint(world.sae)
    result = audit(world)
    assert result["verdict"] == "error" and result["exit_code"] == 3
    assert result["concepts"] == [] and not result["concepts_computed"]
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    assert statuses["sae_cosine"] == "fail" and statuses["flagged_concepts"] == "skipped"
    assert result["groups"] and "integrity check failed" in result["error"]
