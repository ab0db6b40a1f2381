"""Where banks are found, and bank names that cannot escape their folder."""

from __future__ import annotations

import pytest

from audit.concepts import (
    Concept,
    ConceptBank,
    available_banks,
    load_bank,
    resolve_bank,
    save_bank,
)
from audit.errors import InputError


@pytest.mark.parametrize(
    "name", ["../../x", "..", ".hidden", "-rf", "a/b", "a\\b", "/etc/passwd", "a\x01b", "", "x\n"]
)
def test_bank_names_cannot_escape_the_banks_folder(tmp_path, name):
    from audit.concepts import bank_path_for_name

    with pytest.raises(InputError, match="invalid bank name"):
        bank_path_for_name(name, tmp_path)


def test_plain_bank_names_stay_inside_the_banks_folder(tmp_path):
    from audit.concepts import bank_path_for_name

    for name in ("demo", "celeba-v2.1", "ünïcode_ok"):
        path = bank_path_for_name(name, tmp_path)
        assert path.parent == tmp_path / "concept_banks" and path.name == f"{name}.yaml"


def _bank_file(path, name="demo"):
    bank = ConceptBank(name, {"fingerprint": "f"}, [Concept(0, "red", 0.5, "red", True)])
    return save_bank(bank, path)


def test_a_bank_written_under_reports_is_found_by_name(tmp_path):
    """``make demo`` writes ``reports/demo/concept_banks/demo.yaml``; ``--bank demo`` finds it."""
    written = _bank_file(tmp_path / "reports" / "demo" / "concept_banks" / "demo.yaml")
    assert resolve_bank("demo", tmp_path) == written
    assert load_bank("demo", tmp_path).concepts[0].name == "red"
    own = _bank_file(tmp_path / "concept_banks" / "demo.yaml")
    assert resolve_bank("demo", tmp_path) == own  # the workspace's own banks come first


def test_two_banks_of_one_name_under_reports_are_ambiguous(tmp_path):
    for run in ("a", "b"):
        _bank_file(tmp_path / "reports" / run / "concept_banks" / "demo.yaml")
    with pytest.raises(InputError, match=r"ambiguous.*give a path"):
        resolve_bank("demo", tmp_path)


def test_an_unknown_bank_lists_the_available_ones(tmp_path):
    _bank_file(tmp_path / "concept_banks" / "mine.yaml")
    _bank_file(tmp_path / "reports" / "demo" / "concept_banks" / "demo.yaml")
    with pytest.raises(InputError, match=r"'nope' not found.*available: demo, mine"):
        resolve_bank("nope", tmp_path)
    # A built-in vocabulary's name is not a bank: say how to build one from it.
    with pytest.raises(InputError, match=r"'world' is a built-in vocabulary.*--vocab world"):
        resolve_bank("world", tmp_path)
    assert set(available_banks(tmp_path)) == {"demo", "mine"}
