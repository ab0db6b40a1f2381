"""Groups from a concept: ``--spurious concept:NAME`` (Otsu's threshold) and ``concept:NAME>T``
give the groups the concept's activity defines, and the audit downstream is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from audit.errors import InputError
from audit.fairness import AuditSettings, run_audit, to_json
from audit.fairness.attributes import ColumnAttribute, ConceptAttribute, parse_attribute
from tests.fairness.planted import ROLE_NAMES, planted_bias_world
from tests.fairness.test_planted import memory_store

SPURIOUS = ROLE_NAMES["spurious"]


def audit(world, spurious: str = "Blond_Hair") -> dict:
    result, _ = run_audit(
        memory_store(world.embeddings), world.labels, world.sae, world.bank, world.head,
        AuditSettings("Male", spurious),
    )  # fmt: skip
    return to_json(result)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("Blond_Hair", ColumnAttribute("Blond_Hair")),
        ("concept:blond hair", ConceptAttribute("blond hair")),
        ("concept: red >0.25", ConceptAttribute("red", 0.25)),
        ("concept:a>b>1e-3", ConceptAttribute("a>b", 0.001)),
    ],
)
def test_parse(spec, expected):
    assert parse_attribute(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("concept:", "name a concept"),
        ("concept:red>x", "threshold 'x' is not a number"),
        ("concept:red>nan", "must be finite"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_attribute(spec)


def test_concept_groups_equal_the_labelled_groups_when_the_concept_is_exact():
    """In the planted world the blond-hair latent is exactly the Blond_Hair label times a
    positive activation, so Otsu's cut reproduces the labelled groups and every number."""
    world = planted_bias_world(n_samples=3000, seed=3)
    by_column = audit(world)
    by_concept = audit(world, f"concept:{SPURIOUS}")
    assert by_concept["data"]["spurious"].startswith(f"concept:{SPURIOUS}>")
    assert by_concept["settings"]["spurious"] == f"concept:{SPURIOUS}"
    rename = {"Blond_Hair=1": f"{SPURIOUS}=active", "Blond_Hair=0": f"{SPURIOUS}=inactive"}

    def renamed(name: str) -> str:
        for old, new in rename.items():
            name = name.replace(old, new)
        return name

    assert [renamed(g["name"]) for g in by_column["groups"]] == [
        g["name"] for g in by_concept["groups"]
    ]
    assert [g["accuracy"] for g in by_column["groups"]] == [
        g["accuracy"] for g in by_concept["groups"]
    ]
    assert by_concept["concepts"][0]["name"] == SPURIOUS and by_concept["concepts"][0]["flagged"]
    for a, b in zip(by_column["concepts"], by_concept["concepts"], strict=True):
        assert (a["name"], a["delta_wga"], a["ci"], a["p"]) == (
            b["name"], b["delta_wga"], b["ci"], b["p"],
        )  # fmt: skip


def test_a_given_threshold_is_used_and_recorded():
    world = planted_bias_world(n_samples=2000, seed=0)
    spurious = world.codes[:, world.roles["spurious"]]
    t = float(np.quantile(spurious[spurious > 0], 0.5))  # the stronger half of the blond rows
    result = audit(world, f"concept:{SPURIOUS}>{t}")
    assert result["data"]["spurious"] == f"concept:{SPURIOUS}>{t!r}"
    active = next(g for g in result["groups"] if g["name"] == f"Male=1, {SPURIOUS}=active")
    expected = int(((world.labels["Male"] == 1).to_numpy() & (spurious > t)).sum())
    assert abs(active["n"] - expected) <= 1  # float32 sums at the cut


def test_groups_use_the_banks_spelling_of_a_concept_named_in_another_case():
    world = planted_bias_world(n_samples=1000, seed=0)
    result = audit(world, f"concept:{SPURIOUS.upper()}")
    assert result["data"]["spurious"].startswith(f"concept:{SPURIOUS}>")
    assert {g["name"] for g in result["groups"]} == {
        f"Male={m}, {SPURIOUS}={a}" for m in (0, 1) for a in ("active", "inactive")
    }


def test_unknown_concepts_and_useless_thresholds_are_input_errors():
    world = planted_bias_world(n_samples=1000, seed=0)
    with pytest.raises(
        InputError, match=r"concept .blond hiar. is not in bank.*close names: blond hair"
    ):
        audit(world, "concept:blond hiar")
    with pytest.raises(InputError, match="active on no row"):
        audit(world, f"concept:{SPURIOUS}>100")


def test_the_default_cut_is_otsus_over_the_audited_rows():
    """The groups' "active" is the one definition the rest of the report uses: Otsu's cut of the
    summed activation over the audited rows (here the test split), not over every row."""
    from audit.concepts.activity import concept_activity, find_concept, otsu_threshold
    from audit.fairness.attributes import concept_spec

    world = planted_bias_world(n_samples=3000, seed=2, with_split=True)
    test = (world.labels["split"] == "test").to_numpy()
    # Make the train rows' activations differ, so the two cuts differ.
    x = world.embeddings.copy()
    group = find_concept(world.bank, SPURIOUS, world.sae.n_latents)
    x[~test] *= 1.7
    result, _ = run_audit(
        memory_store(x), world.labels, world.sae, world.bank, world.head,
        AuditSettings("Male", f"concept:{SPURIOUS}", split="test"),
    )  # fmt: skip
    data = to_json(result)
    activation = concept_activity(world.sae, x, [group.latents]).activation[:, 0]
    audited = otsu_threshold(activation[test])
    assert data["data"]["spurious"] == concept_spec(SPURIOUS, audited)
    assert otsu_threshold(activation) != pytest.approx(audited, rel=1e-3)
