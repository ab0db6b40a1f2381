"""The audit's outputs, byte for byte, against the golden files in ``expected/``.

A difference means the audit's behaviour changed. If the change is intended, regenerate the
files (``PYTHONPATH=. python -m tests.golden.regenerate``) and explain the diff in the commit.
"""

from __future__ import annotations

import difflib

import pytest

from tests.golden.cases import CASES, EXPECTED


def _first_difference(expected: str, actual: str) -> str:
    diff = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "expected", "actual", lineterm="", n=2
    )
    return "\n".join(list(diff)[:40])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_outputs_match_the_golden_files(case, tmp_path):
    produced = case.run(tmp_path)
    assert sorted(produced) == sorted(case.files)
    for file, text in produced.items():
        expected = (EXPECTED / file).read_text(encoding="utf-8")
        assert text == expected, f"{file} differs:\n{_first_difference(expected, text)}"


def test_every_golden_file_belongs_to_a_case():
    """No stale golden file lingers after a case is renamed or removed."""
    declared = {file for case in CASES for file in case.files}
    assert {p.name for p in EXPECTED.iterdir()} == declared
