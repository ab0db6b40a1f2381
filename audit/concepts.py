"""Concept banks (SPEC §6): named SAE latents, stored as human-readable YAML.

A bank lives at ``concept_banks/<name>.yaml`` in the user's workspace (or any path)::

    format: msae-audit/concept-bank
    version: 1
    name: demo
    sae: {fingerprint: "sha256:…", arch: matryoshka, d_in: 64, n_latents: 512, path: …}
    embedding_model: …           # the CLIP model the text embeddings came from
    pretrained: …
    vocabulary: {source: …, entries: 1234, templates: [...]}
    threshold: 0.21              # minimum cosine for a name (see `threshold_method`)
    threshold_method: …
    concepts:
      - {latent: 12, name: red, score: 0.43, closest: red, validated: true,
         alternatives: [[crimson, 0.41], …], self_rank: 1}
      - {latent: 13, name: null, score: 0.12, closest: tree, validated: false, …}

Every latent is listed; ``name`` is null for latents whose best similarity is below the
threshold (they keep their ``closest`` word). A bank records the SAE it was built from and is
refused for any other SAE.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audit import __version__
from audit.errors import InputError
from audit.fileio import write_text

BANK_FORMAT = "msae-audit/concept-bank"
BANK_VERSION = 1
BANKS_DIR = "concept_banks"
#: Built-in vocabularies and banks shipped with the project (repository root/concept_banks).
BUILTIN_DIR = Path(__file__).resolve().parent.parent / BANKS_DIR


@dataclass
class Concept:
    latent: int
    name: str | None  # None: below the naming threshold
    score: float  # best cosine similarity with the vocabulary
    closest: str  # best vocabulary entry (even when unnamed)
    validated: bool = False  # similarity ≥ threshold and self-consistent
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    self_rank: int | None = None  # rank of this latent among the named word's own activations

    @property
    def label(self) -> str:
        """How reports show the latent: its name, or ``latent 1776 (~closest)``."""
        return self.name if self.name else f"latent {self.latent} (~{self.closest})"


@dataclass
class ConceptBank:
    name: str
    sae: dict[str, Any]
    concepts: list[Concept]
    embedding_model: str | None = None
    pretrained: str | None = None
    vocabulary: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.0
    threshold_method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return str(self.sae.get("fingerprint", ""))

    def by_latent(self) -> dict[int, Concept]:
        return {c.latent: c for c in self.concepts}

    def named(self, validated_only: bool = True) -> list[Concept]:
        return [c for c in self.concepts if c.name and (c.validated or not validated_only)]

    def latents_named(self, name: str) -> list[int]:
        """All latents carrying ``name`` (names are matched case-insensitively)."""
        key = name.strip().lower()
        return [c.latent for c in self.concepts if c.name and c.name.lower() == key]

    def resolve(self, name: str) -> list[int]:
        """Latents for a concept name; an unknown name is an input error listing close matches."""
        latents = self.latents_named(name)
        if latents:
            return latents
        if name.strip().isdigit():
            latent = int(name)
            if any(c.latent == latent for c in self.concepts):
                return [latent]
        names = sorted({c.name for c in self.concepts if c.name})
        close = difflib.get_close_matches(
            name.strip().lower(), [n.lower() for n in names], n=5, cutoff=0.5
        )
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise InputError(f"concept '{name}' is not in bank '{self.name}'{hint}")

    def check_sae(self, fingerprint: str, sae_path: str | os.PathLike[str] | None = None) -> None:
        """Refuse a bank built for another SAE."""
        if self.fingerprint != fingerprint:
            where = f" ({sae_path})" if sae_path else ""
            raise InputError(
                f"concept bank '{self.name}' was built for another SAE "
                f"({self.sae.get('path', 'unknown path')}, {self.fingerprint}), not this one{where}; "
                "rebuild it with `msae-audit concepts`"
            )

    def to_yaml_dict(self) -> dict[str, Any]:
        concepts = []
        for c in self.concepts:
            item = asdict(c)
            item["alternatives"] = [[str(n), round(float(s), 6)] for n, s in c.alternatives]
            item["score"] = round(float(c.score), 6)
            concepts.append(item)
        return {
            "format": BANK_FORMAT,
            "version": BANK_VERSION,
            "name": self.name,
            "created_by": f"msae-audit {__version__}",
            "sae": self.sae,
            "embedding_model": self.embedding_model,
            "pretrained": self.pretrained,
            "vocabulary": self.vocabulary,
            "threshold": round(float(self.threshold), 6),
            "threshold_method": self.threshold_method,
            **self.extra,
            "concepts": concepts,
        }


def validate_bank_name(name: str) -> str:
    """Bank names are plain file names: they cannot escape the banks folder."""
    if not name or name in (".", "..") or any(ch in name for ch in "/\\\0") or name.startswith("."):
        raise InputError(f"invalid bank name {name!r}: use letters, digits, '-', '_' (no paths)")
    if len(name) > 100:
        raise InputError("bank name is too long (100 characters at most)")
    return name


def bank_path_for_name(name: str, workspace: str | os.PathLike[str] | None = None) -> Path:
    """Where ``--name NAME`` writes: ``./concept_banks/NAME.yaml`` in the workspace."""
    root = Path(workspace) if workspace is not None else Path.cwd()
    return root / BANKS_DIR / f"{validate_bank_name(name)}.yaml"


def resolve_bank(
    name_or_path: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None
) -> Path:
    """A bank path from a path, or a name looked up in ``./concept_banks/`` then the built-ins."""
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix in (".yaml", ".yml") or os.sep in text or "/" in text:
        if not candidate.exists():
            raise InputError(f"concept bank not found: {candidate}")
        return candidate
    validate_bank_name(text)
    root = Path(workspace) if workspace is not None else Path.cwd()
    for folder in (root / BANKS_DIR, BUILTIN_DIR):
        path = folder / f"{text}.yaml"
        if path.exists():
            return path
    raise InputError(f"concept bank '{text}' not found in {root / BANKS_DIR} or the built-in banks")


def save_bank(bank: ConceptBank, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    text = yaml.safe_dump(bank.to_yaml_dict(), sort_keys=False, allow_unicode=True, width=120)
    write_text(p, text)
    return p


def load_bank(
    name_or_path: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None
) -> ConceptBank:
    """Read and validate a bank file (safe YAML: no tags, no code)."""
    path = resolve_bank(name_or_path, workspace)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: malformed YAML{where}") from exc
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        raise InputError(f"{path}: not a concept bank (format must be '{BANK_FORMAT}')")
    if data.get("version") != BANK_VERSION:
        raise InputError(f"{path}: unsupported concept bank version {data.get('version')!r}")
    raw = data.get("concepts")
    if not isinstance(raw, list):
        raise InputError(f"{path}: 'concepts' must be a list")
    concepts = []
    for i, item in enumerate(raw):
        try:
            concepts.append(_concept_from_dict(item))
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: concept #{i} is malformed ({exc})") from exc
    sae = data.get("sae")
    if not isinstance(sae, dict) or "fingerprint" not in sae:
        raise InputError(f"{path}: missing 'sae.fingerprint' (which SAE the bank belongs to)")
    known = {
        "format",
        "version",
        "name",
        "created_by",
        "sae",
        "embedding_model",
        "pretrained",
        "vocabulary",
        "threshold",
        "threshold_method",
        "concepts",
    }
    return ConceptBank(
        name=str(data.get("name") or path.stem),
        sae=sae,
        concepts=concepts,
        embedding_model=data.get("embedding_model"),
        pretrained=data.get("pretrained"),
        vocabulary=data.get("vocabulary") or {},
        threshold=float(data.get("threshold") or 0.0),
        threshold_method=str(data.get("threshold_method") or ""),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _concept_from_dict(item: Any) -> Concept:
    if not isinstance(item, dict):
        raise TypeError("expected a mapping")
    name = item.get("name")
    alternatives = [(str(a[0]), float(a[1])) for a in item.get("alternatives") or []]
    return Concept(
        latent=int(item["latent"]),
        name=None if name is None else str(name),
        score=float(item.get("score", 0.0)),
        closest=str(item.get("closest") or name or ""),
        validated=bool(item.get("validated", False)),
        alternatives=alternatives,
        self_rank=None if item.get("self_rank") is None else int(item["self_rank"]),
    )
