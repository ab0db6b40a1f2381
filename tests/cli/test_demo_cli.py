"""``msae-audit demo``: offline, end to end, with the planted shortcut found by the bank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.concepts import load_bank
from audit.data.tinyclip import ASSET_VERSION
from audit.sae import load_sae, sae_fingerprint
from audit.store import open_store


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from audit.cli import run

    out = tmp_path_factory.mktemp("demo")
    code = run(["demo", "--out", str(out)])
    assert code == 0
    return out


@pytest.mark.slow
def test_demo_writes_every_artefact(demo_dir):
    document = json.loads((demo_dir / "demo.json").read_text())
    assert document["demo"]["planted_concept"] == "red"
    paths = document["paths"]
    for key in ("store", "sae", "bank", "head", "model", "pretrained"):
        assert Path(paths[key]).exists(), key
    store = open_store(paths["store"])
    assert store.count == 5000 and store.manifest["normalized"] is False
    meta = store.metadata
    assert {"is_circle", "is_red", "split", "shape", "colour"} <= set(meta.columns)
    train = meta["split"] == "train"
    # The planted shortcut: red goes with circles in train only.
    assert meta.loc[train & (meta.is_circle == 1), "is_red"].mean() > 0.9
    assert meta.loc[train & (meta.is_circle == 0), "is_red"].mean() < 0.1
    assert 0.4 < meta.loc[~train, "is_red"].mean() < 0.6
    head = np.load(paths["head"])
    assert head["weight"].shape == (2, store.dim) and head["bias"].shape == (2,)
    # The head acts on raw embeddings and learned the task.
    predicted = (store.read() @ head["weight"].T + head["bias"]).argmax(1)
    assert (predicted[train.to_numpy()] == meta.loc[train, "is_circle"]).mean() > 0.9
    bank = load_bank(paths["bank"])
    bank.check_sae(sae_fingerprint(load_sae(paths["sae"])))
    assert document["summary"]["bank"]["validated"] == bank.extra["summary"]["validated"] > 0
    # The world's pasted markers are there and independent of the label (only red is planted).
    framed = meta["marker"] == "frame"
    assert 0.25 < framed.mean() < 0.42
    assert abs(framed[meta.is_circle == 1].mean() - framed[meta.is_circle == 0].mean()) < 0.05
    # The tiny CLIP is the shipped one, and every step's time is recorded.
    assert document["summary"]["tiny_clip"]["weights_version"] == ASSET_VERSION
    steps = ["tiny_clip", "corpus", "world", "sae", "bank", "probe", "audit", "discover",
             "image_model", "total"]  # fmt: skip
    assert list(document["seconds"]) == steps
    assert all(document["seconds"][s] >= 0 for s in steps)


@pytest.mark.slow
def test_latent_named_red_fires_mostly_on_red_objects(demo_dir):
    """The bank names the planted concept, and its latent really is about red: on the task
    data (not what the SAE was trained on) its strongest activations are red objects."""
    document = json.loads((demo_dir / "demo.json").read_text())
    paths = document["paths"]
    bank = load_bank(paths["bank"])
    red = [c for c in bank.concepts if c.validated and c.name == "red"]
    assert red, [(c.latent, c.name) for c in bank.concepts if c.validated]
    best = max(red, key=lambda c: c.score)
    store = open_store(paths["store"])
    sae = load_sae(paths["sae"])
    with torch.no_grad():
        z = sae.encode(torch.from_numpy(np.array(store.read())))[:, best.latent].numpy()
    is_red = store.metadata["is_red"].to_numpy() == 1
    strongest = z >= np.quantile(z, 0.9)
    assert is_red[strongest].mean() > 0.9  # base rate of red: about 0.5
    assert z[is_red].mean() > 3 * z[~is_red].mean()
    # The probe took the shortcut: it is worse on the groups that break the correlation.
    probe = document["summary"]["probe"]
    # (Compared within this run: the groups that break the train correlation against those
    # that follow it; how much worse depends on how well the CLIP sees shape.)
    groups = {name: g["accuracy"] for name, g in probe["test_groups"].items()}
    breaking = min(groups["circle, not red"], groups["square, red"])
    following = min(groups["circle, red"], groups["square, not red"])
    assert breaking < following - 0.03, groups
    assert probe["worst_group_accuracy"] == breaking


@pytest.mark.slow
def test_audit_finds_the_planted_shortcut(demo_dir):
    """The audit, run by the demo on the test split, ranks the planted concept first by ΔWGA
    and flags it; the gate fails because of it; the JSON records what was planted."""
    result = json.loads((demo_dir / "audit.json").read_text())
    assert result["schema"] == "msae-audit/audit"
    assert result["demo"]["planted_concept"] == "red"
    assert result["verdict"] == "fail"
    top = result["concepts"][0]
    assert top["name"] == "red" and top["rank"] == 1 and top["flagged"]
    # Flagged means ΔWGA ≥ the demo gate's min_dwga (0.02) with q ≤ 0.05; measured +0.06.
    assert top["delta_wga"] >= 0.02 and top["ci"][0] > 0 and top["q"] <= 0.05
    flagged_check = next(c for c in result["checks"] if c["name"] == "flagged_concepts")
    assert flagged_check["status"] == "fail" and flagged_check["value"] >= 1
    html = (demo_dir / "audit.html").read_text()
    assert "red" in html and "<script src=" not in html
    assert (demo_dir / "audit.xml").read_text().startswith("<?xml")
    summary = json.loads((demo_dir / "demo.json").read_text())["summary"]["audit"]
    assert summary["planted_concept_rank"] == 1 and summary["planted_concept_flagged"]


@pytest.mark.slow
def test_discover_finds_the_planted_shortcut_without_its_column(demo_dir):
    """`discover`, run by the demo with `is_red` dropped from the labels, ranks "red" first and
    flags it; the target's own shape concepts are listed but never flagged."""
    from tests.schemas import assert_valid

    result = json.loads((demo_dir / "discover.json").read_text())
    assert_valid(result, "discover")
    top = result["concepts"][0]
    assert top["name"] == "red" and top["flagged"] and top["ci"][0] > 0
    assert not any(c["flagged"] for c in result["concepts"] if c["target_concept"])
    summary = json.loads((demo_dir / "demo.json").read_text())["summary"]["discover"]
    assert summary["top_concept"] == "red" and summary["planted_concept_flagged"]


def test_gated_audit_of_the_demo_finds_red_with_default_options(demo_dir, tmp_path):
    """The command a user runs on the demo's files with `examples/gate.yaml` and no other option
    finds the planted concept: the shortcut hurts the circles without red, where only the default
    (mean) edit sees it."""
    from audit.cli import run

    paths = json.loads((demo_dir / "demo.json").read_text())["paths"]
    out = tmp_path / "audit.json"
    gate = Path(__file__).parents[2] / "examples" / "gate.yaml"
    code = run(["audit", "--embeddings", paths["store"], "--sae", paths["sae"],
                "--bank", paths["bank"], "--classifier", paths["head"], "--target", "is_circle",
                "--spurious", "is_red", "--gate", str(gate), "--json", str(out), "--html",
                str(tmp_path / "audit.html"), "--junit", str(tmp_path / "audit.xml"), "--quiet"])  # fmt: skip
    assert code == 1  # the gate fails because of the shortcut
    result = json.loads(out.read_text())
    assert result["settings"]["ablation"] == "mean"
    top = result["concepts"][0]
    assert top["name"] == "red" and top["rank"] == 1 and top["flagged"]
    assert [c["name"] for c in result["concepts"] if c["flagged"]] == ["red"]


def test_demo_audits_an_image_model(demo_dir):
    """The last step: a CNN on the images, its decisions leaked through red, is audited through
    its surrogate; red comes first by ΔWGA and by the model's own sliced errors."""
    own = json.loads((demo_dir / "demo.json").read_text())["summary"]["image_model"]
    assert own["surrogate_agreement"] >= 0.9
    assert own["top_concept"] == "red" and own["top_concept_flagged"]
    assert own["top_sliced_error"] == "red"
    report = json.loads(Path(own["reports"]["json"]).read_text())
    assert report["classifier"]["kind"] == "image"
    assert Path(own["reports"]["html"]).exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--train-scenes", "0"], "--train-scenes must be at least 1000, got 0"),
        (["--train-scenes", "5", "--test-scenes", "3"], "--train-scenes must be at least"),
        (["--test-scenes", "3"], "--test-scenes must be at least 100, got 3"),
    ],
)
def test_too_few_scenes_are_refused_before_any_work(cli, tmp_path, args, words):
    """The demo's later steps need scenes (the probe and the CNN both classes, the audits every
    group): too few are one line up front, not a crash or a failure minutes later."""
    r = cli("demo", "--out", tmp_path / "demo", *args, "-q")
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith(f"error: {words}") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_a_test_split_missing_a_group_is_refused_before_any_work(monkeypatch):
    """The seed decides the sample: a split without, say, non-red squares is named."""
    from audit.demo_steps import DemoSettings, check_scene_counts
    from audit.errors import InputError

    monkeypatch.setattr("audit.demo_steps.MIN_TEST_SCENES", 1)
    with pytest.raises(InputError, match="gives no non-red squares"):
        check_scene_counts(DemoSettings(seed=0, n_test=8))
    check_scene_counts(DemoSettings())  # the defaults have every group


def test_a_folder_with_other_files_is_refused_before_any_work(cli, tmp_path):
    """The demo replaces store/, sae/, head.npz… in --out: a user's own SAE there (a natural
    name) is never overwritten; an earlier demo's folder is the demo's to rewrite."""
    from audit.demo import DEMO_MARKER, _claim_folder

    out = tmp_path / "work"
    (out / "sae").mkdir(parents=True)
    (out / "sae" / "sae.safetensors").write_bytes(b"the user's own SAE")
    r = cli("demo", "--out", out, "-q")
    assert r.exit_code == 2, r.stderr
    assert "is not empty and holds no earlier demo" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (out / "sae" / "sae.safetensors").read_bytes() == b"the user's own SAE"
    assert sorted(p.name for p in out.iterdir()) == ["sae"]
    for proof in (DEMO_MARKER, "demo.json"):  # this run's marker, or an earlier version's run
        earlier = tmp_path / f"earlier-{proof}"
        earlier.mkdir()
        (earlier / proof).write_text("{}")
        (earlier / "head.npz").write_bytes(b"")
        assert _claim_folder(earlier) == earlier.resolve()
        assert (earlier / DEMO_MARKER).exists()
    assert _claim_folder(tmp_path / "new") == (tmp_path / "new").resolve()
