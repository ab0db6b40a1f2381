"""The marker world for ``discover`` (audit/data/shortcuts.py :func:`marker_shortcut_scenes`),
many seeds from one rendering.

Built once: the tiny CLIP, an SAE trained on a 4000-scene shortcut-free corpus and named from
the world's vocabulary (as the demo does), and a *pool* of circles and squares, each with a
pasted frame half the time (``shortcut_scenes(spurious="frame", 0.5, 0.5)``), rendered and
embedded. A seed's world is then drawn from the pool with the marker world's probabilities —
train: 95 % of circles framed, 5 % of squares; test: 50 % each — which is the distribution
:func:`marker_shortcut_scenes` samples (every other attribute is independent of shape and
frame in both). A logistic-regression probe fit on the train rows leans on the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

MARKER = "frame"
SHAPES = ("circle", "square")


@dataclass(frozen=True)
class MarkerPool:
    embeddings: np.ndarray  # [N, d]
    scenes: pd.DataFrame  # the pool's manifest (shape, marker, …)
    sae: Path
    bank: Path


def build_marker_pool(root: Path, n_pool: int = 6000, seed: int = 0) -> MarkerPool:
    from audit.data import world
    from audit.data.shortcuts import shortcut_scenes
    from audit.data.tinyclip import MODEL_CONFIG, tiny_clip
    from audit.demo import DemoSettings, build_demo_bank, embed_world, make_corpus, train_demo_sae
    from audit.store import open_store

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads per process stall on a small shared CPU
    try:
        settings = replace(DemoSettings(), n_corpus=4000, sae_epochs=20)
        clip = tiny_clip().load(device="cpu")
        embed_world(make_corpus(root / "corpus", settings), clip, root / "corpus_store", settings)
        train_demo_sae(root / "corpus_store", root / "sae", settings, device="cpu")
        build_demo_bank(root / "sae", root / "bank.yaml", clip)
        scenes = shortcut_scenes(n_pool, seed, target_shapes=SHAPES, spurious=MARKER)
        size = int(MODEL_CONFIG["vision_cfg"]["image_size"])
        manifest = world.write_world(root / "pool", scenes, seed=seed, image_size=size)
        embed_world(manifest, clip, root / "pool_store", settings)
    finally:
        torch.set_num_threads(threads)
    store = open_store(root / "pool_store")
    return MarkerPool(np.asarray(store.read()), store.metadata, root / "sae", root / "bank.yaml")


def draw_marker_world(
    pool: MarkerPool, seed: int, n_train: int = 1200, n_test: int = 800
) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows of the pool forming one marker world: ``(embeddings, labels)`` with ``is_circle``
    and ``split`` (the frame is in no column)."""
    rng = np.random.default_rng([seed, 0x3A7])
    circle = (pool.scenes["shape"] == SHAPES[0]).to_numpy()
    framed = (pool.scenes["marker"] == MARKER).to_numpy()
    free = np.ones(len(circle), dtype=bool)
    rows, split = [], []
    for name, n, p_circle, p_square in (("train", n_train, 0.95, 0.05), ("test", n_test, 0.5, 0.5)):
        for is_circle, p in ((True, p_circle), (False, p_square)):
            k = n // 2
            k_framed = int(rng.binomial(k, p))
            for want, count in ((True, k_framed), (False, k - k_framed)):
                pick = np.nonzero(free & (circle == is_circle) & (framed == want))[0]
                chosen = rng.choice(pick, size=count, replace=False)
                free[chosen] = False
                rows.append(chosen)
                split += [name] * count
    index = np.concatenate(rows)
    labels = pd.DataFrame({
        "id": pool.scenes["id"].to_numpy()[index], "is_circle": circle[index].astype(int),
        "split": split,
    })  # fmt: skip
    return pool.embeddings[index], labels
