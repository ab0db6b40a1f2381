"""The bank's names checked again on the audited images: a name that holds there is flagged as
before; a name that does not hold is reported as such and never flagged (audit, ``check`` on
the saved JSON, every report).

The world: the demo's audit inputs (tests/golden/inputs/demo: the test split of the task store,
its SAE, its image-named bank with its word file, and the probe). As built, the bank's "red"
is labelled on these images by the tiny CLIP's own text direction for "red". The refuting
bank gives "red" the word check of "circle" instead (its direction and threshold), which the
red concept does not follow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from audit.concepts import load_bank, save_bank
from audit.concepts.bank import WordCheck
from audit.report.markdown import md_escape
from tests.golden.cases import DEMO_GATE, DEMO_INPUTS, reports, run_audit_case


def red_labelled_as(word: str, folder: Path) -> Path:
    """The demo's bank, written into ``folder`` (made here) with its word check for "red" taken
    from ``word``'s; returns the bank's path (its word file beside it)."""
    bank = load_bank(DEMO_INPUTS / "bank.yaml")
    assert bank.word_checks is not None
    bank.word_checks["red"] = dataclasses.replace(bank.word_checks[word], word="red")
    folder.mkdir()
    bank_path = save_bank(bank, folder / "bank.yaml")
    assert (folder / "bank.words.safetensors").is_file()
    return bank_path


def _audit(tmp_path: Path, red_labelled_as_word: str) -> dict:
    """The demo's audit with the bank's word check for "red" taken from that word's."""
    folder = tmp_path / red_labelled_as_word
    bank_path = red_labelled_as(red_labelled_as_word, folder)
    return run_audit_case(
        folder, DEMO_INPUTS / "store", sae=DEMO_INPUTS / "sae", bank=bank_path,
        classifier=DEMO_INPUTS / "head.npz", target="is_circle", spurious="is_red",
        gate=DEMO_GATE, ablation="mean", split="test",
    )  # fmt: skip


def _red(result: dict) -> dict:
    return next(c for c in result["concepts"] if c["name"] == "red")


@pytest.fixture(scope="module")
def audits(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("name_check")
    return {word: _audit(root, word) for word in ("red", "circle")}


def test_a_name_that_holds_on_the_audited_images_is_flagged(audits):
    red = _red(audits["red"])
    assert red["evidence"]["holds"] is True
    assert red["evidence"]["audited_auc"] >= 0.9  # the red concept follows "red" here too
    assert 700 <= red["evidence"]["audited_labelled"] <= 1300  # of 2000 rows, half of them red
    assert red["flagged"] and red["rank"] == 1
    # Every validated concept whose word the bank keeps is checked, and the reports count them.
    named = [c for c in audits["red"]["concepts"] if c["tested"]]
    assert named and all("audited_labelled" in c["evidence"] for c in named)
    held = sum(c["evidence"].get("holds") is True for c in named)
    line = f"Names checked on these images: {held} of {len(named)} hold"
    assert line in " ".join(reports(audits["red"])["txt"].split())
    # Planted truth: the task shows circles and squares only. The names that do not hold are
    # the bank's other shapes — active on hundreds of rows, few of which CLIP reads as them.
    refuted = {c["name"] for c in named if c["evidence"]["holds"] is False}
    assert refuted == {"cross", "heart", "star", "triangle"}, refuted
    assert all(c["evidence"]["audited_share_upper"] < 0.5 for c in named if c["name"] in refuted)
    assert held == len(named) - len(refuted)  # every other name holds


def test_a_name_refuted_on_the_audited_images_is_reported_not_flagged(audits, tmp_path):
    result = audits["circle"]
    red = _red(result)
    assert red["evidence"]["holds"] is False
    assert red["evidence"]["audited_auc_upper"] < red["evidence"]["auc_threshold"]
    # The effect is the same as when the name held; only the flag goes.
    held = _red(audits["red"])
    assert red["delta_wga"] == held["delta_wga"] and red["q"] == held["q"]
    assert not red["flagged"] and not any(c["flagged"] for c in result["concepts"])
    # The sliced errors follow the same rule: red's slices were flagged while its name held.
    sliced = {w: _red(audits[w]["concept_errors"]) for w in ("red", "circle")}
    assert sliced["red"]["flagged"] and sliced["red"]["evidence"]["holds"] is True
    assert not sliced["circle"]["flagged"] and sliced["circle"]["evidence"]["holds"] is False
    assert not any(s["flagged"] for s in sliced["circle"]["slices"])
    note = "name not confirmed on these images: AUC"
    rendered = reports(result)
    summary = "not confirmed: red, triangle, star, cross, heart (never flagged)"
    for kind in ("txt", "md", "html"):
        assert note in rendered[kind], kind
        shown = md_escape(summary) if kind == "md" else summary
        assert shown in " ".join(rendered[kind].split()), kind
    # `check` re-judging the saved file keeps it unflagged.
    from audit.cli import run

    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(result), encoding="utf-8")
    gate = tmp_path / "gate.yaml"
    gate.write_text(DEMO_GATE, encoding="utf-8")
    out = tmp_path / "rejudged.json"
    run(["check", "--config", str(gate), str(saved), "--json", str(out)])
    assert not _red(json.loads(out.read_text(encoding="utf-8")))["flagged"]


def test_without_the_word_file_the_bank_says_so(tmp_path):
    folder = tmp_path / "bank"
    shutil.copytree(DEMO_INPUTS, folder, ignore=shutil.ignore_patterns("store", "sae"))
    bank = load_bank(folder / "bank.yaml")
    bank.word_checks = {"red": WordCheck("red", np.ones(bank.sae["d_in"], np.float32), 0.0)}
    save_bank(bank, folder / "bank.yaml")
    (folder / "bank.words.safetensors").unlink()
    moved = load_bank(folder / "bank.yaml")
    assert moved.word_checks is None
    assert any("bank.words.safetensors" in note for note in moved.notes())


def test_an_image_bank_without_a_word_file_says_its_names_are_not_checked_here(tmp_path):
    import yaml

    data = yaml.safe_load((DEMO_INPUTS / "bank.yaml").read_text(encoding="utf-8"))
    del data["word_checks"]  # as banks were written before they kept their words
    older = tmp_path / "older.yaml"
    older.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    bank = load_bank(older)
    assert bank.word_checks is None and bank.validation_method == "image"
    assert any("keeps no word file" in note for note in bank.notes())
    assert not load_bank(DEMO_INPUTS / "bank.yaml").notes()  # with its word file: no caveat
