"""`discover` on the user's own model (a predictions file) in a planted world: the group metrics
are the model's own decisions, the edit (ΔWGA) runs on its surrogate, and the report keeps the
two apart.

The "model" is the planted head with errors added at random in one concept group: no linear
surrogate on the embeddings can copy random flips, so there the model is measurably worse than
its surrogate, and a report that shows the surrogate's accuracy as the model's is caught.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from audit.discover import DiscoverResult, DiscoverSettings, run_discover
from audit.fairness.classifiers import load_classifier
from audit.fairness.config import AuditSettings
from audit.store import open_store, write_store
from tests.fairness.planted import ROLE_NAMES, PlantedWorld, planted_bias_world

SPURIOUS = ROLE_NAMES["spurious"]
FLIP_SHARE = 0.12  # of the right decisions in the planted group, made wrong (agreement stays
# above the integrity thresholds: 0.9 overall, 0.8 per class)


@dataclass(frozen=True)
class OwnWorld:
    world: PlantedWorld
    decisions: np.ndarray  # the model's own 0/1 decisions, every row
    result: DiscoverResult


def _decisions(world: PlantedWorld, seed: int) -> np.ndarray:
    """The planted head's decisions, with a share of its right decisions on the positives
    without the spurious concept made wrong (a large group, so the gap is well measured)."""
    x = world.embeddings.astype(np.float64)
    margin = x @ world.head.weight.double().numpy().ravel() + float(world.head.bias)
    decisions = (margin > 0).astype(np.int8)
    y = world.labels["Male"].to_numpy()
    z = world.codes[:, world.roles["spurious"]]
    right = np.nonzero((y == 1) & (z < 0.5) & (decisions == 1))[0]
    rng = np.random.default_rng(seed)
    flipped = rng.choice(right, int(FLIP_SHARE * right.size), replace=False)
    decisions[flipped] = 0
    return decisions


@pytest.fixture(scope="module")
def own_world(tmp_path_factory) -> OwnWorld:
    tmp = tmp_path_factory.mktemp("own")
    world = planted_bias_world(n_samples=3000, seed=1)
    write_store(tmp / "store", world.embeddings, world.labels, model="planted", modality="image")
    decisions = _decisions(world, seed=1)
    pred = tmp / "pred.csv"
    pd.DataFrame({"id": world.labels["id"], "label": decisions}).to_csv(pred, index=False)
    store = open_store(tmp / "store")
    settings = DiscoverSettings(AuditSettings(target="Male", spurious=""))
    classifier = load_classifier(pred, store.dim)
    result, _ = run_discover(store, world.labels, world.sae, world.bank, classifier, settings)
    return OwnWorld(world, decisions, result)


def _concept(result: DiscoverResult, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in result.concepts if c.name == name)


def test_group_accuracies_are_the_models_own_decisions(own_world):
    w = own_world
    assert w.result.data.attribution == "surrogate"
    c = _concept(w.result, SPURIOUS)
    y = w.world.labels["Male"].to_numpy()
    z = w.world.codes[:, w.world.roles["spurious"]]
    active = z > c.threshold  # the SAE's decoder is the planted atoms: its code is z
    ok = (w.decisions == 1) == (y == 1)
    for g in c.groups:
        rows = (y == int(g.target)) & (active == g.active)
        assert g.n == int(rows.sum()), g.name
        assert g.correct == int(ok[rows].sum()), g.name
    assert c.worst_group_accuracy == pytest.approx(min(g.accuracy for g in c.groups))


def test_the_surrogate_cannot_copy_random_errors_and_is_reported_apart(own_world):
    """Where the model errs at random, its own accuracy is clearly below its surrogate's; the
    concept's ΔWGA is measured from the surrogate's WGA, which is reported beside the model's."""
    c = _concept(own_world.result, SPURIOUS)
    hurt = next(g for g in c.groups if g.target == "1" and not g.active)
    assert hurt.surrogate_accuracy is not None
    assert hurt.accuracy < hurt.surrogate_accuracy - 0.03, hurt
    surrogate_wga = min(g.surrogate_accuracy for g in c.groups)
    assert c.surrogate_worst_group_accuracy == pytest.approx(surrogate_wga)
    assert c.delta_wga == pytest.approx(c.wga_after - surrogate_wga, abs=1e-9)


def test_the_run_wide_worst_group_is_the_models_own(own_world):
    """The gate's worst_group_accuracy judges the model, not its surrogate: counted here from
    the model's decisions over every tested concept's groups (the planted codes are exact)."""
    w = own_world
    y = w.world.labels["Male"].to_numpy()
    ok = (w.decisions == 1) == (y == 1)
    worst = 1.0
    for c in w.result.concepts:
        if not c.tested or c.target_concept:
            continue
        active = w.world.codes[:, list(c.latents)].sum(1) > c.threshold
        for target in (0, 1):
            for side in (False, True):
                rows = (y == target) & (active == side)
                worst = min(worst, ok[rows].mean()) if rows.any() else worst
    assert w.result.worst_group_accuracy == pytest.approx(worst, abs=1e-6)


def test_example_rows_are_right_or_wrong_by_the_models_decisions(own_world):
    w = own_world
    ok = (w.decisions == 1) == (w.world.labels["Male"].to_numpy() == 1)
    items = [it for ex in w.result.examples for group in ex.groups.values() for it in group]
    assert items and any(not it.correct for it in items)
    assert all(it.correct == ok[it.row] for it in items)


def test_the_json_has_the_classifier_and_its_surrogate(own_world):
    """SPEC §9: the surrogate's agreement, overall and per group, is in every report — here per
    target class (``surrogate``) and per concept group (``groups[].surrogate_agreement``)."""
    from audit.discover import dumps
    from tests.schemas import assert_valid

    r = own_world.result
    assert r.classifier is not None and r.classifier.kind == "predictions"
    assert "predictions file" in r.classifier.decisions
    assert r.surrogate is not None and r.surrogate.passed
    document = json.loads(dumps(r))
    assert document["surrogate"]["agreement"] == pytest.approx(r.surrogate.agreement, abs=1e-6)
    assert_valid(document, "discover")


def test_each_concept_groups_agreement_adds_up_to_the_class_agreement(own_world):
    """Each concept splits every class in two: the rows that agree in its two groups of a class
    are the rows that agree in the class. And the group with the random errors is where the
    surrogate agrees least."""
    r = own_world.result
    sizes, per_class = r.surrogate.group_sizes, r.surrogate.agreement_per_group
    for c in r.concepts:
        for target in ("0", "1"):
            groups = [g for g in c.groups if g.target == target]
            agreeing = sum(g.surrogate_agreement * g.n for g in groups)
            key = f"Male={target}"  # the class, as discover's class groups name it
            assert agreeing == pytest.approx(per_class[key] * sizes[key], abs=0.5), c.name
    assert set(per_class) == set(sizes) == {"Male=0", "Male=1"}
    assert r.surrogate.worst_group in per_class
    check = next(c for c in r.checks if c.name == "surrogate_agreement")
    assert "rows=all" not in check.reason and r.surrogate.worst_group in check.reason
    groups = _concept(r, SPURIOUS).groups
    hurt = next(g for g in groups if g.target == "1" and not g.active)
    assert hurt.surrogate_agreement == min(g.surrogate_agreement for g in groups)
    assert hurt.surrogate_agreement < 0.95


def test_group_names_stay_whole_in_an_80_column_terminal(own_world):
    """CI logs are 80 columns wide: the group column was squeezed to "Mal…" there."""
    import io

    from rich.console import Console

    from audit.report.discover import concept_groups_table

    for concept in own_world.result.concepts[:3]:
        out = io.StringIO()
        Console(file=out, width=80, color_system=None).print(concept_groups_table(concept))
        for group in concept.groups:
            for word in group.name.split():
                assert word in out.getvalue(), (word, out.getvalue())
