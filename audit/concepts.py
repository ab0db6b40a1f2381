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
import hashlib
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from audit import __version__
from audit.errors import InputError
from audit.fileio import read_user_bytes, read_yaml, write_text
from audit.sae.hub import resolve_vocabulary

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

    def check_sae(
        self,
        fingerprint: str,
        sae_path: str | os.PathLike[str] | None = None,
        n_latents: int | None = None,
    ) -> None:
        """Refuse a bank built for another SAE (and, given ``n_latents``, one that names
        latents the SAE does not have)."""
        if self.fingerprint != fingerprint:
            where = f" ({sae_path})" if sae_path else ""
            raise InputError(
                f"concept bank '{self.name}' was built for another SAE "
                f"({self.sae.get('path', 'unknown path')}, {self.fingerprint}), not this one{where}; "
                "rebuild it with `msae-audit concepts`"
            )
        if n_latents is not None:
            beyond = [c.latent for c in self.concepts if c.latent >= n_latents]
            if beyond:
                raise InputError(
                    f"concept bank '{self.name}' names latent {beyond[0]}, but the SAE has "
                    f"{n_latents} latents"
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
    text = yaml.safe_dump(
        bank.to_yaml_dict(),
        sort_keys=False,
        allow_unicode=True,
        width=120,
        default_flow_style=None,  # short lists (alternatives) on one line
    )
    write_text(p, text)
    return p


def load_bank(
    name_or_path: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None
) -> ConceptBank:
    """Read and validate a bank file (safe YAML: no tags, no code)."""
    path = resolve_bank(name_or_path, workspace)
    data = read_yaml(path, "concept bank")
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT:
        raise InputError(f"{path}: not a concept bank (format must be '{BANK_FORMAT}')")
    if data.get("version") != BANK_VERSION:
        raise InputError(f"{path}: unsupported concept bank version {data.get('version')!r}")
    raw = data.get("concepts")
    if not isinstance(raw, list):
        raise InputError(f"{path}: 'concepts' must be a list")
    sae = data.get("sae")
    if not isinstance(sae, dict) or "fingerprint" not in sae:
        raise InputError(f"{path}: missing 'sae.fingerprint' (which SAE the bank belongs to)")
    n_latents = sae.get("n_latents")
    if n_latents is not None and (isinstance(n_latents, bool) or not isinstance(n_latents, int)):
        raise InputError(f"{path}: sae.n_latents must be an integer, got {n_latents!r}")
    concepts = []
    seen: set[int] = set()
    for i, item in enumerate(raw):
        try:
            concept = _concept_from_dict(item)
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise InputError(f"{path}: concept #{i} is malformed ({exc})") from exc
        if n_latents is not None and concept.latent >= n_latents:
            raise InputError(
                f"{path}: concept #{i} names latent {concept.latent}, but the bank's SAE has "
                f"{n_latents} latents"
            )
        if concept.latent in seen:
            raise InputError(f"{path}: latent {concept.latent} is listed twice")
        seen.add(concept.latent)
        concepts.append(concept)
    vocabulary = data.get("vocabulary") or {}
    if not isinstance(vocabulary, dict):
        raise InputError(f"{path}: 'vocabulary' must be a mapping")
    threshold = data.get("threshold")
    try:
        threshold = _finite(threshold if threshold is not None else 0.0, "threshold")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from exc
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
    model, pretrained = data.get("embedding_model"), data.get("pretrained")
    return ConceptBank(
        name=str(data.get("name") or path.stem),
        sae=sae,
        concepts=concepts,
        embedding_model=None if model is None else str(model),
        pretrained=None if pretrained is None else str(pretrained),
        vocabulary=vocabulary,
        threshold=threshold,
        threshold_method=str(data.get("threshold_method") or ""),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _concept_from_dict(item: Any) -> Concept:
    if not isinstance(item, dict):
        raise TypeError("expected a mapping")
    latent = item["latent"]
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 0:
        raise ValueError(f"latent must be a non-negative integer, got {latent!r}")
    name = item.get("name")
    alternatives = []
    for alt in item.get("alternatives") or []:
        if not isinstance(alt, (list, tuple)) or len(alt) != 2:
            raise ValueError(f"alternatives must be [name, score] pairs, got {alt!r}")
        alternatives.append((str(alt[0]), _finite(alt[1], "an alternative's score")))
    validated = item.get("validated", False)
    if not isinstance(validated, bool):
        raise ValueError(f"validated must be true or false, got {validated!r}")
    self_rank = item.get("self_rank")
    if self_rank is not None and (isinstance(self_rank, bool) or not isinstance(self_rank, int)):
        raise ValueError(f"self_rank must be an integer, got {self_rank!r}")
    return Concept(
        latent=latent,
        name=None if name is None else str(name),
        score=_finite(item.get("score", 0.0), "score"),
        closest=str(item.get("closest") or name or ""),
        validated=validated,
        alternatives=alternatives,
        self_rank=self_rank,
    )


# ------------------------------------------------------------------------------------------
# Vocabularies
# ------------------------------------------------------------------------------------------

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


def load_vocabulary(specs: str | os.PathLike[str] | list[str]) -> Vocabulary:
    """Built-in names or files (a list, or one string with commas between built-in names),
    merged in order with duplicates removed."""
    if isinstance(specs, (str, os.PathLike)):
        text = str(specs)
        specs = text.split(",") if "," in text and not Path(text).exists() else [text]
    builtins = builtin_vocabularies()
    entries: list[str] = []
    sources = []
    for spec in specs:
        spec = resolve_vocabulary(str(spec).strip())  # an hf: spec becomes its cached file
        path = Path(spec)
        if path.is_file() or path.suffix or "/" in spec or os.sep in spec:
            entries += read_vocabulary_file(path)
            sources.append(str(path))
        elif spec in builtins:
            entries += read_vocabulary_file(builtins[spec])
            sources.append(spec)
        else:
            names = ", ".join(builtins) or "none"
            raise InputError(
                f"unknown vocabulary {spec!r}: not a file and not a built-in ({names})"
            )
    entries = _dedupe(entries)
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return Vocabulary(entries, sources, "sha256:" + digest[:32])


def vocabulary_embeddings(
    vocab: Vocabulary,
    encode: Callable[[list[str]], np.ndarray],
    templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES,
) -> np.ndarray:
    """Raw text embeddings ``[V, d]``: each entry wrapped in every template, embedded, the
    unit-normalised template embeddings averaged (the usual CLIP prompt ensemble) and the
    mean rescaled to the entry's mean raw norm, so rows stay in raw embedding space."""
    templates = validate_templates(templates)
    total = None
    norms = None
    for template in templates:
        emb = np.asarray(encode([template.format(e) for e in vocab.entries]), dtype=np.float32)
        n = np.linalg.norm(emb, axis=1, keepdims=True)
        unit = emb / np.maximum(n, 1e-12)
        total = unit if total is None else total + unit
        norms = n if norms is None else norms + n
    assert total is not None and norms is not None
    mean_dir = total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
    return (mean_dir * (norms / len(templates))).astype(np.float32)


def validate_templates(templates: tuple[str, ...] | list[str]) -> list[str]:
    out = [str(t) for t in templates]
    if not out:
        raise InputError("at least one prompt template is needed (e.g. '{}')")
    for t in out:
        if t.count("{}") != 1 or "{" in t.replace("{}", "") or "}" in t.replace("{}", ""):
            raise InputError(f"prompt template {t!r} must contain exactly one '{{}}' placeholder")
    return out


def read_text_embeddings(path: str | os.PathLike[str], vocab: Vocabulary, dim: int) -> np.ndarray:
    """Precomputed text embeddings row-aligned with ``vocab`` (a ``.npy`` or an embedding store
    from ``msae-audit embed texts``); rows and dimension are checked."""
    from audit.store import open_store

    store = open_store(path)
    if store.dim != dim:
        raise InputError(
            f"{path}: text embeddings have dimension {store.dim}, but the SAE expects {dim}"
        )
    if store.count != len(vocab):
        raise InputError(
            f"{path}: {store.count} text embeddings for {len(vocab)} vocabulary entries "
            "(rows must align with the vocabulary after blank lines, comments and duplicates "
            "are removed; `msae-audit embed texts VOCAB` writes exactly these rows)"
        )
    if store.metadata is not None and "text" in store.metadata.columns:
        texts = store.metadata["text"].astype(str).tolist()
        for i, (a, b) in enumerate(zip(texts, vocab.entries, strict=True)):
            if a != b:
                raise InputError(
                    f"{path}: row {i} embeds {a!r} but the vocabulary's entry {i} is {b!r}"
                )
    emb = store.read()
    if not np.isfinite(emb).all():
        raise InputError(f"{path}: text embeddings contain NaN or inf")
    return emb


# ------------------------------------------------------------------------------------------
# Naming
# ------------------------------------------------------------------------------------------

#: Random directions used to set the default threshold, and the quantile taken.
NULL_DIRECTIONS = 2000
NULL_QUANTILE = 0.99
DEFAULT_TOP_M = 5
DEFAULT_ALTERNATIVES = 5


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _bf16_is_faster(device: torch.device) -> bool:
    """Whether a bf16 matmul beats fp32 here (CPUs with AMX/AVX512-BF16 do; others do not)."""
    if device.type != "cpu":
        return False
    a = torch.randn(256, 512)
    b = torch.randn(512, 2048)
    timings = []
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            x @ y
        timings.append(time.perf_counter() - start)
    return timings[1] < 0.6 * timings[0]


def top_matches(
    directions: np.ndarray | torch.Tensor,
    texts: np.ndarray | torch.Tensor,
    k: int,
    *,
    chunk_rows: int | None = None,
    screen: str = "auto",
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each direction, the ``k`` most cosine-similar text rows: ``(scores, indices)``,
    both ``[n, k]``, best first.

    The ``[n, V]`` similarity matrix is never held whole: rows are processed in chunks and
    only each chunk's top entries are kept. With ``screen="bf16"`` (chosen by ``"auto"`` on
    CPUs where bf16 matmuls are faster) a chunk is first scored in bf16, the best ``k + 16``
    candidates are re-scored exactly in fp32 and re-ranked; reported scores are always fp32.
    """
    dev = torch.device(device)
    # np.array copies: inputs may be read-only memory maps.
    d = torch.as_tensor(np.array(directions, dtype=np.float32), device=dev)
    t = _unit(torch.as_tensor(np.array(texts, dtype=np.float32), device=dev))
    n, v = d.shape[0], t.shape[0]
    k = max(1, min(int(k), v))
    if screen == "auto":
        screen = "bf16" if _bf16_is_faster(dev) else "fp32"
    if screen not in ("fp32", "bf16"):
        raise InputError(f"unknown screening precision {screen!r}")
    candidates = min(v, k + 16) if screen == "bf16" else k
    if chunk_rows is None:
        # ~256 MB of similarities per chunk.
        chunk_rows = max(64, min(8192, (1 << 26) // max(v, 1)))
    t_screen = t.to(torch.bfloat16) if screen == "bf16" else t
    scores = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    with torch.no_grad():
        for lo in range(0, n, chunk_rows):
            hi = min(lo + chunk_rows, n)
            block = _unit(d[lo:hi])
            sims = block.to(t_screen.dtype) @ t_screen.T
            _, idx = torch.topk(sims, candidates, dim=1)
            if screen == "bf16":
                # Exact fp32 re-scoring of the candidates (elementwise: no reduced precision).
                exact = (block.unsqueeze(1) * t[idx]).sum(-1)
                vals, order = torch.topk(exact, k, dim=1)
                idx = torch.gather(idx, 1, order)
            else:
                vals = torch.gather(sims, 1, idx)
            scores[lo:hi] = vals.float().cpu().numpy()
            indices[lo:hi] = idx.cpu().numpy()
            if progress is not None:
                progress(hi, n)
    return scores, indices


def random_direction_threshold(
    texts: np.ndarray,
    basis_from: np.ndarray,
    *,
    n_directions: int = NULL_DIRECTIONS,
    quantile: float = NULL_QUANTILE,
    seed: int = 0,
    screen: str = "auto",
) -> tuple[float, np.ndarray]:
    """The default naming threshold: the ``quantile`` of the best cosine that random unit
    directions reach against the same vocabulary.

    The directions are isotropic Gaussian draws projected onto the span of ``basis_from`` (the
    decoder directions), so a dictionary confined to a subspace is compared with random
    directions in that subspace. Returns ``(threshold, best cosine of each random direction)``.
    """
    rng = np.random.default_rng(seed)
    dim = basis_from.shape[1]
    draws = rng.standard_normal((n_directions, dim)).astype(np.float32)
    # The rows' span: eigenvectors of the d×d Gram matrix with non-negligible eigenvalues
    # (cheaper than an SVD of the [n, d] dictionary).
    basis = torch.as_tensor(np.array(basis_from, dtype=np.float32))
    basis = basis / basis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    eigenvalues, eigenvectors = torch.linalg.eigh((basis.T @ basis).double())
    keep = eigenvalues > eigenvalues.max().clamp_min(1e-30) * 1e-10
    if int(keep.sum()) < dim:
        span = eigenvectors[:, keep].float().numpy()
        draws = (draws @ span) @ span.T
    best, _ = top_matches(draws, texts, 1, screen=screen)
    return float(np.quantile(best[:, 0], quantile)), best[:, 0]


def typical_input_norm(sae: Any) -> float:
    """√(‖μ‖² + d/s²): the RMS norm of the SAE's training inputs (E‖x − μ‖² = d/s²)."""
    mean = sae.mean.detach().float()
    return float(torch.sqrt(mean.pow(2).sum() + sae.d_in / sae.scale.detach().float() ** 2))


def self_ranks(
    sae: Any,
    word_embeddings: np.ndarray,
    latents: np.ndarray,
    word_index: np.ndarray | None = None,
    chunk_rows: int = 512,
) -> np.ndarray:
    """For each (word, latent) pair, the latent's rank among the word's own SAE activations
    (1 = strongest); 0 when the latent does not fire on it.

    The pair's word is ``word_embeddings[word_index[i]]`` (or row ``i`` without
    ``word_index``); pairs are processed sorted by word so that a word named on many latents
    is encoded once per chunk. Text and image embeddings of CLIP have different norms, so each
    text embedding is first rescaled to the SAE's typical input norm
    (:func:`typical_input_norm`).
    """
    latents = np.asarray(latents, dtype=np.int64)
    words = np.arange(len(latents)) if word_index is None else np.asarray(word_index)
    ranks = np.zeros(len(latents), dtype=np.int64)
    if not len(latents):
        return ranks
    device = sae.W_dec.device
    target = typical_input_norm(sae)
    order = np.argsort(words, kind="stable")
    with torch.no_grad():
        for lo in range(0, len(order), chunk_rows):
            pairs = order[lo : lo + chunk_rows]
            unique, inverse = np.unique(words[pairs], return_inverse=True)
            x = torch.as_tensor(np.array(word_embeddings[unique], dtype=np.float32), device=device)
            z = sae.encode(_unit(x) * target)[torch.as_tensor(inverse, device=device)]
            cols = torch.as_tensor(latents[pairs], device=device)
            own = z.gather(1, cols[:, None])
            rank = (z > own).sum(1) + 1
            rank = torch.where(own[:, 0] > 0, rank, torch.zeros_like(rank))
            ranks[pairs] = rank.cpu().numpy()
    return ranks


@dataclass
class NamingResult:
    bank: ConceptBank
    null_scores: np.ndarray
    seconds: dict[str, float]


def name_latents(
    sae: Any,
    vocab: Vocabulary,
    text_embeddings: np.ndarray,
    *,
    bank_name: str,
    sae_info: dict[str, Any],
    threshold: float | None = None,
    top_m: int = DEFAULT_TOP_M,
    alternatives: int = DEFAULT_ALTERNATIVES,
    embedding_model: str | None = None,
    pretrained: str | None = None,
    text_source: dict[str, Any] | None = None,
    screen: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> NamingResult:
    """Name every latent of ``sae`` from ``vocab`` and validate the names (SPEC §6).

    * Similarity: cosine between the latent's decoder direction in raw space,
      ``W_dec[j] / s``, and each entry's text embedding; the name is the best entry, with the
      next ``alternatives`` kept.
    * (a) Threshold: the score must reach ``threshold``; by default the 99th percentile of
      the best score of 2000 random directions (:func:`random_direction_threshold`).
    * (b) Self-consistency: the named word's own text embedding, passed through the SAE, must
      activate the latent among its ``top_m`` strongest latents.

    A latent below the threshold is unnamed and keeps its closest entry; a named latent is
    *validated* when it also passes (b).
    """
    if text_embeddings.shape != (len(vocab), sae.d_in):
        raise InputError(
            f"text embeddings have shape {list(text_embeddings.shape)}, expected "
            f"[{len(vocab)}, {sae.d_in}] (vocabulary entries × SAE input dimension)"
        )
    if top_m < 1:
        raise InputError(f"--top-m must be at least 1, got {top_m}")
    timings: dict[str, float] = {}
    directions = sae.decoder_directions().detach().float().cpu().numpy()
    started = time.perf_counter()
    scores, indices = top_matches(
        directions, text_embeddings, alternatives + 1, screen=screen, progress=progress
    )
    timings["similarity"] = time.perf_counter() - started

    started = time.perf_counter()
    null_scores = np.zeros(0, dtype=np.float32)
    if threshold is None:
        threshold, null_scores = random_direction_threshold(
            text_embeddings, directions, screen=screen
        )
        method = (
            f"q{NULL_QUANTILE:g} of the best cosine of {NULL_DIRECTIONS} random unit directions "
            "(isotropic in the decoder span, seed 0) against this vocabulary"
        )
    else:
        method = "given by the user (--threshold)"
    timings["threshold"] = time.perf_counter() - started

    started = time.perf_counter()
    best = indices[:, 0]
    named = scores[:, 0] >= threshold
    named_latents = np.nonzero(named)[0]
    ranks = np.zeros(sae.n_latents, dtype=np.int64)
    ranks[named_latents] = self_ranks(
        sae, text_embeddings, named_latents, word_index=best[named_latents]
    )
    timings["self_consistency"] = time.perf_counter() - started

    concepts = []
    for j in range(sae.n_latents):
        entry = vocab.entries[int(best[j])]
        is_named = bool(named[j])
        rank = int(ranks[j]) if is_named and ranks[j] > 0 else None
        concepts.append(
            Concept(
                latent=j,
                name=entry if is_named else None,
                score=float(scores[j, 0]),
                closest=entry,
                validated=bool(is_named and rank is not None and rank <= top_m),
                alternatives=[
                    (vocab.entries[int(i)], float(s))
                    for i, s in zip(indices[j, 1:], scores[j, 1:], strict=True)
                ],
                self_rank=rank,
            )
        )
    n_named = int(named.sum())
    n_valid = sum(c.validated for c in concepts)
    bank = ConceptBank(
        name=bank_name,
        sae=sae_info,
        concepts=concepts,
        embedding_model=embedding_model,
        pretrained=pretrained,
        vocabulary={
            "sources": vocab.sources,
            "entries": len(vocab),
            "sha256": vocab.sha256,
            **(text_source or {}),
        },
        threshold=float(threshold),
        threshold_method=method,
        extra={
            "similarity": "cosine(W_dec[j] / s, text embedding of the entry)",
            "validation": {
                "top_m": int(top_m),
                "rule": "score >= threshold and the name's text embedding (rescaled to the SAE's "
                "typical input norm) activates the latent among its top_m latents",
            },
            "summary": {
                "latents": int(sae.n_latents),
                "named": n_named,
                "validated": int(n_valid),
                "unique_validated_names": len({c.name for c in concepts if c.validated}),
            },
        },
    )
    return NamingResult(bank, null_scores, timings)


def sae_description(sae: Any, sae_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a bank records about the SAE it was built from."""
    from audit.sae import sae_fingerprint

    cfg = sae.cfg
    return {
        "fingerprint": sae_fingerprint(sae),
        "path": str(Path(sae_path).resolve()),
        "arch": cfg.arch,
        "d_in": int(cfg.d_in),
        "n_latents": int(cfg.n_latents),
        "embedding_model": cfg.embedding_model,
        "pretrained": cfg.pretrained,
        "modality": cfg.modality,
    }


def build_bank(
    *,
    sae_path: str | os.PathLike[str],
    vocab_specs: list[str],
    bank_name: str,
    model: str | None = None,
    pretrained: str | None = None,
    text_embeddings: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    templates: tuple[str, ...] = DEFAULT_TEMPLATES,
    top_m: int = DEFAULT_TOP_M,
    alternatives: int = DEFAULT_ALTERNATIVES,
    device: str = "auto",
    clip: Any = None,
    log: Callable[[str], None] | None = None,
) -> NamingResult:
    """Everything ``msae-audit concepts`` does before writing the bank.

    Text embeddings come from ``text_embeddings`` (precomputed, row-aligned with the
    vocabulary), from an already loaded ``clip`` encoder, or from ``model``/``pretrained``
    (defaulting to the model recorded with the SAE).
    """
    from audit.sae import load_sae

    say = log or (lambda message: None)
    sae = load_sae(sae_path)
    vocab = load_vocabulary(vocab_specs)
    templates = tuple(validate_templates(templates))
    started = time.perf_counter()
    if text_embeddings is not None:
        if model is not None or clip is not None:
            raise InputError("give either --text-embeddings or --model/--pretrained, not both")
        emb = read_text_embeddings(text_embeddings, vocab, sae.d_in)
        embedding_model, embedding_pretrained = sae.cfg.embedding_model, sae.cfg.pretrained
        text_source = {"text_embeddings": str(Path(text_embeddings).resolve()), "templates": None}
    else:
        if clip is None:
            from audit.encoders import load_clip

            model = model or sae.cfg.embedding_model
            pretrained = pretrained or sae.cfg.pretrained
            if not model:
                raise InputError(
                    "the SAE records no embedding model: pass --model and --pretrained, "
                    "or --text-embeddings"
                )
            say(f"loading {model} ({pretrained}) to embed {len(vocab)} entries")
            clip = load_clip(model, pretrained, device=device)
        if clip.embed_dim != sae.d_in:
            raise InputError(
                f"the text model gives {clip.embed_dim}-dimensional embeddings but the SAE "
                f"expects {sae.d_in}: is this the model the SAE was trained for?"
            )
        emb = vocabulary_embeddings(vocab, clip.encode_texts, templates)
        embedding_model, embedding_pretrained = clip.model_id, clip.pretrained
        text_source = {"templates": list(templates)}
    text_seconds = time.perf_counter() - started
    result = name_latents(
        sae,
        vocab,
        emb,
        bank_name=bank_name,
        sae_info=sae_description(sae, sae_path),
        threshold=threshold,
        top_m=top_m,
        alternatives=alternatives,
        embedding_model=embedding_model,
        pretrained=embedding_pretrained,
        text_source=text_source,
    )
    result.seconds["text_embeddings"] = text_seconds
    return result
