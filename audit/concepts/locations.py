"""Where concept banks and vocabularies are found: the workspace, the reports folder, the
built-in folder; bank names that cannot escape their folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from audit.errors import InputError

BANKS_DIR = "concept_banks"
#: Built-in vocabularies and banks shipped with the project (repository root/concept_banks).
BUILTIN_DIR = Path(__file__).resolve().parents[2] / BANKS_DIR
#: The default output folder; commands run with ``--out reports/X`` (``make demo`` among them)
#: write their banks to ``reports/X/concept_banks/``.
REPORTS_DIR = "reports"
BANK_SUFFIXES = (".yaml", ".yml")

_PLAIN_NAME = re.compile(r"\w[\w.-]*")


def validate_file_name(name: str, what: str = "name") -> str:
    """A plain file name (letters, digits, ``_``, ``-``, ``.``; not starting with ``.`` or ``-``):
    no folders, no ``..``, no control characters, so it cannot escape its folder."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise InputError(
            f"invalid {what} {name!r}: use letters, digits, '-', '_' and '.' (no paths)"
        )
    if len(name) > 100:
        raise InputError(f"{what} is too long (100 characters at most)")
    return name


def validate_bank_name(name: str) -> str:
    """Bank names are plain file names: they cannot escape the banks folder."""
    return validate_file_name(name, "bank name")


def bank_path_for_name(name: str, workspace: str | os.PathLike[str] | None = None) -> Path:
    """Where ``--name NAME`` writes: ``./concept_banks/NAME.yaml`` in the workspace."""
    root = Path(workspace) if workspace is not None else Path.cwd()
    return root / BANKS_DIR / f"{validate_bank_name(name)}.yaml"


def bank_folders(workspace: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a bank name is looked up, in order: ``./concept_banks/``, the banks written under
    the reports folder (``./reports/*/concept_banks/``, e.g. ``make demo``'s), the built-ins."""
    root = Path(workspace) if workspace is not None else Path.cwd()
    reports = root / REPORTS_DIR
    written = sorted(reports.glob(f"*/{BANKS_DIR}")) if reports.is_dir() else []
    return [root / BANKS_DIR, *[p for p in written if p.is_dir()], BUILTIN_DIR]


def available_banks(workspace: str | os.PathLike[str] | None = None) -> dict[str, list[Path]]:
    """Every bank name that :func:`resolve_bank` can find, with the files carrying it."""
    found: dict[str, list[Path]] = {}
    for folder in bank_folders(workspace):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in BANK_SUFFIXES and path.is_file():
                found.setdefault(path.stem, []).append(path)
    return found


def resolve_bank(
    name_or_path: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None
) -> Path:
    """A bank path from a path, or a name looked up in the folders of :func:`bank_folders`.

    The first folder holding ``NAME.yaml`` wins, except that two different banks of the same
    name under ``reports/`` are ambiguous (an error naming both). An unknown name lists the
    available ones.
    """
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix in BANK_SUFFIXES or os.sep in text or "/" in text:
        if not candidate.exists():
            raise InputError(f"concept bank not found: {candidate}")
        return candidate
    validate_bank_name(text)
    root = Path(workspace) if workspace is not None else Path.cwd()
    own = [root / BANKS_DIR / f"{text}{suffix}" for suffix in BANK_SUFFIXES]
    for path in own:
        if path.is_file():
            return path
    found = available_banks(workspace).get(text, [])
    written = [p for p in found if p.parent.parent.parent == root / REPORTS_DIR]
    if len(written) > 1:
        raise InputError(
            f"concept bank '{text}' is ambiguous: {', '.join(map(str, written))}; give a path"
        )
    if found:
        return found[0]
    raise InputError(_unknown_bank_message(text, root, workspace))


def _unknown_bank_message(name: str, root: Path, workspace: str | os.PathLike[str] | None) -> str:
    names = sorted(available_banks(workspace))
    listing = f"available: {', '.join(names)}" if names else "no banks found"
    where = f"{root / BANKS_DIR}, {root / REPORTS_DIR}/*/{BANKS_DIR} or the built-in banks"
    hint = ""
    if (BUILTIN_DIR / f"{name}.txt").is_file():
        hint = (
            f"; '{name}' is a built-in vocabulary: build a bank from it with "
            f"`msae-audit concepts --sae SAE_DIR --vocab {name} --name {name}`"
        )
    return f"concept bank '{name}' not found in {where} ({listing}){hint}"
