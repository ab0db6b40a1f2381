"""`msae-audit audit`, `celeba` and `check`: exit codes, reports, determinism."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.audit_worlds import write_world
from tests.conftest import assert_one_line_error
from tests.schemas import assert_valid, assert_valid_file

PASS_GATE = """
gates:
  worst_group_accuracy: {min: 0.5}
  accuracy_gap: {max: 0.5}
concepts: {min_dwga: 0.02, max_q: 0.05, allowlist: [necktie]}
bootstrap: {samples: 200, seed: 0}
min_group_size: 50
"""
FAIL_GATE = """
gates:
  worst_group_accuracy: {min: 0.8}
  flagged_concepts: {max: 0}
bootstrap: {samples: 200, seed: 0}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return write_world(tmp_path_factory.mktemp("world"), n_samples=2000, seed=0)


def audit_args(world: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return [
        "audit", "--embeddings", world["store"], "--target", "Male", "--spurious", "Blond_Hair",
        "--sae", world["sae"], "--bank", world["bank"], "--classifier", world["head"],
        "--json", out / "a.json", "--html", out / "a.html", "--junit", out / "a.xml", *extra,
    ]  # fmt: skip


def gate_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return path


def test_pass_writes_every_report_with_the_contract_fields(cli, world, tmp_path):
    r = cli(
        *audit_args(
            world,
            tmp_path,
            "--gate",
            gate_file(tmp_path, PASS_GATE),
            "--markdown",
            tmp_path / "a.md",
        )
    )
    assert r.exit_code == 0, r.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert_valid(data, "audit")
    assert (
        data["schema"] == "msae-audit/audit" and data["version"] == 1 and data["verdict"] == "pass"
    )
    for group in data["groups"]:
        assert {"name", "n", "accuracy", "ci"} <= group.keys() and len(group["ci"]) == 2
    assert isinstance(data["worst_group_accuracy"], float)
    assert [c["rank"] for c in data["concepts"]] == list(range(1, len(data["concepts"]) + 1))
    for c in data["concepts"]:
        assert {"rank", "latent", "name", "delta_wga", "ci", "q", "flagged"} <= c.keys()
    for c in data["checks"]:
        assert {"name", "value", "threshold", "status"} <= c.keys()
    assert data["inputs"]["sae"]["fingerprint"].startswith("sha256:")
    assert data["inputs"]["embeddings"]["sha256"].startswith("sha256:") and data["seed"] == 0
    assert data["tool"]["msae_audit"] and data["tool"]["torch"]
    assert data["concepts"][0]["name"] == "blond hair"
    assert "PASS" in r.stdout and "blond hair" in r.stdout
    assert (tmp_path / "a.html").read_text().startswith("<!DOCTYPE html>")
    suite = ET.parse(tmp_path / "a.xml").getroot().find("testsuite")
    assert len(suite.findall("testcase")) == len(data["checks"])
    assert "| check |" in (tmp_path / "a.md").read_text()


def test_gate_failure_exits_1(cli, world, tmp_path):
    r = cli(*audit_args(world, tmp_path, "--gate", gate_file(tmp_path, FAIL_GATE)))
    assert r.exit_code == 1, r.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    failed = {c["name"] for c in data["checks"] if c["status"] == "fail"}
    assert failed == {"worst_group_accuracy", "flagged_concepts"} and data["verdict"] == "fail"
    cases = ET.parse(tmp_path / "a.xml").getroot().iter("testcase")
    failures = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failures == failed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gates:\n  worst_group_acuracy: {min: 0.8}\n", "unknown check 'worst_group_acuracy'"),
        ("gates: [worst_group_accuracy\n", "malformed YAML"),
        ("gates:\n  accuracy_gap: {max: high}\n", "must be a number"),
    ],
)
def test_bad_gate_file_exits_2_with_one_line(cli, world, tmp_path, text, message):
    r = cli(*audit_args(world, tmp_path, "--gate", gate_file(tmp_path, text)))
    assert_one_line_error(r, 2, message)
    assert not (tmp_path / "a.json").exists()  # refused before any work


def test_integrity_failure_exits_3_and_still_reports(cli, world, tmp_path):
    strict = gate_file(tmp_path, "integrity: {min_cosine: 0.99999}\n")
    r = cli(*audit_args(world, tmp_path, "--gate", strict))
    assert r.exit_code == 3, r.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["verdict"] == "error" and data["concepts"] == [] and "integrity" in data["error"]
    assert_valid(data, "audit")
    assert "ERROR" in r.stdout


def test_usage_errors_exit_2(cli, world, tmp_path):
    args = audit_args(world, tmp_path)
    r = cli(*[a for a in args if a not in ("--target", "Male")])
    assert r.exit_code == 2
    r = cli(*audit_args(world, tmp_path)[:-6], "--json", tmp_path / "x.json", "--target", "Nope")
    assert_one_line_error(r, 2)
    bad = list(audit_args(world, tmp_path))
    bad[bad.index("--spurious") + 1] = "missing_column"
    assert_one_line_error(cli(*bad), 2, "--spurious column 'missing_column' not found")
    bad = list(audit_args(world, tmp_path))
    bad[bad.index("--classifier") + 1] = str(tmp_path / "head.pkl")
    (tmp_path / "head.pkl").write_bytes(b"\x80\x04K\x01.")
    assert_one_line_error(cli(*bad), 2, "unknown classifier format")


def test_same_inputs_and_seed_give_byte_identical_json(cli, world, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert cli(*audit_args(world, a, "--seed", "3")).exit_code == 0
    assert cli(*audit_args(world, b, "--seed", "3")).exit_code == 0
    assert (a / "a.json").read_bytes() == (b / "a.json").read_bytes()


def test_check_rejudges_saved_results(cli, world, tmp_path):
    assert cli(*audit_args(world, tmp_path)).exit_code == 0
    results = tmp_path / "a.json"
    r = cli(
        "check", "--config", gate_file(tmp_path, FAIL_GATE), results, "--junit", tmp_path / "c.xml",
        "--json", tmp_path / "c.json",
    )  # fmt: skip
    assert r.exit_code == 1 and "FAIL" in r.stdout
    assert_valid_file(tmp_path / "c.json", "audit")
    assert json.loads((tmp_path / "c.json").read_text())["verdict"] == "fail"
    assert ET.parse(tmp_path / "c.xml").getroot().find("testsuite").get("failures") == "2"
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(
        "gates:\n  flagged_concepts: {max: 0}\nconcepts: {allowlist: [blond hair]}\n"
    )
    assert cli("check", "--config", lenient, results).exit_code == 0
    (tmp_path / "junk.json").write_text("{not json")
    assert_one_line_error(
        cli("check", "--config", lenient, tmp_path / "junk.json"), 2, "not valid JSON"
    )
    (tmp_path / "other.json").write_text('{"schema": "msae-audit/eval"}')
    assert_one_line_error(
        cli("check", "--config", lenient, tmp_path / "other.json"), 2, "not an audit result"
    )


def test_without_a_gate_the_verdict_is_ungated_and_says_nothing_was_judged(cli, world, tmp_path):
    r = cli(*audit_args(world, tmp_path, "--markdown", tmp_path / "a.md"))
    assert r.exit_code == 0, r.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["verdict"] == "ungated" and data["exit_code"] == 0
    assert_valid(data, "audit")
    said = " ".join(r.stdout.split())
    assert "UNGATED" in said and "no gate file was given: nothing was judged" in said
    assert "PASS" not in said
    for report in ("a.html", "a.md", "a.xml"):
        assert "nothing was judged" in (tmp_path / report).read_text(), report


SKIPPING_GATE = """
gates:
  worst_group_accuracy: {min: 0.5}
  accuracy_gap: {max: 0.9}
min_group_size: 100000
"""


def test_every_gated_check_skipped_is_inconclusive_in_audit_and_check(cli, world, tmp_path):
    gate = gate_file(tmp_path, SKIPPING_GATE)
    r = cli(*audit_args(world, tmp_path, "--gate", gate))
    assert r.exit_code == 1, r.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["verdict"] == "inconclusive"
    assert data["skipped_checks"] == ["worst_group_accuracy", "accuracy_gap"]
    assert "INCONCLUSIVE" in r.stdout and "every gated check was skipped" in " ".join(
        r.stdout.split()
    )
    suite = ET.parse(tmp_path / "a.xml").getroot().find("testsuite")
    skipped = {c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None}
    assert {"worst_group_accuracy", "accuracy_gap"} <= skipped
    assert "every gated check was skipped" in (tmp_path / "a.html").read_text()
    checked = cli("check", "--config", gate, tmp_path / "a.json", "--json", tmp_path / "c.json")
    assert checked.exit_code == 1 and "INCONCLUSIVE" in checked.stdout
    assert json.loads((tmp_path / "c.json").read_text())["verdict"] == "inconclusive"
    allowed = gate_file(tmp_path, SKIPPING_GATE + "allow_skipped: true\n")
    r = cli(*audit_args(world, tmp_path, "--gate", allowed))
    assert r.exit_code == 0 and json.loads((tmp_path / "a.json").read_text())["verdict"] == (
        "inconclusive"
    )
    assert cli("check", "--config", allowed, tmp_path / "a.json").exit_code == 0


def test_partly_skipped_gate_judges_the_rest_and_lists_the_skipped(cli, world, tmp_path):
    gate = gate_file(tmp_path, "gates:\n  worst_group_accuracy: {min: 0.5}\n"
                     "  accuracy: {min: 0.5}\nmin_group_size: 100000\n")  # fmt: skip
    r = cli(*audit_args(world, tmp_path, "--gate", gate))
    assert r.exit_code == 0, r.stderr
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["verdict"] == "pass" and data["skipped_checks"] == ["worst_group_accuracy"]
    said = " ".join(r.stdout.split())
    assert "not judged (skipped): worst_group_accuracy" in said
    assert "not judged (skipped): worst_group_accuracy" in (tmp_path / "a.html").read_text()


def test_check_keeps_an_integrity_failure(cli, world, tmp_path):
    strict = gate_file(tmp_path, "integrity: {min_cosine: 0.99999}\n")
    assert cli(*audit_args(world, tmp_path, "--gate", strict)).exit_code == 3
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("gates: {}\n")
    r = cli("check", "--config", lenient, tmp_path / "a.json", "--json", tmp_path / "c.json")
    assert r.exit_code == 3
    # The checks that decided the run stay as they were: not "pass" under the laxer gate's 0.9.
    data = json.loads((tmp_path / "c.json").read_text())
    cosine = next(c for c in data["checks"] if c["name"] == "sae_cosine")
    assert cosine["status"] == "fail" and cosine["threshold"] == 0.99999
    assert data["gate"]["integrity"]["min_cosine"] == 0.99999 and data["verdict"] == "error"


def test_default_report_paths_and_step_summary(cli, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    args = audit_args(world, tmp_path)[:-6]
    assert cli(*args).exit_code == 0
    for name in ("audit.json", "audit.html", "audit.xml"):
        assert (tmp_path / "reports" / name).exists()
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and "msae-audit" in text and "blond hair" in text


def test_check_appends_the_rejudged_verdict_to_the_step_summary(cli, world, tmp_path, monkeypatch):
    """README's CI recipe re-judges with a bare `check --config GATE RESULTS`; in a CI step the
    summary must show that verdict, as `audit` does, without --markdown."""
    assert cli(*audit_args(world, tmp_path)).exit_code == 0
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = cli("check", "--config", gate_file(tmp_path, FAIL_GATE), tmp_path / "a.json")
    assert r.exit_code == 1
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and "## msae-audit" in text and "FAIL" in text


def test_probe_on_a_labels_csv_with_a_split(cli, tmp_path):
    paths = write_world(tmp_path / "w", n_samples=2000, seed=1, with_split=True)
    r = cli(
        "audit", "--embeddings", paths["store"], "--labels", paths["labels"], "--target", "Male",
        "--spurious", "Blond_Hair", "--sae", paths["sae"], "--bank", paths["bank"],
        "--classifier", "probe", "--json", tmp_path / "p.json", "--html", tmp_path / "p.html",
        "--junit", tmp_path / "p.xml",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["inputs"]["classifier"]["kind"] == "probe" and data["data"]["split"] == "test split"
    assert data["inputs"]["labels"]["path"] == str(paths["labels"])


def test_celeba_with_a_store_uses_celeba_attributes_and_split(cli, tmp_path):
    from audit.data.celeba import read_celeba, write_fake_celeba
    from audit.store import write_store
    from tests.fairness.planted import planted_bias_world, save_planted_world

    root = write_fake_celeba(tmp_path / "celeba", n_images=600, seed=2, image_size=16)
    table = read_celeba(root).table
    world = planted_bias_world(n_samples=600, seed=2)
    paths = save_planted_world(world, tmp_path / "w")
    # The store from `embed celeba`: rows in any order, identified by CelebA file names.
    order = np.random.default_rng(0).permutation(600)
    store = write_store(
        tmp_path / "celeba-store", world.embeddings[order], pd.DataFrame({"id": table["id"].to_numpy()[order]}),
        model="planted-atoms", overwrite=True,
    )  # fmt: skip
    r = cli(
        "celeba", "--root", root, "--embeddings", store.path, "--sae", paths["sae"],
        "--bank", paths["bank"], "--classifier", paths["head"], "--json", tmp_path / "c.json",
        "--html", tmp_path / "c.html", "--junit", tmp_path / "c.xml",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    assert_valid(data, "audit")
    assert data["data"]["target"] == "Male" and data["data"]["spurious"] == "Blond_Hair"
    assert data["data"]["split"] == "test split"
    assert data["data"]["rows_audited"] == int((table["partition"] == 2).sum())
    assert data["inputs"]["labels"]["source"].startswith("CelebA attributes and split")
    example = data["examples"][0]["top_activating"][0]
    assert example["path"].endswith(example["id"]) and Path(example["path"]).exists()
    assert "data:image/jpeg;base64," in (tmp_path / "c.html").read_text()  # thumbnails embedded


def test_celeba_takes_a_plain_npy_with_ids_or_in_list_order(cli, tmp_path):
    """A plain .npy is a store too: its rows are named by --labels (an 'id' column, any order)
    or, without one, are CelebA's rows in the order of its attribute list."""
    from audit.data.celeba import read_celeba, write_fake_celeba
    from tests.fairness.planted import planted_bias_world, save_planted_world

    root = write_fake_celeba(tmp_path / "celeba", n_images=600, seed=2, image_size=16)
    ids = read_celeba(root).table["id"].to_numpy()
    world = planted_bias_world(n_samples=600, seed=2)
    paths = save_planted_world(world, tmp_path / "w")
    order = np.random.default_rng(0).permutation(600)
    np.save(tmp_path / "listed.npy", world.embeddings)
    np.save(tmp_path / "shuffled.npy", world.embeddings[order])
    pd.DataFrame({"id": ids[order]}).to_csv(tmp_path / "ids.csv", index=False)
    common = ["celeba", "--root", root, "--sae", paths["sae"], "--bank", paths["bank"],
              "--classifier", paths["head"], "--html", tmp_path / "c.html",
              "--junit", tmp_path / "c.xml"]  # fmt: skip
    groups = []
    for name, extra in [("listed", []), ("shuffled", ["--labels", tmp_path / "ids.csv"])]:
        out = tmp_path / f"{name}.json"
        r = cli(*common, "--embeddings", tmp_path / f"{name}.npy", *extra, "--json", out)
        assert r.exit_code == 0, r.stderr
        data = json.loads(out.read_text())
        assert data["data"]["rows_audited"] == 600 - int(
            (read_celeba(root).table["partition"] != 2).sum()
        )
        groups.append(data["groups"])
    assert groups[0] == groups[1] and sum(g["n"] for g in groups[0]) > 0
    np.save(tmp_path / "short.npy", world.embeddings[:599])
    r = cli(*common, "--embeddings", tmp_path / "short.npy")
    assert_one_line_error(r, 2, "must hold every CelebA image in the order of its attribute list")
    r = cli(*common, "--labels", tmp_path / "ids.csv")
    assert_one_line_error(r, 2, "--labels names the rows of --embeddings")


def test_celeba_without_a_store_embeds_with_the_sae_model_and_caches(
    cli, world, tmp_path, monkeypatch
):
    """Without --embeddings, `celeba` embeds the images with the model recorded in the SAE
    (an open_clip config + local checkpoint here), caches the store and reuses it."""
    from audit.data.celeba import write_fake_celeba
    from audit.store import open_store
    from tests.world_helpers import make_random_clip

    monkeypatch.setenv("MSAE_AUDIT_CACHE", str(tmp_path / "cache"))
    root = write_fake_celeba(tmp_path / "celeba", n_images=240, seed=3, image_size=16)
    config, weights, _ = make_random_clip(tmp_path / "clip")
    clip_args = ["--model", config, "--pretrained", weights]
    r = cli("embed", "celeba", "--root", root, *clip_args, "--out", tmp_path / "s", "--workers", 0)
    assert r.exit_code == 0, r.stderr
    r = cli("train", "--embeddings", tmp_path / "s", "--arch", "topk", "--k", 8, "--expansion", 2,
            "--epochs", 30, "--batch-size", 64, "--out", tmp_path / "sae")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    r = cli("concepts", "--sae", tmp_path / "sae", "--vocab", "colors", *clip_args,
            "--name", "c", "--out", tmp_path / "bank.yaml")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    args = ["celeba", "--root", root, "--sae", tmp_path / "sae", "--bank", tmp_path / "bank.yaml",
            "--classifier", "probe", "--json", tmp_path / "c.json", "--html", tmp_path / "c.html",
            "--junit", tmp_path / "c.xml"]  # fmt: skip
    first = cli(*args)
    assert first.exit_code in (0, 1, 3), first.stderr
    assert "embedding CelebA with" in first.stderr
    (cached,) = (tmp_path / "cache" / "celeba").iterdir()
    np.testing.assert_array_equal(open_store(cached).read(), open_store(tmp_path / "s").read())
    second = cli(*args)
    assert second.exit_code == first.exit_code
    assert "using the CelebA embeddings cached in" in second.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["inputs"]["embeddings"]["path"] == str(cached)


def test_celeba_errors(cli, world, tmp_path):
    r = cli("celeba", "--root", tmp_path / "nowhere", "--sae", world["sae"], "--bank", world["bank"],
            "--classifier", world["head"], "--embeddings", world["store"])  # fmt: skip
    assert_one_line_error(r, 2, "CelebA root not found", details=True)


@pytest.mark.parametrize("command", ["audit", "celeba", "check"])
def test_help_states_every_default(command):
    """Each option's --help line says its default (or that it is required); the audit's
    settings take theirs from the library (AuditSettings)."""
    import typer

    from audit.cli import _register_commands
    from audit.cli.app import app
    from audit.fairness import AuditSettings

    _register_commands()
    group = typer.main.get_command(app)
    params = [p for p in group.commands[command].params if p.name != "help"]
    for p in params:
        stated = p.required or isinstance(p.show_default, str) or p.default is not None
        assert stated and p.show_default is not False, p.name
    defaults = {p.name: p.default for p in params}
    for name in ("seed", "ablation", "split", "device", "classifier_input", "workers",
                 "image_batch_size"):  # fmt: skip
        if name in defaults:
            assert defaults[name] == AuditSettings.default(name)


def test_image_model_options_reach_the_audit_settings(cli, world, tmp_path, monkeypatch):
    """--image-batch-size and --workers are what the audit runs the user's model with."""
    import audit.cli.audit as audit_cli

    seen = []
    monkeypatch.setattr(
        audit_cli, "_execute", lambda _cmd, _inputs, settings, *a: seen.append(settings)
    )
    args = audit_args(world, tmp_path, "--image-batch-size", "7", "--workers", "0")
    assert cli(*args).exit_code == 0
    assert (seen[0].image_batch_size, seen[0].workers) == (7, 0)


def test_a_report_not_named_still_goes_to_its_default_path(cli, world, tmp_path, monkeypatch):
    """Naming one report does not switch the others off: ``--html X`` alone still writes the
    JSON (the source of truth ``check`` reads) and the JUnit file under ./reports/."""
    monkeypatch.chdir(tmp_path)
    args = [*audit_args(world, tmp_path)[:-6], "--html", tmp_path / "mine.html"]
    assert cli(*args).exit_code == 0
    assert (tmp_path / "mine.html").exists()
    assert {p.name for p in (tmp_path / "reports").iterdir()} >= {"audit.json", "audit.xml"}
    assert not (tmp_path / "reports" / "audit.html").exists()
