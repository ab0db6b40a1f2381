"""The demo's settings and its steps before the audits: the corpus and the task world
(rendered scenes), their embeddings, the SAE, the concept bank and the probe. Each step is a
function of its inputs; :mod:`audit.demo` runs them in order and times them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.fileio import atomic_path

Progress = Callable[[str, int, int], None]  # (stage, done, total)

PLANTED_CONCEPT = "red"
TARGET_SHAPES = ("circle", "square")  # the probe's class 1 and class 0
TARGET_COLUMN = "is_circle"
SPURIOUS_COLUMN = "is_red"
DEMO_VOCABULARIES = ["world"]


@dataclass(frozen=True)
class DemoSettings:
    seed: int = 0
    n_corpus: int = 8000
    n_train: int = 3000
    n_test: int = 2000
    p_red_given_circle_train: float = 0.95
    p_red_given_square_train: float = 0.05
    sae_expansion: int = 8
    sae_k_min: int = 16
    sae_epochs: int = 10
    sae_batch_size: int = 256
    sae_lr: float = 1e-3
    probe_c: float = 0.002
    embed_batch_size: int = 256
    # DataLoader processes decoding and preprocessing images while the model runs: on 2 cores
    # embedding the demo's 8 000 scenes takes 8.4-9.0 s with 2 against 13.5-18.3 s with none.
    workers: int = 2
    # Torch threads for the demo's work (0: leave torch's setting). Its kernels are small
    # (64-d embeddings, 32-pixel images): a second OpenMP thread gains little on a quiet
    # 2-core machine and stalls at every barrier on a busy one (docs/demo.md: 390 s with two
    # threads against 61 s with one, same load, same results).
    threads: int = 1


def make_corpus(corpus_dir: Path, settings: DemoSettings) -> pd.DataFrame:
    """Scenes with independent, uniform attributes (no shortcut), for training the SAE."""
    from audit.data import world

    scenes = world.sample_scenes(settings.n_corpus, seed=settings.seed + 2)
    return world.write_world(
        corpus_dir, scenes, seed=settings.seed + 2, image_size=_tiny_image_size()
    )


#: The fewest scenes the demo's steps work with. The CNN trains two epochs of 64-image batches
#: on the train split: on 5, 20 or 100 scenes (1 to 4 steps) it can decide one class for
#: every test image, and its audit, the last step, fails. The test split needs every
#: shape × red group for the audits' group metrics (checked on the sampled scenes too).
MIN_TRAIN_SCENES = 1000
MIN_TEST_SCENES = 100


def check_scene_counts(settings: DemoSettings) -> None:
    """Refuse, before any work, scene counts the demo's later steps cannot use: fewer than
    the minimums, or a sample (the seed decides it) with a train split of one shape or a
    test split missing a shape × red group."""
    for flag, n, least in (
        ("--train-scenes", settings.n_train, MIN_TRAIN_SCENES),
        ("--test-scenes", settings.n_test, MIN_TEST_SCENES),
    ):
        if n < least:
            raise InputError(f"{flag} must be at least {least}, got {n}")
    from audit.data.world import attribute_of

    scenes = world_scenes(settings)  # cheap: sampled, not rendered
    red = scenes[attribute_of(PLANTED_CONCEPT)] == PLANTED_CONCEPT
    train, test = scenes["split"] == "train", scenes["split"] == "test"
    for shape in TARGET_SHAPES:
        is_shape = scenes["shape"] == shape
        if not (train & is_shape).any():
            raise InputError(
                f"--train-scenes {settings.n_train} (seed {settings.seed}) gives no "
                f"{shape}s to train on; use more scenes"
            )
        for is_red in (True, False):
            if not (test & is_shape & (red == is_red)).any():
                kind = f"{'' if is_red else 'non-'}{PLANTED_CONCEPT} {shape}s"
                raise InputError(
                    f"--test-scenes {settings.n_test} (seed {settings.seed}) gives no {kind}, "
                    "and the audit needs every shape × colour group; use more scenes"
                )


def world_scenes(settings: DemoSettings) -> pd.DataFrame:
    """The task world's train and test scenes (the shortcut only in train), not rendered."""
    from audit.data.shortcuts import split_shortcut_scenes

    return split_shortcut_scenes(
        settings.n_train,
        settings.n_test,
        settings.seed,
        spurious=PLANTED_CONCEPT,
        p_spurious_given_a=settings.p_red_given_circle_train,
        p_spurious_given_b=settings.p_red_given_square_train,
        target_shapes=TARGET_SHAPES,
    )


def make_world(world_dir: Path, settings: DemoSettings) -> pd.DataFrame:
    """Train and test scenes (the shortcut only in train) rendered to PNGs + manifest.csv."""
    from audit.data import world

    scenes = world_scenes(settings)
    return world.write_world(
        world_dir,
        scenes,
        seed=settings.seed,
        image_size=_tiny_image_size(),
        extra_columns={
            TARGET_COLUMN: (scenes["shape"] == TARGET_SHAPES[0]).astype(int).to_numpy(),
            SPURIOUS_COLUMN: (scenes["colour"] == PLANTED_CONCEPT).astype(int).to_numpy(),
        },
    )


def _tiny_image_size() -> int:
    from audit.data.tinyclip import MODEL_CONFIG

    return int(MODEL_CONFIG["vision_cfg"]["image_size"])


def embed_world(
    manifest: pd.DataFrame,
    clip: Any,
    store: Path,
    settings: DemoSettings,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    from audit.encoders import embed_images, finish_store
    from audit.store import StoreWriter

    writer = StoreWriter(
        store,
        clip.embed_dim,
        model=clip.model_id,
        pretrained=clip.pretrained,
        modality="image",
        normalized=False,
        extra={
            "source": str(Path(manifest["path"].iloc[0]).parent.parent / "manifest.csv"),
            **clip.manifest_fields(),
        },
        overwrite=True,
    )
    result = embed_images(
        manifest["path"].tolist(),
        clip,
        writer,
        metadata=manifest,
        batch_size=settings.embed_batch_size,
        num_workers=settings.workers,
        progress=progress,
    )
    finish_store(writer, result)


def train_demo_sae(
    store_path: Path,
    sae_dir: Path,
    settings: DemoSettings,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    from audit.sae import SAEConfig, matryoshka_k_list
    from audit.sae.train import TrainConfig, train_sae
    from audit.store import open_store

    store = open_store(store_path)
    n = store.dim * settings.sae_expansion
    cfg = SAEConfig(
        arch="matryoshka",
        d_in=store.dim,
        n_latents=n,
        k_list=matryoshka_k_list(n, settings.sae_k_min),
        weighting="uw",
        embedding_model=store.model,
        pretrained=store.pretrained,
        modality=store.modality,
    )
    for name in ("sae.safetensors", "config.json", "training.json", "checkpoint.safetensors"):
        (sae_dir / name).unlink(missing_ok=True)
    train_cfg = TrainConfig(
        epochs=settings.sae_epochs,
        batch_size=settings.sae_batch_size,
        lr=settings.sae_lr,
        seed=settings.seed,
        device=device,
        checkpoint_every=0,
    )
    total_steps = train_cfg.total_steps(store.count)
    result = train_sae(
        store,
        cfg,
        train_cfg,
        sae_dir,
        on_step=(lambda state, _m: progress(state.step, total_steps)) if progress else None,
    )
    final = result.summary.get("final", {})
    return {
        "n_latents": n,
        "k_list": list(cfg.k_list or ()),
        "steps": result.summary["steps"],
        "seconds": result.summary["seconds"],
        "fvu": final.get("fvu"),
        "dead_latents": result.summary["dead_latents"],
    }


def build_demo_bank(
    sae_dir: Path,
    bank_path: Path,
    clip: Any,
    probe_images: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Name the SAE's latents from the world's words; with ``probe_images`` (the corpus
    store) the names are checked against those images."""
    from audit.concepts import build_bank, save_bank

    result = build_bank(
        sae_path=sae_dir,
        vocab_specs=DEMO_VOCABULARIES,
        bank_name="demo",
        clip=clip,
        probe_images=probe_images,
        progress=progress,
    )
    save_bank(result.bank, bank_path)
    bank = result.bank
    planted = [c for c in bank.concepts if c.validated and c.name == PLANTED_CONCEPT]
    return {
        **bank.extra["summary"],
        "threshold": round(bank.threshold, 4),
        "planted_concept_latents": [c.latent for c in planted],
        "names": sorted({c.name for c in bank.concepts if c.validated and c.name}),
    }


def fit_probe(store_path: Path, head_path: Path, settings: DemoSettings) -> dict[str, Any]:
    """Logistic regression on standardised train-split embeddings, folded into a linear head
    on raw embeddings: ``logits = x @ weight.T + bias`` with softmax equal to the probe's
    probabilities (class 1 = circle)."""
    from sklearn.linear_model import LogisticRegression

    from audit.store import open_store

    store = open_store(store_path)
    meta = store.metadata
    if meta is None:
        raise InputError(f"{store_path} has no metadata.csv")
    x = store.read()
    y = meta[TARGET_COLUMN].to_numpy()
    train = (meta["split"] == "train").to_numpy()
    mu, sigma = x[train].mean(0), x[train].std(0) + 1e-6
    probe = LogisticRegression(C=settings.probe_c, max_iter=5000)
    probe.fit((x[train] - mu) / sigma, y[train])
    w = probe.coef_[0] / sigma
    b = float(probe.intercept_[0] - (w * mu).sum())
    # Two symmetric logits: softmax([−s/2, s/2]) = [1 − σ(s), σ(s)] with s = w·x + b.
    weight = np.stack([-w / 2, w / 2]).astype(np.float32)
    bias = np.array([-b / 2, b / 2], dtype=np.float32)
    with atomic_path(head_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, weight=weight, bias=bias)
    predicted = (x @ weight.T + bias).argmax(1)
    groups = {}
    test = ~train
    for t in (1, 0):
        for s in (1, 0):
            cell = test & (y == t) & (meta[SPURIOUS_COLUMN].to_numpy() == s)
            name = f"{TARGET_SHAPES[0] if t else TARGET_SHAPES[1]}, {'red' if s else 'not red'}"
            groups[name] = {
                "n": int(cell.sum()),
                "accuracy": round(float((predicted[cell] == y[cell]).mean()), 4),
            }
    return {
        "train_accuracy": round(float((predicted[train] == y[train]).mean()), 4),
        "test_accuracy": round(float((predicted[test] == y[test]).mean()), 4),
        "test_groups": groups,
        "worst_group_accuracy": min(g["accuracy"] for g in groups.values()),
        "classes": [TARGET_SHAPES[1], TARGET_SHAPES[0]],
    }
