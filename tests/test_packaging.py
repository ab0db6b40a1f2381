"""The dependency bounds in pyproject.toml and the pins in constraints.txt agree; a built
wheel carries what the installed package reads.

`make` installs with ``-c constraints.txt``; a dependency declared in pyproject.toml but not
pinned there would float to whatever pip picks that day, and a pin outside the declared range
would make the install fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *extras.get("dev", [])]]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_declared_dependency_is_pinned_within_its_bounds():
    pins = _pins()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (str(requirement), str(pins[name]))


def test_every_declared_dependency_has_an_upper_bound():
    for requirement in _declared():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators and "<" in operators, f"{requirement} needs >= and < bounds"


def test_a_wheel_carries_the_built_in_vocabularies_where_the_package_looks(tmp_path):
    """`pip install msae-audit` (not editable) must still know `--vocab celeba`: the built-in
    vocabularies travel in the wheel, next to ``audit/`` where ``locations.BUILTIN_DIR`` is."""
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    import audit
    from audit.concepts.locations import BANKS_DIR, BUILTIN_DIR

    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "audit", source / "audit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / BANKS_DIR, source / BANKS_DIR)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path / "dist")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(built).namelist())
    where = BUILTIN_DIR.relative_to(Path(audit.__file__).resolve().parents[1])
    shipped = sorted(p.name for p in (ROOT / BANKS_DIR).glob("*.txt"))
    assert shipped and "celeba.txt" in shipped
    assert [n for n in shipped if f"{where.as_posix()}/{n}" not in names] == []
