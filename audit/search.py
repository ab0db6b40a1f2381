"""Concept-based similarity search with concept manipulation (the paper's §5.2 use case).

A query embedding ``x`` is encoded by the SAE, the named concepts' latents are edited, and the
edit is applied *keeping the SAE's residual*::

    x' = x + post(dec(z')) − post(dec(z)),     z = enc(x),  z' = z with z_j := v_j

so the parts of ``x`` the SAE does not reconstruct are untouched (as in the audit's
ablations, never re-encoding after the edit). Neighbours are then retrieved by exact cosine
similarity over the gallery, in chunks, so millions of rows never need a full similarity
matrix in memory.

A concept name resolves through the bank to every latent carrying it (validated or not; a
colour of the demo world has several). Edit values are in units of the concept's *typical
code*: each of its latents' mean activation over the gallery rows where the concept is clearly
on (its summed activation above 10 % of its largest). ``--set "red=2"`` sets the red latents to
twice that code, ``--remove red`` sets them to 0. The code is the concept's, not each latent's:
an SAE that splits a colour over more latents (one per shape, say) fires only some of them on
any one image, and setting every one to its own typical strength would add the colour several
times over, and the shapes of its split latents with it (the query's own shape is then lost).
How far a value moves the neighbours depends on how much of the concept the named latents
carry: in the demo world a colour needs 4–10 (docs/search.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from audit.concepts import ConceptBank
from audit.errors import InputError
from audit.sae.base import SparseAutoencoder
from audit.store import EmbeddingStore

DEFAULT_CHUNK_ROWS = 1 << 16
RowProgress = Callable[[int, int], None]  # (gallery rows done, rows in this pass)


@dataclass(frozen=True)
class ConceptEdit:
    name: str
    latents: tuple[int, ...]
    strength: float  # in units of the latents' typical strength; 0 removes the concept


@dataclass
class SearchResult:
    indices: np.ndarray  # [k] gallery rows, best first
    similarities: np.ndarray  # [k] cosine similarities
    activations: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # concept -> [k] summed activation


def check_gallery(store: EmbeddingStore, sae: SparseAutoencoder, bank: ConceptBank) -> None:
    """Refuse a gallery embedded with another CLIP than the SAE and the bank were built on.

    Compares the CLIP model and weights each one records (a plain ``.npy`` records none and is
    only checked for its dimension): an SAE's latents mean nothing on another model's
    embeddings, even of the same width.
    """
    where = f"gallery {store.path}"
    store.check_model(
        sae.cfg.embedding_model, sae.cfg.pretrained, "the SAE was trained on", "gallery"
    )
    store.check_model(
        bank.embedding_model, bank.pretrained, "the concept bank was named with", "gallery"
    )
    if store.dim != sae.d_in:
        raise InputError(f"{where} has dimension {store.dim} but the SAE expects {sae.d_in}")


def parse_edits(
    bank: ConceptBank, set_specs: list[str], remove: list[str]
) -> list[tuple[str, list[int], float]]:
    """``["blond hair=2.0"]`` and ``["eyeglasses"]`` → ``(name, latents, strength)`` triples;
    a concept named twice (or two names sharing a latent) is refused: which edit wins would
    depend on the order of the options."""
    edits = []
    for spec in set_specs:
        if "=" not in spec:
            raise InputError(f"--set expects NAME=VALUE, got {spec!r}")
        name, _, value = spec.rpartition("=")
        try:
            strength = float(value)
        except ValueError as exc:
            raise InputError(f"--set {spec!r}: {value!r} is not a number") from exc
        if not np.isfinite(strength):
            raise InputError(f"--set {spec!r}: the value must be finite")
        edits.append((name.strip(), bank.resolve(name), strength))
    for name in remove:
        edits.append((name.strip(), bank.resolve(name), 0.0))
    seen: dict[int, str] = {}
    for name, latents, _ in edits:
        for j in latents:
            if j in seen:
                raise InputError(
                    f"'{name}' and '{seen[j]}' are both edited and share latent {j} (or are "
                    "the same concept): edit each concept once"
                )
        seen.update(dict.fromkeys(latents, name))
    return edits


@torch.no_grad()
def typical_strength(
    sae: SparseAutoencoder,
    store: EmbeddingStore,
    latents: list[int],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_rows: int = 200_000,
    on_fraction: float = 0.1,
    progress: RowProgress | None = None,
    edit: str | None = None,
) -> np.ndarray:
    """The typical code of the concept made of ``latents``: each latent's mean activation over
    the gallery rows where the *concept* is on (its summed activation above ``on_fraction`` ×
    its largest).

    A concept split over several latents (a colour with one latent per shape) gets each latent
    at the share it has in a real image of the concept, so the code sums to the concept's
    typical activation however many latents carry it. For one latent this is its mean where it
    is on; a concept never on gets 1 for each latent — unless ``edit`` (the option that scales
    it) is given: an edit in units of a code that does not exist is refused.
    """
    idx = torch.as_tensor(latents, dtype=torch.long, device=sae.W_enc.device)
    stop = min(store.count, max_rows)
    blocks = []
    for lo, b in store.iter_chunks(chunk_rows, stop=stop):
        store.check_block_finite(lo, b)  # a NaN code would make every strength NaN
        blocks.append(sae.encode(torch.from_numpy(b).to(idx.device))[:, idx].double().cpu())
        if progress is not None:
            progress(lo + len(b), stop)
    z = torch.cat(blocks) if blocks else torch.zeros((0, len(latents)), dtype=torch.float64)
    total = z.sum(1)
    peak = float(total.max()) if len(total) else 0.0
    if peak <= 0:
        if edit is not None:
            raise InputError(
                f"{edit}: the concept is active on no gallery row, so it has no typical "
                "strength to scale; search a gallery where it appears"
            )
        return np.ones(len(latents))
    return z[total > on_fraction * peak].mean(0).numpy()


@torch.no_grad()
def edit_embeddings(
    sae: SparseAutoencoder, x: torch.Tensor, edits: list[ConceptEdit], strengths: dict[int, float]
) -> torch.Tensor:
    """Apply the edits to ``x`` [q, d] keeping the SAE residual (never re-encoding)."""
    z = sae.encode(x)
    z_edit = z.clone()
    for edit in edits:
        for j in edit.latents:
            z_edit[:, j] = edit.strength * strengths.get(j, 1.0)
    return x + sae.decode(z_edit) - sae.decode(z)


@torch.no_grad()
def nearest_neighbours(
    store: EmbeddingStore,
    queries: torch.Tensor,
    top: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exclude: list[int | None] | None = None,
    progress: RowProgress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``top`` cosine neighbours of each query over the gallery, chunk by chunk.

    Returns ``(indices [q, top], similarities [q, top])``, best first. ``exclude[i]`` is a row
    left out for query ``i`` (the query itself when searching by row).
    """
    q = torch.nn.functional.normalize(queries.float(), dim=1)
    n_queries = q.shape[0]
    top = min(top, store.count - (1 if exclude and any(e is not None for e in exclude) else 0))
    if top <= 0:
        raise InputError("the gallery is empty")
    best_sims = torch.full((n_queries, 0), -2.0)
    best_idx = torch.zeros((n_queries, 0), dtype=torch.long)
    for lo, block in store.iter_chunks(chunk_rows):
        # A NaN row would rank as "nan" similarity (and break the JSON): refuse the gallery.
        store.check_block_finite(lo, block)
        g = torch.nn.functional.normalize(torch.from_numpy(block).to(q.device), dim=1)
        sims = (q @ g.T).cpu()
        if exclude:
            for i, row in enumerate(exclude):
                if row is not None and lo <= row < lo + len(block):
                    sims[i, row - lo] = -3.0
        k = min(top, sims.shape[1])
        chunk_sims, chunk_idx = torch.topk(sims, k, dim=1)
        merged_sims = torch.cat([best_sims, chunk_sims], dim=1)
        merged_idx = torch.cat([best_idx, chunk_idx + lo], dim=1)
        keep = torch.topk(merged_sims, min(top, merged_sims.shape[1]), dim=1)
        best_sims = keep.values
        best_idx = torch.gather(merged_idx, 1, keep.indices)
        if progress is not None:
            progress(lo + len(block), store.count)
    return best_idx.numpy(), best_sims.numpy()


@torch.no_grad()
def concept_activations(
    sae: SparseAutoencoder, store: EmbeddingStore, rows: np.ndarray, edits: list[ConceptEdit]
) -> dict[str, np.ndarray]:
    """Each edited concept's (summed) activation on the given gallery rows."""
    x = torch.from_numpy(store.take(rows)).to(sae.W_enc.device)
    z = sae.encode(x).cpu()
    return {e.name: z[:, list(e.latents)].sum(1).numpy() for e in edits}


def run_search(
    sae: SparseAutoencoder,
    store: EmbeddingStore,
    bank: ConceptBank,
    query: torch.Tensor,
    set_specs: list[str],
    remove: list[str],
    top: int = 20,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exclude_row: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Neighbours of ``query`` [1, d] before and after the concept edits, as a JSON-ready dict.

    ``progress(stage, rows done, rows total)`` follows the passes over the gallery.
    """

    def stage(name: str) -> RowProgress | None:
        return (lambda done, total: progress(name, done, total)) if progress else None

    parsed = parse_edits(bank, set_specs, remove)
    edits = [ConceptEdit(name, tuple(latents), strength) for name, latents, strength in parsed]
    strengths = _edit_strengths(sae, store, edits, chunk_rows, stage)
    device = sae.W_enc.device
    x = query.to(device).float()
    edited = edit_embeddings(sae, x, edits, strengths) if edits else x
    # One pass over the gallery for both queries: row i of the result is query i's.
    exclude = [exclude_row, exclude_row] if exclude_row is not None else None
    indices, sims = nearest_neighbours(
        store, torch.cat([x, edited]), top, chunk_rows, exclude, progress=stage("search")
    )
    (before_idx, after_idx), (before_sims, after_sims) = indices, sims
    z_query = sae.encode(x).detach().cpu()
    z_edited = sae.encode(edited).detach().cpu()

    return {
        "schema": "msae-audit/search",
        "gallery": {"path": str(store.path), "count": store.count, "model": store.model},
        "sae": {"fingerprint": bank.fingerprint, "arch": sae.cfg.arch, "n_latents": sae.n_latents},
        "bank": bank.name,
        "edits": [
            {
                "name": e.name,
                "latents": list(e.latents),
                "strength": e.strength,
                "typical_strength": [round(float(strengths[j]), 6) for j in e.latents],
                "query_activation": round(float(z_query[0, list(e.latents)].sum()), 6),
                "edited_activation": round(float(z_edited[0, list(e.latents)].sum()), 6),
            }
            for e in edits
        ],
        "cosine_query_to_edited": round(
            float(torch.nn.functional.cosine_similarity(x, edited).item()), 6
        ),
        "before": _neighbour_rows(sae, store, edits, before_idx, before_sims),
        "after": _neighbour_rows(sae, store, edits, after_idx, after_sims),
    }


def _edit_strengths(
    sae: SparseAutoencoder,
    store: EmbeddingStore,
    edits: list[ConceptEdit],
    chunk_rows: int,
    stage: Callable[[str], RowProgress | None],
) -> dict[int, float]:
    """Each edit's latents at their share of its concept's typical code (a latent two edited
    concepts share takes the later one's value, as the edit itself does)."""
    strengths: dict[int, float] = {}
    for e in edits:
        typical = typical_strength(
            sae, store, list(e.latents), chunk_rows, progress=stage(f"typical {e.name}"),
            edit=f"--set {e.name}={e.strength:g}" if e.strength != 0 else None,
        )  # fmt: skip
        strengths.update(zip(e.latents, typical.tolist(), strict=True))
    return strengths


def _neighbour_rows(
    sae: SparseAutoencoder,
    store: EmbeddingStore,
    edits: list[ConceptEdit],
    indices: np.ndarray,
    sims: np.ndarray,
) -> list[dict]:
    """One query's neighbours as JSON rows: rank, gallery row, similarity, the edited
    concepts' activations, and the row's ``id``/``path`` where the metadata has them."""
    acts = concept_activations(sae, store, indices, edits)
    out = []
    for rank, (i, s) in enumerate(zip(indices.tolist(), sims.tolist(), strict=True), start=1):
        item = {
            "rank": rank,
            "row": int(i),
            "similarity": round(float(s), 6),
            "activations": {e.name: round(float(acts[e.name][rank - 1]), 6) for e in edits},
        }
        if store.metadata is not None:
            for key in ("id", "path"):
                if key in store.metadata.columns:
                    value = store.metadata[key].iloc[int(i)]
                    item[key] = value.item() if hasattr(value, "item") else value
        out.append(item)
    return out
