"""What an audit or discover run counts as its inputs, so no report path replaces one."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import InputError
from audit.fileio import refuse_overwriting
from audit.report.files import input_files


def _inputs(bank: str) -> list:
    return input_files("store", None, "sae", bank, "head.npz", None)


def test_a_bank_given_by_name_is_the_file_the_run_loads(tmp_path, monkeypatch):
    """`--bank demo` loads reports/demo/concept_banks/demo.yaml (make demo's bank): a report
    written over that file would replace the bank, so it is refused like any input."""
    monkeypatch.chdir(tmp_path)
    bank = Path("reports/demo/concept_banks/demo.yaml")
    bank.parent.mkdir(parents=True)
    bank.write_text("concepts: []\n")
    with pytest.raises(InputError, match="is an input of this run"):
        refuse_overwriting({"--json": bank}, _inputs("demo"))
    refuse_overwriting({"--json": tmp_path / "audit.json"}, _inputs("demo"))  # elsewhere: fine


def test_a_bank_that_cannot_be_found_is_left_to_the_loader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "no-such-bank" in _inputs("no-such-bank")
