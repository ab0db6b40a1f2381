"""The concepts of a bank (what the audit ablates and tests together): latents sharing a
validated name in banks that record no groups, the recorded groups otherwise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.concepts import Concept, ConceptBank, ConceptGroup, ImageScores, bank_to_dict
from audit.concepts.bankfile import load_bank, save_bank


def rows_by_name(bank: ConceptBank, n_latents: int) -> list[tuple]:
    """The audit's rows as they were built before banks recorded groups (kept as the oracle)."""
    by_latent = bank.by_latent()
    groups: dict[str, list[int]] = {}
    display: dict[str, str] = {}
    for c in sorted(bank.concepts, key=lambda c: c.latent):
        if c.name and c.validated and 0 <= c.latent < n_latents:
            key = c.name.strip().lower()
            groups.setdefault(key, []).append(c.latent)
            display.setdefault(key, c.name)
    rows = []
    grouped = {j for latents in groups.values() for j in latents}
    for key in sorted(groups):
        latents = tuple(sorted(groups[key]))
        best = max((by_latent[j] for j in latents), key=lambda c: (c.score, -c.latent))
        rows.append((latents, display[key], display[key], True, best.closest, best.score))
    for j in range(n_latents):
        if j in grouped:
            continue
        c = by_latent.get(j)
        closest = (c.closest or c.name or "") if c is not None else ""
        label = f"latent {j} (~{closest})" if closest else f"latent {j}"
        rows.append(((j,), c.name if c else None, label, False, closest, c.score if c else 0.0))
    return rows


concept_lists = st.lists(
    st.tuples(
        st.sampled_from([None, "red", "Red", " red ", "blue", "no frame", "tree"]),
        st.booleans(),
        st.floats(0, 1),
        st.sampled_from(["", "red", "tree"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=80, deadline=None)
@given(concept_lists, st.data())
def test_groups_of_a_bank_without_groups_are_the_latents_sharing_a_name(items, data):
    # Latents in any order, with gaps (unlisted latents are unnamed singletons) and some beyond
    # the SAE's size (dropped, even from a name they share with latents inside it).
    latents = data.draw(st.permutations(range(len(items) + 4)))[: len(items)]
    n = data.draw(st.integers(0, len(items) + 4))
    concepts = [
        Concept(j, name, score, closest, validated=validated)
        for j, (name, validated, score, closest) in zip(latents, items, strict=True)
    ]
    bank = ConceptBank("b", {"fingerprint": "f"}, concepts)
    got = [
        (g.latents, g.name, g.label, g.validated, g.closest, g.score)
        for g in bank.concept_groups(n)
    ]
    assert got == rows_by_name(bank, n)


def test_recorded_groups_survive_the_file_and_cover_every_latent_once(tmp_path):
    image = ImageScores("frame", "absent", 9.5, 0.97, 0.91)
    concepts = [Concept(j, None, 0.1 * j, f"w{j}") for j in range(6)]
    groups = [
        ConceptGroup((1, 4), "no frame", True, "no frame", 0.4, image, core=(4,)),
        ConceptGroup((2, 3), None, False, "red", 0.3),  # near-identical latents, unnamed
    ]
    for j in (1, 4):
        concepts[j].name, concepts[j].validated = "no frame", True
    bank = ConceptBank("b", {"fingerprint": "f"}, concepts, groups=groups)
    loaded = load_bank(save_bank(bank, tmp_path / "b.yaml"))
    data = bank_to_dict(loaded)
    assert data["version"] == 2
    assert data["concepts"][0]["latents"] == [1, 4] and data["concepts"][0]["image"]["auc"] == 0.97
    partition = loaded.concept_groups(7)
    assert [g.latents for g in partition] == [(1, 4), (0,), (2, 3), (5,), (6,)]
    assert [g.label for g in partition[:3]] == ["no frame", "latent 0 (~w0)", "latents 2+3 (~red)"]
    assert loaded.resolve("no frame") == [1, 4] and loaded.concepts[4].validated
    assert loaded.groups == groups


def test_old_banks_load_without_image_evidence(tmp_path):
    old = (
        "format: msae-audit/concept-bank\nversion: 1\nname: old\nsae: {fingerprint: f}\n"
        "threshold: 0.2\nconcepts:\n"
        "  - {latent: 0, name: red, score: 0.5, closest: red, validated: true}\n"
        "  - {latent: 1, name: red, score: 0.4, closest: red, validated: true}\n"
        "  - {latent: 2, name: null, score: 0.1, closest: tree, validated: false}\n"
    )
    (tmp_path / "old.yaml").write_text(old, encoding="utf-8")
    bank = load_bank(tmp_path / "old.yaml")
    assert bank.groups is None and all(c.image is None for c in bank.concepts)
    groups = bank.concept_groups()
    assert [(g.latents, g.label) for g in groups] == [((0, 1), "red"), ((2,), "latent 2 (~tree)")]


def _audit_with_groups(tmp_path, cli, groups):  # type: ignore[no-untyped-def]
    """The planted-bias world audited with a bank whose concepts are ``groups``."""
    import json

    from tests.fairness.planted import planted_bias_world, save_planted_world

    world = planted_bias_world(n_samples=3000, seed=0)
    bank = world.bank
    for c in bank.concepts:
        c.name, c.validated = None, False
    for g in groups:
        for j in g.latents:
            bank.concepts[j].name, bank.concepts[j].validated = g.name, g.validated
    bank.groups = groups
    paths = save_planted_world(world, tmp_path)
    out = tmp_path / "a.json"
    result = cli(
        "audit", "--embeddings", paths["store"], "--labels", paths["labels"], "--target", "Male",
        "--spurious", "Blond_Hair", "--sae", paths["sae"], "--bank", paths["bank"],
        "--classifier", paths["head"], "--json", out, "-q",
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    return world, json.loads(out.read_text())


def test_the_audit_ablates_reports_and_flags_concepts(tmp_path, cli):
    """A validated concept spanning two latents is one row, ablated whole and flagged."""
    from tests.fairness.planted import ROLE_NAMES

    spurious = 1  # the planted shortcut's latent; 4 is a background latent
    image = ImageScores("blond hair", "present", 8.0, 0.97, 0.9)
    groups = [ConceptGroup((spurious, 4), ROLE_NAMES["spurious"], True, "blond", 0.5, image)]
    _, result = _audit_with_groups(tmp_path, cli, groups)
    top = result["concepts"][0]
    assert top["latents"] == [spurious, 4] and top["name"] == ROLE_NAMES["spurious"]
    assert top["tested"] and top["flagged"]
    assert result["family"]["size"] == 1


def test_unnamed_concepts_with_a_large_effect_are_listed_but_never_flagged(tmp_path, cli):
    groups = [ConceptGroup((1, 4), None, False, "blond", 0.3)]  # near-identical, no name
    _, result = _audit_with_groups(tmp_path, cli, groups)
    top = result["concepts"][0]
    assert top["latents"] == [1, 4] and top["label"] == "latents 1+4 (~blond)"
    assert not top["tested"] and not top["flagged"] and top["q"] is None
    assert result["flagged_concepts"] == 0


def test_a_bank_named_from_text_alone_carries_a_caveat_and_an_image_named_one_none():
    concepts = [Concept(0, "red", 0.5, "red", True)]
    image = {"validation": {"method": "image", "rule": "…"}}
    for extra, method in (({}, "text"), ({"validation": {"method": "text"}}, "text"),
                          (image, "image"), ({"validation": "image"}, "text")):  # fmt: skip
        bank = ConceptBank("b", {"fingerprint": "f"}, concepts, extra=extra, word_checks={})
        assert bank.validation_method == method
        notes = bank.notes()
        assert (notes == ()) == (method == "image")
        for note in notes:
            assert "--probe-images" in note and "'b'" in note
    # An image-named bank read without a word file cannot have its names checked again.
    older = ConceptBank("b", {"fingerprint": "f"}, concepts, extra=image)
    assert [n for n in older.notes() if "keeps no word file" in n and "--probe-images" in n]
