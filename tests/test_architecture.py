"""The import contracts of docs/architecture.md hold (import-linter, pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    run = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "broken" in run.stdout and "0 broken" in run.stdout


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_private_module_of_another_package_is_imported():
    # A private module (typer._click, …) may move or vanish in any release of its package.
    private = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted((ROOT / "audit").rglob("*.py"))
        for line, name in _imported_modules(path)
        if name.split(".")[0] != "audit"
        and any(part.startswith("_") and not part.startswith("__") for part in name.split("."))
    ]
    assert not private, private
