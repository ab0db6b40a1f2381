"""`msae-audit discover`: the reports, the JSON contract, exit codes and the re-check command."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.audit_worlds import write_world
from tests.conftest import assert_one_line_error
from tests.schemas import assert_valid

FAIL_GATE = """
gates:
  flagged_concepts: {max: 0}
bootstrap: {samples: 200, seed: 0}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return write_world(tmp_path_factory.mktemp("world"), n_samples=2000, seed=0)


def discover_args(world: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return [
        "discover", "--embeddings", world["store"], "--target", "Male", "--sae", world["sae"],
        "--bank", world["bank"], "--classifier", world["head"], "--json", out / "d.json",
        "--html", out / "d.html", "--junit", out / "d.xml", "-q", *extra,
    ]  # fmt: skip


def test_discover_writes_the_contract_and_names_the_planted_shortcut(cli, world, tmp_path):
    r = cli(*discover_args(world, tmp_path))
    assert r.exit_code == 0, r.stderr
    doc = json.loads((tmp_path / "d.json").read_text())
    assert_valid(doc, "discover")
    assert doc["schema"] == "msae-audit/discover" and doc["exit_code"] == 0
    first = doc["concepts"][0]
    for key in ("rank", "name", "latents", "groups", "worst_group_accuracy", "delta_wga", "ci",
                "p", "q", "flagged"):  # fmt: skip
        assert key in first
    assert {"name", "n", "accuracy"} <= set(first["groups"][0])
    assert first["rank"] == 1 and first["name"] == "blond hair" and first["flagged"]
    assert [c["rank"] for c in doc["concepts"]] == list(range(1, len(doc["concepts"]) + 1))
    assert first["recheck"].startswith("msae-audit audit ")
    assert "blond hair" in r.stdout and "re-check" in r.stdout
    html = (tmp_path / "d.html").read_text()
    assert "blond hair" in html and "<script" not in html
    suite = ET.parse(tmp_path / "d.xml").getroot()
    assert suite.find("testsuite").get("failures") == "0"
    assert (tmp_path / "discover-gate.yaml").exists()


def test_a_gate_on_flagged_concepts_fails_with_exit_code_1(cli, world, tmp_path):
    gate = tmp_path / "gate.yaml"
    gate.write_text(FAIL_GATE)
    r = cli(*discover_args(world, tmp_path, "--gate", gate))
    assert r.exit_code == 1
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["verdict"] == "fail" and doc["gate"]["path"] == str(gate)
    failures = ET.parse(tmp_path / "d.xml").getroot().find("testsuite").get("failures")
    assert failures == "1"


def test_the_recheck_command_reruns_the_concept_as_an_audit_gate(cli, world, tmp_path):
    assert cli(*discover_args(world, tmp_path)).exit_code == 0
    command = json.loads((tmp_path / "d.json").read_text())["concepts"][0]["recheck"]
    args = shlex.split(command)[1:]
    r = cli(*args, "--json", tmp_path / "a.json", "--html", tmp_path / "a.html", "--junit",
            tmp_path / "a.xml", "-q")  # fmt: skip
    assert r.exit_code == 1, r.stderr  # the gate fails while the concept is flagged
    audit = json.loads((tmp_path / "a.json").read_text())
    assert audit["data"]["spurious"].startswith("concept:blond hair>")
    assert any(c["flagged"] for c in audit["concepts"])


def _recheck(cli, command: str, out: Path):  # type: ignore[no-untyped-def]
    args = shlex.split(command)[1:]
    return cli(*args, "--json", out / "a.json", "--html", out / "a.html", "--junit",
               out / "a.xml", "-q")  # fmt: skip


def test_with_a_users_gate_the_recheck_still_gates_the_flagged_concept(cli, world, tmp_path):
    """A user's gate that does not gate flagged concepts (and its thresholds) must not make the
    re-check pass while the concept is flagged: discover writes its re-check gate anyway."""
    gate = tmp_path / "mine.yaml"
    gate.write_text("gates:\n  accuracy: {min: 0.0}\nconcepts: {min_dwga: 0.03}\n")
    assert cli(*discover_args(world, tmp_path, "--gate", gate)).exit_code == 0
    doc = json.loads((tmp_path / "d.json").read_text())
    first = doc["concepts"][0]
    assert first["flagged"] and doc["gate_file"] == str(tmp_path / "discover-gate.yaml")
    for path in (doc["gate_file"], first["recheck_gate"]):
        written = yaml.safe_load(Path(path).read_text())
        assert written["gates"] == {"flagged_concepts": {"max": 0}}
        assert written["concepts"]["min_dwga"] == 0.03  # the user's threshold is kept
    assert shlex.split(first["recheck"])[-1] == first["recheck_gate"]
    assert _recheck(cli, first["recheck"], tmp_path).exit_code == 1


def _with(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


LOOSE_GATE = "concepts: {min_dwga: 0.0, max_q: 1.0}\n"  # flags more, in the re-checks too


def test_a_concepts_recheck_fails_for_that_concept_only(cli, world, tmp_path):
    """Each flagged concept's re-check has its own gate (every other concept allowlisted).
    Re-checking a concept that is not flagged, with groups where another concept is flagged,
    fails under the run-wide gate and passes under that concept's own gate."""
    from audit.fairness.attributes import concept_spec

    gate = tmp_path / "loose.yaml"
    gate.write_text(LOOSE_GATE)
    assert cli(*discover_args(world, tmp_path, "--gate", gate)).exit_code == 0
    doc = json.loads((tmp_path / "d.json").read_text())
    flagged = [c for c in doc["concepts"] if c["flagged"]]
    assert len(flagged) >= 2
    assert len({c["recheck_gate"] for c in flagged} | {doc["gate_file"]}) == len(flagged) + 1
    for c in flagged:
        assert shlex.split(c["recheck"])[-1] == c["recheck_gate"]
        allow = yaml.safe_load(Path(c["recheck_gate"]).read_text())["concepts"]["allowlist"]
        assert c["name"] not in allow and {o["name"] for o in flagged} - {c["name"]} <= set(allow)
    template = shlex.split(flagged[0]["recheck"])
    for c in doc["concepts"]:
        if c["flagged"] or not c["tested"] or c["target_concept"]:
            continue
        args = _with(template, "--spurious", concept_spec(c["name"], c["threshold"]))
        shared = _recheck(cli, shlex.join(_with(args, "--gate", doc["gate_file"])), tmp_path)
        audit = json.loads((tmp_path / "a.json").read_text())
        if shared.exit_code == 1:  # another concept is flagged on this concept's groups
            assert not any(a["flagged"] for a in audit["concepts"] if a["name"] == c["name"])
            own_gate = tmp_path / "own-gate.yaml"
            own_gate.write_text(yaml.safe_dump(_own_gate(c["name"], doc)))
            own = _recheck(cli, shlex.join(_with(args, "--gate", str(own_gate))), tmp_path)
            assert own.exit_code == 0, (c["name"], own.stderr)
            return
    pytest.fail("no concept's groups flag another concept: the test checks nothing")


def _own_gate(name: str, doc: dict) -> dict:
    """What discover writes for a flagged concept, here for one that is not flagged."""
    from audit.discover.recheck import concept_gate
    from audit.fairness import load_gate

    base = load_gate(doc["gate"]["path"])
    return concept_gate(base, name, [c["name"] for c in doc["concepts"]])


def test_the_users_gate_is_never_overwritten_by_the_recheck_gate(cli, world, tmp_path):
    gate = tmp_path / "discover-gate.yaml"
    gate.write_text(FAIL_GATE)
    assert_one_line_error(cli(*discover_args(world, tmp_path, "--gate", gate)), 2, "--gate")
    assert gate.read_text() == FAIL_GATE


def test_the_same_inputs_and_seed_give_the_same_json(cli, world, tmp_path):
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        assert cli(*discover_args(world, out, "--seed", 3)).exit_code == 0
    first = json.loads((tmp_path / "a" / "d.json").read_text())
    second = json.loads((tmp_path / "b" / "d.json").read_text())
    for doc in (first, second):
        doc.pop("inputs")
        doc.pop("gate_file")
        for c in doc["concepts"]:
            c.pop("recheck")
            c.pop("recheck_gate", None)
    assert first == second


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--target", "nope"), "nope"), (("--bank", "missing.yaml"), "missing")],
)
def test_bad_inputs_are_one_line_and_exit_code_2(cli, world, tmp_path, extra, message):
    args = discover_args(world, tmp_path)
    flag = extra[0]
    i = args.index(flag)
    args[i + 1] = extra[1]
    assert_one_line_error(cli(*args), 2, message)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--threshold", "nan"), ("--min-rows", "0"), ("--max-target-auc", "0.3")],
)
def test_bad_settings_are_one_line_and_exit_code_2(cli, world, tmp_path, option, value):
    assert_one_line_error(cli(*discover_args(world, tmp_path, option, value)), 2, option)


def test_the_schema_file_is_generated_from_the_typed_result():
    from audit.discover.schema import discover_schema
    from tests.schemas import SCHEMAS

    written = json.loads((SCHEMAS / "discover.schema.json").read_text(encoding="utf-8"))
    assert written == discover_schema(), (
        "regenerate: python -m audit.discover.schema > docs/schemas/discover.schema.json"
    )


def test_export_head_writes_a_head_and_reports_before_and_after(cli, world, tmp_path):
    r = cli(
        *discover_args(world, tmp_path, "--export-head", tmp_path / "h.npz", "--ablation", "zero")
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads((tmp_path / "d.json").read_text())
    assert_valid(doc, "discover")
    (score,) = doc["export"]["scores"]
    assert doc["export"]["removed"] == [c["name"] for c in doc["concepts"] if c["flagged"]]
    assert "blond hair" in doc["export"]["removed"] and (tmp_path / "h.npz").exists()
    assert score["worst_group_accuracy_after"] > score["worst_group_accuracy_before"]
    assert "Exported head" in r.stdout
    refit = cli(*discover_args(world, tmp_path, "--export-head", tmp_path / "h.npz", "--refit"))
    assert_one_line_error(refit, 2, "train")
