"""The marker world for audit tests: real images through the tiny CLIP, where the label leaks
through a pasted marker in the train split and not in the test split.

Everything slow is built once (:func:`build_marker_world`, 20–30 s on 2 CPU cores once the
tiny CLIP is cached; a seed's audit then takes 0.1–0.4 s):

* a **corpus** of world scenes with every attribute independent (markers included: none,
  frame and stamp a third each), embedded with the tiny CLIP; an SAE is trained on it and its
  latents are named against its images (image-grounded naming), as a user trains an SAE on a
  generic corpus and then audits task data with it;
* a **pool** of task images: scenes of the two target shapes, a third of them with no
  marker, a third with a frame and a third with a stamp, every other attribute independent,
  embedded once.

A seed's task data for one marker (:func:`marker_task`) is then cheap:
:func:`audit.data.shortcuts.marker_shortcut_scenes` draws which shape carries the marker in
each split (95 % of the first shape and 5 % of the second in train, half of each in test),
and each drawn scene takes an unused pooled image of the same shape that carries that marker
or none (its other attributes are the pool's, which are just as independent; the task shows
no other marker). So 20 seeds cost 20 audits, not 20 renderings.

Used by the labelled audit's test (tests/fairness/test_marker_world.py) and the label-free
``discover`` test (tests/discover/test_marker_world.py), through the session fixture
``marker_world`` (tests/conftest.py): ``task.labels`` has ``target`` (1 = the first shape),
``has_marker`` (the leaking attribute), ``split`` and the scene's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from audit.concepts import ConceptBank, load_bank
from audit.sae.base import SparseAutoencoder
from audit.store import EmbeddingStore, open_store

TARGET_SHAPES = ("circle", "square")
TARGET_COLUMN = "target"
MARKER_COLUMN = "has_marker"


@dataclass
class MarkerWorld:
    sae: SparseAutoencoder
    bank: ConceptBank
    pool: EmbeddingStore  # the task images; metadata: shape, marker (none/frame/stamp), …
    corpus: Path  # the corpus store the SAE was trained on and the bank named against
    # Example: task = marker_task(build_marker_world(tmp), "frame", seed=3); then audit
    # task.store with task.labels (target "target", attribute "has_marker"), or discover
    # on task.store alone.


@dataclass
class MarkerTask:
    store: EmbeddingStore  # in memory: the seed's train + test rows
    labels: pd.DataFrame  # row-aligned: target, has_marker, split and the scene's attributes


def build_marker_world(
    root: Path,
    seed: int = 0,
    n_corpus: int = 4000,
    n_pool: int = 7200,
    sae_epochs: int = 20,
) -> MarkerWorld:
    """Embed the corpus and the pool, train the SAE and name its latents, under ``root``."""
    from audit.data import world
    from audit.data.tinyclip import tiny_clip
    from audit.demo_steps import (
        DemoSettings,
        _tiny_image_size,
        build_demo_bank,
        embed_world,
        train_demo_sae,
    )

    settings = replace(DemoSettings(), n_corpus=n_corpus, sae_epochs=sae_epochs, seed=seed)
    clip = tiny_clip().load(device="cpu")
    size = _tiny_image_size()
    corpus = world.sample_scenes(n_corpus, seed=seed + 2)
    corpus_files = world.write_world(root / "corpus", corpus, seed=seed + 2, image_size=size)
    embed_world(corpus_files, clip, root / "corpus_store", settings)
    pool = world.sample_scenes(n_pool, seed=seed + 3, shape=TARGET_SHAPES)
    pool_files = world.write_world(root / "pool", pool, seed=seed + 3, image_size=size)
    embed_world(pool_files, clip, root / "pool_store", settings)
    train_demo_sae(root / "corpus_store", root / "sae", settings, device="cpu")
    build_demo_bank(root / "sae", root / "bank.yaml", clip, probe_images=root / "corpus_store")
    from audit.sae.checkpoint import load_sae

    return MarkerWorld(
        sae=load_sae(root / "sae"),
        bank=load_bank(root / "bank.yaml"),
        pool=open_store(root / "pool_store"),
        corpus=root / "corpus_store",
    )


def marker_task(
    w: MarkerWorld, marker: str, seed: int, n_train: int = 1000, n_test: int = 2000
) -> MarkerTask:
    """One seed's train and test split where the label leaks through ``marker`` ("frame" or
    "stamp"), drawn from the pool (see the module docstring)."""
    from audit.data.shortcuts import marker_shortcut_scenes

    scenes = marker_shortcut_scenes(
        n_train, n_test, seed, marker=marker, target_shapes=TARGET_SHAPES
    )
    meta = w.pool.metadata
    assert meta is not None
    rng = np.random.default_rng([seed, 17])
    rows = np.empty(len(scenes), dtype=np.int64)
    marked = (scenes["marker"] == marker).to_numpy()
    # Unmarked scenes take unmarked images: the task shows no other marker.
    pool_kind = np.where(meta["marker"] == marker, 1, np.where(meta["marker"] == "none", 0, -1))
    for (shape, has), wanted in scenes.groupby([scenes["shape"], marked]).indices.items():
        free = np.nonzero((meta["shape"] == shape).to_numpy() & (pool_kind == int(has)))[0]
        if len(free) < len(wanted):
            raise ValueError(
                f"the pool has {len(free)} {shape}s (marked: {has}), not {len(wanted)}"
            )
        rows[wanted] = rng.choice(free, size=len(wanted), replace=False)
    labels = meta.iloc[rows].reset_index(drop=True).drop(columns=["path"], errors="ignore")
    labels[TARGET_COLUMN] = (labels["shape"] == TARGET_SHAPES[0]).astype(int)
    labels[MARKER_COLUMN] = (labels["marker"] == marker).astype(int)
    labels["split"] = scenes["split"].to_numpy()
    x = w.pool.take(rows)
    manifest = {**w.pool.manifest, "dim": x.shape[1], "count": len(x)}
    return MarkerTask(EmbeddingStore(w.pool.path, manifest, [x], labels), labels)
