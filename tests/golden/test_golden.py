"""The audit's outputs against the golden files in ``expected/``: byte for byte, except that a
decimal may differ by a unit in its last printed place (float sums on another CPU;
tests/golden/compare.py).

A difference means the audit's behaviour changed. If the change is intended, regenerate the
files (``PYTHONPATH=. python -m tests.golden.regenerate``) and explain the diff in the commit.
"""

from __future__ import annotations

import difflib

import pytest

from tests.golden.cases import CASES, EXPECTED
from tests.golden.compare import difference


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
        found = difference(file, expected, text)
        assert found is None, f"{file} differs ({found}):\n{_first_difference(expected, text)}"


def test_every_golden_file_belongs_to_a_case():
    """No stale golden file lingers after a case is renamed or removed."""
    declared = {file for case in CASES for file in case.files}
    assert {p.name for p in EXPECTED.iterdir()} == declared


def test_doctests():
    import doctest

    import tests.golden.compare

    result = doctest.testmod(tests.golden.compare, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
