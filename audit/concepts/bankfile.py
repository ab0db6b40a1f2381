"""Concept bank files: human-readable YAML, read safely (no tags, no code) and written atomically.

A bank lives at ``concept_banks/<name>.yaml`` in the user's workspace (or any path)::

    format: msae-audit/concept-bank
    version: 2
    name: demo
    sae: {fingerprint: "sha256:…", arch: matryoshka, d_in: 64, n_latents: 512, path: …}
    embedding_model: …           # the CLIP model the text embeddings came from
    pretrained: …
    vocabulary: {sources: [...], entries: 24, sha256: …, templates: [...]}
    threshold: 0.21              # minimum text cosine for a text-only name
    threshold_method: …
    naming: {method: image, …}   # how names were chosen and validated
    concepts:                    # what the audit tests: every name, and latents grouped together
      - {name: red, validated: true, latents: [42, 427], score: 0.43,
         image: {word: red, polarity: present, selectivity: 7.9, auc: 0.99, auc_threshold: 0.97}}
      - {name: no frame, validated: true, latent: 7, score: 0.12, image: {…}}
    latents:                     # every latent's own evidence
      - {latent: 42, closest: red, score: 0.43, alternatives: [[crimson, 0.41], …], self_rank: 1,
         image: {word: red, polarity: present, selectivity: 8.1, auc: 0.97}}
    word_checks:                 # image-named banks: how the audit checks names on its images
      file: demo.words.safetensors   # beside the bank: tensor "directions" [words, d] float32
      sha256: …
      words: [{word: red, threshold: 0.031}, …]   # row i of directions; θ_w of the labels

Version 1 banks (one ``concepts`` entry per latent with its ``name`` and ``validated``; no
groups, no image evidence) still load: their concepts are the latents sharing a validated name.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from audit import __version__
from audit.concepts.bank import (
    ABSENT,
    PRESENT,
    Concept,
    ConceptBank,
    ConceptGroup,
    ImageScores,
    WordCheck,
    name_groups,
)
from audit.concepts.locations import resolve_bank
from audit.errors import InputError, first_line
from audit.fileio import (
    file_sha256,
    read_user_bytes,
    read_yaml,
    write_safetensors,
    write_text,
)

BANK_FORMAT = "msae-audit/concept-bank"
BANK_VERSION = 2
READABLE_VERSIONS = (1, 2)
_TOP_LEVEL = (
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
    "latents",
    "word_checks",
)
WORD_FILE_SUFFIX = ".words.safetensors"
WORD_TENSOR = "directions"


def save_bank(bank: ConceptBank, path: str | os.PathLike[str]) -> Path:
    """Write the bank's YAML and, when it has word checks, its word file beside it (first:
    the YAML records the file's sha256)."""
    p = Path(path)
    data = bank_to_dict(bank)
    if bank.word_checks:
        data["word_checks"] = _save_word_file(bank.word_checks, p)
    text = yaml.safe_dump(
        data,
        sort_keys=False,
        allow_unicode=True,
        width=120,
        default_flow_style=None,  # short lists (alternatives) on one line
    )
    write_text(p, text)
    return p


def bank_to_dict(bank: ConceptBank) -> dict[str, Any]:
    groups = bank.groups if bank.groups is not None else name_groups(bank.concepts)
    return {
        "format": BANK_FORMAT,
        "version": BANK_VERSION,
        "name": bank.name,
        "created_by": f"msae-audit {__version__}",
        "sae": bank.sae,
        "embedding_model": bank.embedding_model,
        "pretrained": bank.pretrained,
        "vocabulary": bank.vocabulary,
        "threshold": _round(bank.threshold),
        "threshold_method": bank.threshold_method,
        **{k: v for k, v in bank.extra.items() if k not in _TOP_LEVEL},
        "concepts": [_group_to_dict(g) for g in groups if g.name or len(g.latents) > 1],
        "latents": [_latent_to_dict(c) for c in sorted(bank.concepts, key=lambda c: c.latent)],
    }


def word_file_path(bank_path: Path) -> Path:
    """``demo.yaml`` → ``demo.words.safetensors``, beside it."""
    return bank_path.with_name(bank_path.stem + WORD_FILE_SUFFIX)


def _save_word_file(checks: dict[str, WordCheck], bank_path: Path) -> dict[str, Any]:
    import torch

    words = sorted(checks)
    directions = np.stack([np.asarray(checks[w].direction, dtype=np.float32) for w in words])
    target = word_file_path(bank_path)
    write_safetensors(target, {WORD_TENSOR: torch.from_numpy(directions)})
    return {
        "file": target.name,
        "sha256": file_sha256(target),
        "words": [{"word": w, "threshold": float(checks[w].threshold)} for w in words],
    }


def _round(value: float) -> float:
    return round(float(value), 6)


def _image_to_dict(scores: ImageScores | None) -> dict[str, Any] | None:
    if scores is None:
        return None
    out: dict[str, Any] = {
        "word": scores.word,
        "polarity": scores.polarity,
        "selectivity": _round(scores.selectivity),
    }
    if scores.auc is not None:
        out["auc"] = _round(scores.auc)
    if scores.auc_threshold is not None:
        out["auc_threshold"] = _round(scores.auc_threshold)
    return out


def _group_to_dict(group: ConceptGroup) -> dict[str, Any]:
    out: dict[str, Any] = {"name": group.name, "validated": group.validated}
    if len(group.latents) == 1:
        out["latent"] = group.latents[0]
    else:
        out["latents"] = list(group.latents)
    if group.core is not None:
        out["core"] = list(group.core)
    out["closest"] = group.closest
    out["score"] = _round(group.score)
    if group.image is not None:
        out["image"] = _image_to_dict(group.image)
    return out


def _latent_to_dict(c: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {
        "latent": c.latent,
        "closest": c.closest,
        "score": _round(c.score),
        "alternatives": [[str(n), _round(s)] for n, s in c.alternatives],
        "self_rank": c.self_rank,
    }
    if c.image is not None:
        out["image"] = _image_to_dict(c.image)
    return out


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def load_bank(
    name_or_path: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None
) -> ConceptBank:
    """Read and validate a bank file (safe YAML: no tags, no code)."""
    path = resolve_bank(name_or_path, workspace)
    data = read_yaml(path, "concept bank")
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        raise InputError(f"{path}: not a concept bank (format must be '{BANK_FORMAT}')")
    version = data.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise InputError(f"{path}: unsupported concept bank version {version!r}")
    sae = data.get("sae")
    if not isinstance(sae, dict) or "fingerprint" not in sae:
        raise InputError(f"{path}: missing 'sae.fingerprint' (which SAE the bank belongs to)")
    n_latents = sae.get("n_latents")
    if n_latents is not None and (isinstance(n_latents, bool) or not isinstance(n_latents, int)):
        raise InputError(f"{path}: sae.n_latents must be an integer, got {n_latents!r}")
    if version == 1:
        concepts, groups = _read_latents(path, data, "concepts", n_latents), None
    else:
        concepts = _read_latents(path, data, "latents", n_latents)
        groups = _read_groups(path, data, concepts)
    vocabulary = data.get("vocabulary") or {}
    if not isinstance(vocabulary, dict):
        raise InputError(f"{path}: 'vocabulary' must be a mapping")
    threshold = data.get("threshold")
    try:
        threshold = _finite(threshold if threshold is not None else 0.0, "threshold")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    model, pretrained = data.get("embedding_model"), data.get("pretrained")
    checks, missing = _read_word_checks(path, data.get("word_checks"), sae.get("d_in"))
    return ConceptBank(
        name=str(data.get("name") or path.stem),
        sae=sae,
        concepts=concepts,
        embedding_model=None if model is None else str(model),
        pretrained=None if pretrained is None else str(pretrained),
        vocabulary=vocabulary,
        threshold=threshold,
        threshold_method=str(data.get("threshold_method") or ""),
        extra={k: v for k, v in data.items() if k not in _TOP_LEVEL},
        groups=groups,
        word_checks=checks,
        missing_word_file=missing,
    )


def _read_word_checks(
    path: Path, record: Any, d_in: Any
) -> tuple[dict[str, WordCheck] | None, str | None]:
    """The bank's word checks from its word file: ``(None, name)`` when the file is not beside
    the bank (the audit notes it); a file that does not match the record is an input error."""
    if record is None:
        return None, None
    where = f"{path}: word_checks"
    if not isinstance(record, dict) or not isinstance(record.get("words"), list):
        raise InputError(f"{where} must be a mapping with a 'words' list")
    name = record.get("file")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise InputError(f"{where}.file must be a file name beside the bank, got {name!r}")
    target = path.parent / name
    if not target.is_file():
        return None, name
    blob = read_user_bytes(target, "bank word file")
    if hashlib.sha256(blob).hexdigest() != str(record.get("sha256", "")).removeprefix("sha256:"):
        raise InputError(f"{target}: does not match the sha256 the bank records (replaced?)")
    try:
        from safetensors.numpy import load

        directions = load(blob)[WORD_TENSOR]
    except Exception as exc:  # safetensors raises its own types for damaged files
        raise InputError(f"{target}: not a word file ({first_line(exc)})") from exc
    words = record["words"]
    if directions.ndim != 2 or directions.shape[0] != len(words):
        raise InputError(
            f"{target}: holds {list(directions.shape)} directions for {len(words)} words"
        )
    if isinstance(d_in, int) and directions.shape[1] != d_in:
        raise InputError(f"{target}: directions of dimension {directions.shape[1]}, not {d_in}")
    if not np.isfinite(directions).all():
        raise InputError(f"{target}: directions contain NaN or inf")
    checks = {}
    for i, item in enumerate(words):
        try:
            word = str(item["word"])
            threshold = _finite(item["threshold"], "threshold")
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{where}.words #{i} is malformed ({exc})") from exc
        checks[word] = WordCheck(word, directions[i].astype(np.float32), threshold)
    return checks, None


def _read_latents(
    path: Path, data: dict[str, Any], key: str, n_latents: int | None
) -> list[Concept]:
    raw = data.get(key)
    if not isinstance(raw, list):
        raise InputError(f"{path}: '{key}' must be a list")
    concepts = []
    seen: set[int] = set()
    for i, item in enumerate(raw):
        try:
            concept = _concept_from_dict(item)
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise InputError(f"{path}: {key} #{i} is malformed ({exc})") from exc
        if n_latents is not None and concept.latent >= n_latents:
            raise InputError(
                f"{path}: {key} #{i} names latent {concept.latent}, but the bank's SAE has "
                f"{n_latents} latents"
            )
        if concept.latent in seen:
            raise InputError(f"{path}: latent {concept.latent} is listed twice")
        seen.add(concept.latent)
        concepts.append(concept)
    return concepts


def _read_groups(path: Path, data: dict[str, Any], concepts: list[Concept]) -> list[ConceptGroup]:
    """The ``concepts`` of a version-2 bank; their names and validity go to their latents."""
    raw = data.get("concepts")
    if not isinstance(raw, list):
        raise InputError(f"{path}: 'concepts' must be a list")
    by_latent = {c.latent: c for c in concepts}
    groups = []
    owner: dict[int, int] = {}
    for i, item in enumerate(raw):
        try:
            group = _group_from_dict(item)
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise InputError(f"{path}: concept #{i} is malformed ({exc})") from exc
        for j in group.latents:
            if j not in by_latent:
                raise InputError(
                    f"{path}: concept #{i} lists latent {j}, which is not in 'latents'"
                )
            if j in owner:
                raise InputError(f"{path}: latent {j} is in concepts #{owner[j]} and #{i}")
            owner[j] = i
            by_latent[j].name = group.name
            by_latent[j].validated = group.validated
        groups.append(group)
    return groups


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _latent_index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"latent must be a non-negative integer, got {value!r}")
    return value


def _optional_bool(item: dict[str, Any], key: str) -> bool:
    value = item.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _image_from_dict(item: Any) -> ImageScores | None:
    if item is None:
        return None
    if not isinstance(item, dict):
        raise TypeError("image must be a mapping")
    polarity = item.get("polarity", PRESENT)
    if polarity not in (PRESENT, ABSENT):
        raise ValueError(f"image polarity must be '{PRESENT}' or '{ABSENT}', got {polarity!r}")
    auc, threshold = item.get("auc"), item.get("auc_threshold")
    return ImageScores(
        word=str(item["word"]),
        polarity=polarity,
        selectivity=_finite(item.get("selectivity", 0.0), "image selectivity"),
        auc=None if auc is None else _finite(auc, "image auc"),
        auc_threshold=None if threshold is None else _finite(threshold, "image auc_threshold"),
    )


def _concept_from_dict(item: Any) -> Concept:
    if not isinstance(item, dict):
        raise TypeError("expected a mapping")
    latent = _latent_index(item["latent"])
    name = item.get("name")
    alternatives = []
    for alt in item.get("alternatives") or []:
        if not isinstance(alt, (list, tuple)) or len(alt) != 2:
            raise ValueError(f"alternatives must be [name, score] pairs, got {alt!r}")
        alternatives.append((str(alt[0]), _finite(alt[1], "an alternative's score")))
    self_rank = item.get("self_rank")
    if self_rank is not None and (isinstance(self_rank, bool) or not isinstance(self_rank, int)):
        raise ValueError(f"self_rank must be an integer, got {self_rank!r}")
    return Concept(
        latent=latent,
        name=_optional_text(name),
        score=_finite(item.get("score", 0.0), "score"),
        closest=str(item.get("closest") or name or ""),
        validated=_optional_bool(item, "validated"),
        alternatives=alternatives,
        self_rank=self_rank,
        image=_image_from_dict(item.get("image")),
    )


def _group_from_dict(item: Any) -> ConceptGroup:
    if not isinstance(item, dict):
        raise TypeError("expected a mapping")
    if "latents" in item:
        raw = item["latents"]
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"latents must be a non-empty list, got {raw!r}")
        latents = tuple(_latent_index(j) for j in raw)
        if len(set(latents)) != len(latents):
            raise ValueError(f"latents are listed twice in {list(latents)}")
    else:
        latents = (_latent_index(item["latent"]),)
    name = _optional_text(item.get("name"))
    validated = _optional_bool(item, "validated")
    if validated and not name:
        raise ValueError("a validated concept needs a name")
    core = None
    if item.get("core") is not None:
        raw_core = item["core"]
        if not isinstance(raw_core, list) or not raw_core:
            raise ValueError(f"core must be a non-empty list, got {raw_core!r}")
        core = tuple(_latent_index(j) for j in raw_core)
        if not set(core) <= set(latents):
            raise ValueError(f"core {list(core)} is not part of latents {list(latents)}")
    return ConceptGroup(
        latents=latents,
        name=name,
        validated=validated,
        closest=str(item.get("closest") or name or ""),
        score=_finite(item.get("score", 0.0), "score"),
        image=_image_from_dict(item.get("image")),
        core=core,
    )
