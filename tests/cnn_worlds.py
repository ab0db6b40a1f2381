"""The demo's task world with image models whose bias is known, built like the demo, smaller.

:func:`build_cnn_audit_world` renders the circle-vs-square world (train: circles red 95 % of
the time, squares 5 %; test: balanced), embeds it with the tiny CLIP, trains a Matryoshka SAE
on a 4000-scene corpus (20 epochs: the demo's number of steps), names its latents from the
world's vocabulary, and trains and exports the biased and the balanced CNN
(:mod:`audit.data.cnn_world`). About a minute once the tiny CLIP is cached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class CNNAuditWorld:
    root: Path
    store: Path
    sae: Path
    bank: Path
    biased: Path  # TorchScript
    biased_pt2: Path
    balanced: Path
    metadata: pd.DataFrame

    def rows(self, split: str) -> np.ndarray:
        return np.nonzero((self.metadata["split"] == split).to_numpy())[0]


def build_cnn_audit_world(root: Path) -> CNNAuditWorld:
    from audit.data.cnn_world import build_cnn_world
    from audit.data.tinyclip import tiny_clip
    from audit.demo import (
        DemoSettings,
        build_demo_bank,
        embed_world,
        make_corpus,
        make_world,
        train_demo_sae,
    )
    from audit.store import open_store

    # One thread: on a small shared CPU, two OpenMP threads per process stall unpredictably.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = replace(DemoSettings(), n_corpus=4000, sae_epochs=20)
        clip = tiny_clip().load(device="cpu")
        manifest = make_world(root / "world", settings)
        embed_world(manifest, clip, root / "store", settings)
        embed_world(make_corpus(root / "corpus", settings), clip, root / "corpus_store", settings)
        train_demo_sae(root / "corpus_store", root / "sae", settings, device="cpu")
        build_demo_bank(root / "sae", root / "bank.yaml", clip)
        cnn = build_cnn_world(manifest, root / "cnn")
    finally:
        torch.set_num_threads(threads)
    return CNNAuditWorld(
        root=root,
        store=root / "store",
        sae=root / "sae",
        bank=root / "bank.yaml",
        biased=cnn.biased,
        biased_pt2=cnn.biased_pt2,
        balanced=cnn.balanced,
        metadata=open_store(root / "store").metadata,
    )
