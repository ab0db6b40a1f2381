"""``--export-head``: the flagged concepts' directions projected out of a linear head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from audit.discover import DiscoverSettings, run_discover
from audit.discover.export import projected_head, projector, refit_head
from audit.fairness.classifiers import LinearHead, fit_probe, load_classifier
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


def _l2_world(rng, n: int = 3000, d: int = 8):
    """Embeddings of CLIP-like norm (a large shared component) whose first coordinate is the
    concept: on "quiet" rows it sits at a constant level, on the others it is large."""
    x = rng.normal(size=(n, d))
    x[:, 1] += 10.0
    quiet = np.arange(n) < n // 2
    x[quiet, 0] = 2.0
    x[~quiet, 0] = 6.0
    u = np.eye(d)[:1]
    y = (x[:, 2] + 0.5 * x[:, 0] + 0.3 * rng.normal(size=n) > 1.0).astype(np.int8)
    return x.astype(np.float32), quiet, u, y


def test_the_projected_l2_head_keeps_the_mean_margin_of_quiet_rows(rng):
    # The bias must be corrected with the mean of what an L2 head reads, x/‖x‖: with the raw
    # mean (norm ~10) the correction is ~10x too large and shifts every quiet row's margin.
    x, quiet, u, _ = _l2_world(rng)
    w = rng.normal(size=x.shape[1])
    w[0] = 3.0
    head = LinearHead(torch.tensor(w, dtype=torch.float32), -0.1, "l2")
    new = projected_head(head, x[quiet], projector(u))
    assert abs(float(new.weight.double() @ torch.tensor(u[0]))) < 1e-6
    rows = torch.from_numpy(x[quiet]).double()
    before, after = (
        head.to("cpu", torch.float64).margin(rows),
        new.to("cpu", torch.float64).margin(rows),
    )
    assert abs(float(after.mean() - before.mean())) < 1e-5
    # The world must tell the two corrections apart, or this test could not fail.
    raw_mean_bias = -0.1 + float((w - new.weight.double().numpy()) @ x[quiet].mean(0))
    assert abs(raw_mean_bias - new.bias) > 1.0


def test_the_refit_l2_head_scores_rows_as_the_probe_fit_on_projected_inputs(rng):
    x, _, u, y = _l2_world(rng)
    p = projector(u)
    head = LinearHead(torch.zeros(x.shape[1]), 0.0, "l2")
    new = refit_head(head, x, y, p, seed=0)
    assert new.input == "l2"
    read = x / np.linalg.norm(x, axis=1, keepdims=True)
    fitted = fit_probe(read @ p, y, "raw", seed=0)
    expected = fitted.to("cpu", torch.float64).margin(torch.from_numpy(read @ p))
    found = new.to("cpu", torch.float64).margin(torch.from_numpy(x).double())
    np.testing.assert_allclose(found.numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("refit", [False, True])
def test_an_own_models_surrogate_is_exported_without_the_leaked_concept(
    cli, cnn_audit_world, tmp_path, refit
):
    """A predictions file cannot be edited, its surrogate can: the export is a linear head on
    the embeddings that no longer reads the flagged concepts ("red" among them). This CNN
    decides almost by colour alone, so its projected surrogate is left with little to decide
    by; a re-fit learns the shape instead and repairs the worst group."""
    import json

    from audit.models import image_paths, load_image_model, score_images
    from audit.sae import load_sae

    world = cnn_audit_world
    decided = score_images(load_image_model(world.biased), image_paths(world.metadata, world.store))
    margins = decided.take_margins(np.arange(len(world.metadata)))
    pred = tmp_path / "pred.csv"
    pd.DataFrame({"id": world.metadata["id"].astype(str), "score": margins}).to_csv(
        pred, index=False
    )
    out = tmp_path / "d.json"
    r = cli(
        "discover", "--embeddings", world.store, "--sae", world.sae, "--bank", world.bank,
        "--predictions", pred, "--target", "is_circle", "--quiet", "--workers", "0",
        "--export-head", tmp_path / "head.npz", "--json", out, "--html", tmp_path / "d.html",
        "--junit", tmp_path / "d.xml", *(["--refit"] if refit else []),
    )  # fmt: skip
    assert r.exit_code in (0, 1), r.stderr
    data = json.loads(out.read_text())
    export = data["export"]
    assert "red" in export["removed"] and "surrogate" in export["method"]
    latents = sorted({j for c in data["concepts"] if c["flagged"] for j in c["latents"]})
    u = load_sae(world.sae).decoder_directions().detach().double().numpy()[latents]
    w = load_classifier(tmp_path / "head.npz", u.shape[1]).weight.double().numpy()
    assert np.abs(u @ w).max() < 1e-4 * np.linalg.norm(w) * np.linalg.norm(u, axis=1).max()
    if refit:
        test = next(s for s in export["scores"] if s["split"] == "test")
        assert test["worst_group_accuracy_after"] > test["worst_group_accuracy_before"] + 0.2
    # Whether the exported head still decides both classes, and the notes say so when not.
    x = open_store(world.store).read(0, len(world.metadata))
    decides = (x @ w + load_classifier(tmp_path / "head.npz", u.shape[1]).bias > 0).astype(int)
    constant = [s for s, rows in _splits(world.metadata).items() if len(set(decides[rows])) == 1]
    notes = [n for n in data["notes"] if n.startswith("the exported head decides")]
    if refit:
        assert not constant and not notes
    else:  # colour alone: the projected surrogate keeps (nearly) only its bias
        assert constant and len(notes) == 1
        assert all(f"{s} row" in notes[0] or f"{s} and" in notes[0] for s in constant)
        assert "--refit learns the task" in notes[0]


def _splits(metadata: pd.DataFrame) -> dict[str, np.ndarray]:
    split = metadata["split"].astype(str).to_numpy()
    return {s: np.nonzero(split == s)[0] for s in np.unique(split)}
