"""Auditing the user's own model end to end, on worlds where the truth is known.

The biased CNN decides "circle" by colour (red leaks the label in its train split); the
balanced CNN does not. Auditing the TorchScript model on the images (``--classifier-input
image``) must rank "red" first by ΔWGA and flag it, and its own sliced errors must name red
first; the balanced CNN flags nothing. The same CNN's decisions written as a predictions file
give the same groups and the same ranking. A surrogate that cannot copy the model (decisions
the embeddings do not carry) stops attribution with exit code 3 and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.models import image_paths, load_image_model, score_images

pytestmark = pytest.mark.slow

# The ablation is fixed: the biased CNN errs where red is *absent* (non-red circles), which only
# an ablation that moves a concept toward its mean (not to zero) can repair.
COMMON = ("--target", "is_circle", "--spurious", "is_red", "--ablation", "mean", "--quiet",
          "--workers", "0")  # fmt: skip


def _audit(cli, world, tmp_path: Path, name: str, *classifier: str):
    out = tmp_path / name
    result = cli(
        "audit", "--embeddings", world.store, "--sae", world.sae, "--bank", world.bank,
        *classifier, *COMMON, "--json", out.with_suffix(".json"), "--html",
        out.with_suffix(".html"), "--junit", out.with_suffix(".xml"), "--markdown",
        out.with_suffix(".md"),
    )  # fmt: skip
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    return result, data, out


@pytest.fixture(scope="module")
def biased(cli_module, cnn_audit_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("biased")
    args = ("--classifier", cnn_audit_world.biased, "--classifier-input", "image")
    return _audit(cli_module, cnn_audit_world, tmp, "biased", *args)


@pytest.fixture(scope="module")
def cli_module():
    """The CLI in-process, for module-scoped fixtures (output is not captured)."""
    from audit.cli import run
    from tests.conftest import CliResult

    def invoke(*args: object) -> CliResult:
        return CliResult(run([str(a) for a in args]), "", "")

    return invoke


def _first_named(concepts: list[dict]) -> dict:
    return next(c for c in concepts if c["name"])


def test_image_model_audit_names_and_flags_the_leaked_concept(biased):
    result, data, _ = biased
    assert result.exit_code == 0  # no gate: nothing judged
    assert data["classifier"]["kind"] == "image" and data["classifier"]["scores"] == "two-class"
    surrogate = data["surrogate"]
    assert surrogate["method"] == "train split" and surrogate["agreement"] >= 0.9
    assert surrogate["worst_group_agreement"] >= 0.8 and surrogate["passed"]
    top = _first_named(data["concepts"])
    assert top["name"] == "red" and top["flagged"], data["concepts"][:3]
    assert data["concepts"][0]["delta_wga"] == top["delta_wga"]  # nothing unnamed above it
    errors = data["concept_errors"]["concepts"]
    assert errors[0]["name"] == "red" and errors[0]["flagged"]
    assert errors[0]["shift_ci"][0] > 0.3  # red moves decisions toward "circle" in both classes
    # The group metrics are the model's own: wrong on every non-red circle.
    groups = {g["name"]: g for g in data["groups"]}
    assert groups["is_circle=1, is_red=0"]["accuracy"] < 0.1
    assert groups["is_circle=1, is_red=1"]["accuracy"] > 0.9


def test_every_report_shows_the_model_its_surrogate_and_its_errors(biased):
    *_, out = biased
    html = out.with_suffix(".html").read_text(encoding="utf-8")
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    for text in (html, markdown):
        assert "sliced errors" in text and "Surrogate" in text
        assert "association, not cause" in text.lower()
    assert "Your model" in html and "image model" in markdown


def test_balanced_cnn_flags_nothing(cli, cnn_audit_world, tmp_path):
    args = ("--classifier", cnn_audit_world.balanced, "--classifier-input", "image")
    result, data, _ = _audit(cli, cnn_audit_world, tmp_path, "balanced", *args)
    assert result.exit_code == 0
    assert data["surrogate"]["agreement"] >= 0.9
    assert data["flagged_concepts"] == 0
    errors = {c["name"]: c for c in data["concept_errors"]["concepts"]}
    assert not errors["red"]["flagged"]
    assert max(abs(c["shift"]) for c in errors.values() if c["shift"] is not None) < 0.15


def _write_predictions(world, path: Path) -> None:
    decided = score_images(load_image_model(world.biased), image_paths(world.metadata, world.store))
    margins = decided.take_margins(np.arange(len(world.metadata)))
    frame = pd.DataFrame({"id": world.metadata["id"].astype(str), "score": margins})
    frame.to_csv(path, index=False)


def test_predictions_file_gives_the_same_audit(cli, cnn_audit_world, biased, tmp_path):
    pred = tmp_path / "pred.csv"
    _write_predictions(cnn_audit_world, pred)
    result, data, _ = _audit(cli, cnn_audit_world, tmp_path, "pred", "--predictions", pred)
    _, image, _ = biased
    assert result.exit_code == 0
    assert data["classifier"]["kind"] == "predictions" and data["classifier"]["scores"] == "logit"
    assert data["groups"] == image["groups"]
    assert _first_named(data["concepts"])["name"] == "red"
    assert data["concept_errors"]["concepts"][0]["name"] == "red"


def test_a_surrogate_that_cannot_copy_the_model_stops_attribution(cli, cnn_audit_world, tmp_path):
    """Decisions drawn at random: no logistic regression on the embeddings can agree with them,
    so no concept is attributed (exit 3), while the model's own metrics are still reported."""
    rng = np.random.default_rng(0)
    ids = cnn_audit_world.metadata["id"].astype(str)
    pred = tmp_path / "coin.csv"
    pd.DataFrame({"id": ids, "label": rng.integers(0, 2, len(ids))}).to_csv(pred, index=False)
    result, data, _ = _audit(cli, cnn_audit_world, tmp_path, "coin", "--predictions", pred)
    assert result.exit_code == 3 and data["verdict"] == "error"
    assert not data["concepts_computed"] and data["concepts"] == []
    assert not data["surrogate"]["passed"] and data["surrogate"]["agreement"] < 0.9
    check = next(c for c in data["checks"] if c["name"] == "surrogate_agreement")
    assert check["status"] == "fail"
    assert "surrogate" in data["error"]
    assert data["concept_errors"]["concepts"]  # the model's own errors need no surrogate
    assert "surrogate" in result.stdout


def test_a_surrogate_below_a_stricter_gate_fails(cli, cnn_audit_world, biased, tmp_path):
    """The thresholds are the gate's: the biased CNN's surrogate (< 100 % agreement) fails a
    gate that asks for 100 %."""
    gate = tmp_path / "gate.yaml"
    gate.write_text("integrity: {min_surrogate_agreement: 1.0}\n", encoding="utf-8")
    args = ("--classifier", cnn_audit_world.biased, "--classifier-input", "image", "--gate", gate)
    result, data, _ = _audit(cli, cnn_audit_world, tmp_path, "strict", *args)
    assert data["surrogate"]["agreement"] < 1.0
    assert result.exit_code == 3 and data["surrogate"]["min_agreement"] == 1.0


def _discover(cli, world, tmp_path: Path, name: str, *classifier: str) -> dict:
    out = tmp_path / f"{name}.json"
    cli(
        "discover", "--embeddings", world.store, "--sae", world.sae, "--bank", world.bank,
        *classifier, "--target", "is_circle", "--ablation", "mean", "--quiet", "--workers", "0",
        "--json", out, "--html", out.with_suffix(".html"), "--junit", out.with_suffix(".xml"),
    )  # fmt: skip
    return json.loads(out.read_text(encoding="utf-8"))


def test_discover_finds_the_leaked_concept_in_an_image_model_and_its_predictions(
    cli, cnn_audit_world, tmp_path
):
    """No is_red column: discover on the biased CNN (through its surrogate, and saying so)
    ranks red first and flags it; the same CNN's predictions file gives the same ranking."""
    image = _discover(cli, cnn_audit_world, tmp_path, "image", "--classifier",
                      cnn_audit_world.biased, "--classifier-input", "image")  # fmt: skip
    pred_path = tmp_path / "pred.csv"
    _write_predictions(cnn_audit_world, pred_path)
    pred = _discover(cli, cnn_audit_world, tmp_path, "pred", "--predictions", pred_path)
    for data in (image, pred):
        assert data["data"]["attribution"] == "surrogate"
        assert any("surrogate" in note for note in data["notes"])
        top = _first_named(data["concepts"])
        assert top["name"] == "red" and top["flagged"], data["concepts"][:3]
    assert [c["name"] for c in pred["concepts"]] == [c["name"] for c in image["concepts"]]
