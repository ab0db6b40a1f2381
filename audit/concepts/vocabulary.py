"""Vocabularies: text files with one entry per line, and the built-in lists in
``concept_banks/``."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from audit.concepts.locations import BUILTIN_DIR
from audit.errors import InputError
from audit.fileio import read_user_bytes

VOCAB_SUFFIX = ".txt"
#: Prompt templates averaged for each vocabulary entry unless ``--templates`` says otherwise.
DEFAULT_TEMPLATES: tuple[str, ...] = ("{}", "a photo of {}.")
_MAX_ENTRY_CHARS = 200


@dataclass(frozen=True)
class Vocabulary:
    """Entries in file order, duplicates removed (case-insensitively: CLIP lowercases)."""

    entries: list[str]
    sources: list[str]
    sha256: str

    def __len__(self) -> int:
        return len(self.entries)


def builtin_vocabularies() -> dict[str, Path]:
    """Built-in vocabulary names (``colors``, ``world``, …) and their files."""
    if not BUILTIN_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob(f"*{VOCAB_SUFFIX}"))}


def read_vocabulary_file(path: str | os.PathLike[str]) -> list[str]:
    """One entry per line, UTF-8; blank lines and ``#`` comments skipped; whitespace inside an
    entry collapsed; case-insensitive duplicates dropped (the first spelling is kept)."""
    p = Path(path)
    data = read_user_bytes(p, "vocabulary file")
    if b"\0" in data:
        raise InputError(f"vocabulary {p} is a binary file, not text (one entry per line)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"vocabulary {p} is not UTF-8 text (line {line})") from exc
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = " ".join(raw.split())
        if not entry or entry.startswith("#"):
            continue
        if len(entry) > _MAX_ENTRY_CHARS:
            raise InputError(
                f"vocabulary {p}: line {number} is {len(entry)} characters long "
                f"(at most {_MAX_ENTRY_CHARS}; one entry per line)"
            )
        entries.append(entry)
    entries = _dedupe(entries)
    if not entries:
        raise InputError(f"vocabulary {p} is empty (no entries besides blank lines and comments)")
    return entries


def _dedupe(entries: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for entry in entries:
        key = entry.lower()
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def resolve_vocabulary(spec: str) -> tuple[Path, str]:
    """The file behind one ``--vocab`` value and how the bank records it.

    An ``hf:OWNER/REPO/FILE`` spec is downloaded into (or read from) the Hugging Face cache.
    An existing file is read as given. Otherwise a built-in name (``world``) or the name of a
    built-in file as listed in ``concept_banks/`` (``world.txt``, ``concept_banks/world.txt``)
    is the built-in list; anything else is an error listing the built-ins.
    """
    from audit.sae.hub import is_hub_ref
    from audit.sae.hub import resolve_vocabulary as hub_vocabulary_file

    if is_hub_ref(spec):
        return Path(hub_vocabulary_file(spec)), spec
    path = Path(spec)
    builtins = builtin_vocabularies()
    if path.is_file():
        return path, str(path)
    stem = path.name[: -len(VOCAB_SUFFIX)] if path.name.endswith(VOCAB_SUFFIX) else None
    if spec in builtins:
        return builtins[spec], spec
    if stem in builtins and path.parent in (Path("."), Path(BUILTIN_DIR.name)):
        return builtins[stem], stem
    if path.suffix or "/" in spec or os.sep in spec:
        return path, str(path)  # a file that is not there: the reader says so
    names = ", ".join(builtins) or "none"
    raise InputError(f"unknown vocabulary {spec!r}: not a file and not a built-in ({names})")


def load_vocabulary(specs: str | os.PathLike[str] | list[str]) -> Vocabulary:
    """Built-in names or files (a list, or one string with commas between built-in names),
    merged in order with duplicates removed."""
    if isinstance(specs, (str, os.PathLike)):
        text = str(specs)
        specs = text.split(",") if "," in text and not Path(text).exists() else [text]
    entries: list[str] = []
    sources = []
    for spec in specs:
        path, source = resolve_vocabulary(str(spec).strip())
        entries += read_vocabulary_file(path)
        sources.append(source)
    entries = _dedupe(entries)
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return Vocabulary(entries, sources, "sha256:" + digest[:32])


def validate_templates(templates: tuple[str, ...] | list[str]) -> list[str]:
    out = [str(t) for t in templates]
    if not out:
        raise InputError("at least one prompt template is needed (e.g. '{}')")
    for t in out:
        if t.count("{}") != 1 or "{" in t.replace("{}", "") or "}" in t.replace("{}", ""):
            raise InputError(f"prompt template {t!r} must contain exactly one '{{}}' placeholder")
    return out
