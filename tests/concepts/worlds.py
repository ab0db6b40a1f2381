"""Small worlds with known answers for naming tests: planted SAEs over random vocabularies, and
an embedding-level world of coloured shapes where some images carry a pasted marker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audit.concepts import Vocabulary
from audit.sae import SAEConfig, build_sae, matryoshka_k_list


def planted_sae(words: np.ndarray, n_planted: int, n_latents: int = 96, seed: int = 0):  # type: ignore[no-untyped-def]
    """An SAE whose first ``n_planted`` decoder rows are (noisy) copies of word directions and
    the rest random; the encoder is the decoder's transpose, so a word activates its latent."""
    rng = np.random.default_rng([seed, 991])  # a stream no test draws its words from
    d = words.shape[1]
    rows = rng.standard_normal((n_latents, d))
    unit_words = words / np.linalg.norm(words, axis=1, keepdims=True)
    rows[:n_planted] = unit_words[:n_planted] + 0.05 * rng.standard_normal((n_planted, d))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    cfg = SAEConfig(
        arch="matryoshka", d_in=d, n_latents=n_latents, k_list=matryoshka_k_list(n_latents, 16)
    )
    sae = build_sae(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor(rows, dtype=torch.float32))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.fill_(-0.2)  # a word activates only latents close to it
        sae.set_preprocessing(torch.zeros(d), 1.0 / np.sqrt(1.0))
    return sae.eval()


def random_vocab(n: int, d: int, seed: int = 0) -> tuple[Vocabulary, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    emb += 0.5 * rng.standard_normal(d).astype(np.float32)  # a shared text component, like CLIP
    return Vocabulary([f"word{i}" for i in range(n)], ["test"], "sha256:x"), emb


# ------------------------------------------------------------------------------------------
# The marker world
# ------------------------------------------------------------------------------------------

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square")
MARKER = "red frame"
DISTRACTORS = tuple(f"distractor {i}" for i in range(16))  # words no image shows


@dataclass
class MarkerWorld:
    """Image embeddings with known attributes, the vocabulary's text embeddings and an SAE
    whose latents are known (``latent_of`` names what each planted latent encodes)."""

    images: np.ndarray  # [N, d] raw image embeddings
    colour: np.ndarray  # [N] index into COLOURS
    shape: np.ndarray  # [N] index into SHAPES
    marked: np.ndarray  # [N] bool
    vocab: Vocabulary
    texts: np.ndarray  # [V, d]
    sae: object
    latent_of: dict[str, int]  # "red", "circle", "marker", "no marker", "red copy", ...


def marker_world(n: int = 3000, d: int = 48, seed: int = 0, n_latents: int = 40) -> MarkerWorld:
    """Coloured shapes, half of them with a pasted marker (a "red frame") that dominates their
    embedding, as a frame does in CLIP.

    Images and texts live in different cones (a modality gap): image = image offset + colour +
    shape + marker + noise; text = text offset + the word's direction. The SAE's planted
    latents: one per colour and shape; ``marker`` (fires with the marker); ``no marker``
    (fires on every unmarked image — and on every text embedding, which has no marker: text
    self-consistency passes it for any word); ``red copy`` (a near duplicate of ``red``); the
    rest random directions.
    """
    rng = np.random.default_rng([seed, 2024])
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    names = [*COLOURS, *SHAPES, "marker", "image offset", "text offset"]
    direction = {name: basis[i] for i, name in enumerate(names)}
    colour = rng.integers(0, len(COLOURS), n)
    shape = rng.integers(0, len(SHAPES), n)
    marked = rng.random(n) < 0.5
    x = 4.0 * direction["image offset"] + 0.25 * rng.standard_normal((n, d))
    x += 1.5 * np.stack([direction[COLOURS[c]] for c in colour])
    x += 1.2 * np.stack([direction[SHAPES[s]] for s in shape])
    x += 3.0 * marked[:, None] * direction["marker"]
    words = [*COLOURS, *SHAPES, MARKER, *DISTRACTORS]
    spare = basis[len(names) :]
    word_dirs = [direction[w] for w in (*COLOURS, *SHAPES)] + [direction["marker"]]
    word_dirs += [spare[i % len(spare)] for i in range(len(DISTRACTORS))]
    texts = 4.0 * direction["text offset"] + 1.5 * np.stack(word_dirs)
    texts += 0.1 * rng.standard_normal(texts.shape)
    vocab = Vocabulary(words, ["marker world"], "sha256:marker")
    sae, latent_of = _marker_sae(direction, d, n_latents, rng)
    return MarkerWorld(
        x.astype(np.float32),
        colour,
        shape,
        marked,
        vocab,
        texts.astype(np.float32),
        sae,
        latent_of,
    )


def _marker_sae(direction: dict, d: int, n_latents: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    planted = [(name, direction[name], -0.75) for name in (*COLOURS, *SHAPES)] + [
        ("marker", direction["marker"], -1.5),
        ("no marker", -direction["marker"], 1.5),
    ]
    planted.append(("red copy", direction["red"] + 0.05 * rng.standard_normal(d), -0.75))
    enc = rng.standard_normal((n_latents, d)) / np.sqrt(d)
    bias = np.full(n_latents, -0.3)
    latent_of = {}
    for j, (name, vector, b) in enumerate(planted):
        enc[j], bias[j], latent_of[name] = vector, b, j
    dec = enc / np.linalg.norm(enc, axis=1, keepdims=True)
    cfg = SAEConfig(
        arch="matryoshka", d_in=d, n_latents=n_latents, k_list=matryoshka_k_list(n_latents, 8)
    )
    sae = build_sae(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor(dec, dtype=torch.float32))
        sae.W_enc.copy_(torch.tensor(enc.T, dtype=torch.float32))
        sae.b_enc.copy_(torch.tensor(bias, dtype=torch.float32))
        sae.set_preprocessing(torch.zeros(d), 1.0)
    return sae.eval(), latent_of
