"""``msae-audit demo``: the whole product, offline, on the synthetic world in a few minutes.

1. the tiny CLIP (its shipped weights, unpacked into the cache: :mod:`audit.data.tinyclip`);
2. a broad corpus of the world (every attribute independent and uniform), embedded into
   ``corpus_store/``: the SAE is trained on it, as a real SAE is trained on a large generic
   image corpus and then applied to the task data;
3. the task data, a world with a planted shortcut: the classifier's target is circle vs
   square; in the train split circles are red 95 % of the time and squares 5 %; the test split
   is balanced (red with probability 1/2 for both shapes), so a classifier that uses "red"
   fails there. It is embedded into ``store/`` whose ``metadata.csv`` holds the attributes,
   ``split``, ``is_circle`` (target) and ``is_red`` (the planted spurious attribute);
4. a Matryoshka SAE trained on the corpus;
5. a concept bank naming its latents from the world's vocabulary, checked against the corpus
   images (a name is kept only where the latent predicts the word on held-out images);
6. a logistic-regression probe fit on the train split, saved as a linear head ``head.npz``
   (``weight`` [2, d], ``bias`` [2], acting on raw embeddings; class 1 = circle). It is
   strongly regularised (C = 0.002 on standardised embeddings), as a quick probe often is,
   which makes it take the cheap colour cue: the demo needs a classifier with a shortcut;
7. the bias audit of the probe on the test split, with mean ablation (:func:`_audit_step`):
   ``audit.json``,
   ``audit.html`` and ``audit.xml``; the JSON records ``"demo": {"planted_concept": "red"}``;
8. ``demo.json``: every path, the summary of each step and its time (each step's time is also
   logged as it ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit import __version__
from audit.errors import InputError
from audit.fileio import atomic_path, ensure_dir, write_json

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
    workers: int = 0
    # Torch threads for the demo's work (0: leave torch's setting). Its kernels are small
    # (64-d embeddings, 32-pixel images): a second OpenMP thread gains little on a quiet
    # 2-core machine and stalls at every barrier on a busy one (docs/demo.md: 390 s with two
    # threads against 61 s with one, same load, same results).
    threads: int = 1


@dataclass
class DemoContext:
    """Where everything the demo made lives; the audit step reads from here."""

    out: Path
    settings: DemoSettings
    tiny_clip_model: Path  # --model
    tiny_clip_pretrained: Path  # --pretrained
    corpus_dir: Path
    corpus_store: Path
    world_dir: Path
    store: Path
    sae: Path
    bank: Path
    head: Path
    json_path: Path
    planted_concept: str = PLANTED_CONCEPT
    target_column: str = TARGET_COLUMN
    spurious_column: str = SPURIOUS_COLUMN
    device: str = "auto"
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    audit_result: Any = None  # the typed audit result (audit.fairness.AuditResult)

    def paths(self) -> dict[str, str]:
        return {
            "model": str(self.tiny_clip_model),
            "pretrained": str(self.tiny_clip_pretrained),
            "corpus": str(self.corpus_dir),
            "corpus_store": str(self.corpus_store),
            "world": str(self.world_dir),
            "store": str(self.store),
            "metadata": str(self.store / "metadata.csv"),
            "sae": str(self.sae),
            "bank": str(self.bank),
            "head": str(self.head),
        }


Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    *,
    log: Log | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> DemoContext:
    """Run every step into ``out`` (overwriting earlier demo output there); ``progress``
    follows the long steps (embedding, training, naming, the audit)."""
    import torch

    settings = settings or DemoSettings()
    threads = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    try:
        return _run_steps(
            out, settings, log=log, cache_dir=cache_dir, device=device, progress=progress
        )
    finally:
        torch.set_num_threads(threads)


def _run_steps(
    out: str | Path,
    settings: DemoSettings,
    *,
    log: Log | None,
    cache_dir: str | Path | None,
    device: str,
    progress: Progress | None,
) -> DemoContext:
    from audit.data.tinyclip import tiny_clip

    say = log or (lambda message: None)
    root = ensure_dir(Path(out)).resolve()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        say(f"{name} took {timings[name]:.1f} s")

    t0 = time.perf_counter()
    tc = tiny_clip(cache_dir=cache_dir, log=say)
    step("tiny_clip", t0)
    ctx = DemoContext(
        out=root,
        settings=settings,
        tiny_clip_model=tc.config_path,
        tiny_clip_pretrained=tc.checkpoint_path,
        corpus_dir=root / "corpus",
        corpus_store=root / "corpus_store",
        world_dir=root / "world",
        store=root / "store",
        sae=root / "sae",
        bank=root / "concept_banks" / "demo.yaml",
        head=root / "head.npz",
        json_path=root / "demo.json",
        device=device,
        timings=timings,
    )
    ctx.summary["tiny_clip"] = {
        "weights_version": tc.info.get("version"),
        "train_seconds": tc.info.get("train_seconds"),
        "zero_shot_accuracy": tc.zero_shot,
        "cache": str(tc.directory),
    }

    clip = tc.load(device=device)
    t0 = time.perf_counter()
    say(f"rendering and embedding a corpus of {settings.n_corpus} scenes for the SAE")
    corpus = make_corpus(ctx.corpus_dir, settings)
    embed_world(corpus, clip, ctx.corpus_store, settings, _stage(progress, "embed corpus"))
    step("corpus", t0)

    t0 = time.perf_counter()
    say("rendering the task world with a planted shortcut (train: circles red 95 %, squares 5 %)")
    manifest = make_world(ctx.world_dir, settings)
    embed_world(manifest, clip, ctx.store, settings, _stage(progress, "embed world"))
    step("world", t0)

    t0 = time.perf_counter()
    say("training a Matryoshka SAE on the corpus")
    ctx.summary["sae"] = train_demo_sae(
        ctx.corpus_store, ctx.sae, settings, device=device, progress=_stage(progress, "train SAE")
    )
    step("sae", t0)

    t0 = time.perf_counter()
    say("naming latents (concept bank)")
    ctx.summary["bank"] = build_demo_bank(
        ctx.sae, ctx.bank, clip, probe_images=ctx.corpus_store, progress=progress
    )
    step("bank", t0)

    t0 = time.perf_counter()
    say("fitting the logistic-regression probe on the train split")
    ctx.summary["probe"] = fit_probe(ctx.store, ctx.head, settings)
    step("probe", t0)

    t0 = time.perf_counter()
    say("auditing the probe on the test split (reports: audit.json, audit.html, audit.xml)")
    ctx.summary["audit"] = _audit_step(ctx, progress)
    step("audit", t0)

    t0 = time.perf_counter()
    say(
        f"discover without the {ctx.spurious_column!r} column (reports: discover.json, .html, .xml)"
    )
    ctx.summary["discover"] = _discover_step(ctx, progress)
    step("discover", t0)

    t0 = time.perf_counter()
    say("your own model: a small CNN on the images, audited with --classifier-input image")
    from audit.demo_image_model import image_model_step

    ctx.summary["image_model"] = image_model_step(ctx, progress)
    step("image_model", t0)
    timings["total"] = round(time.perf_counter() - started, 2)
    say(f"the demo took {timings['total']:.1f} s")
    write_demo_json(ctx)
    return ctx


def _stage(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: progress(name, done, total)) if progress else None


# ------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------


def make_corpus(corpus_dir: Path, settings: DemoSettings) -> pd.DataFrame:
    """Scenes with independent, uniform attributes (no shortcut), for training the SAE."""
    from audit.data import world

    scenes = world.sample_scenes(settings.n_corpus, seed=settings.seed + 2)
    return world.write_world(
        corpus_dir, scenes, seed=settings.seed + 2, image_size=_tiny_image_size()
    )


def make_world(world_dir: Path, settings: DemoSettings) -> pd.DataFrame:
    """Train and test scenes (the shortcut only in train) rendered to PNGs + manifest.csv."""
    from audit.data import world
    from audit.data.shortcuts import split_shortcut_scenes

    scenes = split_shortcut_scenes(
        settings.n_train,
        settings.n_test,
        settings.seed,
        spurious=PLANTED_CONCEPT,
        p_spurious_given_a=settings.p_red_given_circle_train,
        p_spurious_given_b=settings.p_red_given_square_train,
        target_shapes=TARGET_SHAPES,
    )
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


# ------------------------------------------------------------------------------------------
# The audit
# ------------------------------------------------------------------------------------------


# The gate the demo audits against: the shortcut should fail it (the point of the demo), and
# the report says which concept did it. Same thresholds as examples/gate.yaml.
DEMO_GATE = {
    "gates": {
        "worst_group_accuracy": {"min": 0.80},
        "accuracy_gap": {"max": 0.10},
        "flagged_concepts": {"max": 0},
    },
    "concepts": {"min_dwga": 0.02, "max_q": 0.05, "allowlist": []},
    "bootstrap": {"samples": 1000, "seed": 0},
    "min_group_size": 100,
}


def _audit_step(ctx: DemoContext, progress: Progress | None = None) -> dict[str, Any]:
    """Audit the probe on the test split with the demo SAE and bank; write ``audit.json``,
    ``audit.html`` and ``audit.xml`` under ``ctx.out`` (the JSON records the planted concept).
    The gate is expected to fail: that is the shortcut being caught."""
    from audit.fairness.gate import parse_gate
    from audit.report import audit_files

    demo_fields = _demo_fields(ctx)
    outcome = audit_files(
        ctx.store,
        sae=ctx.sae,
        bank=ctx.bank,
        classifier=ctx.head,
        target=ctx.target_column,
        spurious=ctx.spurious_column,
        out_dir=ctx.out,
        stem="audit",
        gate=parse_gate(DEMO_GATE, where="the demo gate"),
        extra={"demo": demo_fields},
        seed=ctx.settings.seed,
        split="test",
        # The shortcut hurts the circles that are *not* red (the probe reads "no red" as
        # "square"), where a zero ablation of "red" changes nothing; setting the latent to its
        # mean removes the cue in both directions.
        ablation="mean",
        class_names=(
            f"{ctx.target_column}=1:{TARGET_SHAPES[0]}",
            f"{ctx.target_column}=0:{TARGET_SHAPES[1]}",
            f"{ctx.spurious_column}=1:{ctx.planted_concept}",
            f"{ctx.spurious_column}=0:not {ctx.planted_concept}",
        ),
        device=ctx.device,
        progress=progress,
    )
    ctx.audit_result = outcome.audit
    result = outcome.result
    concepts = result.get("concepts", [])
    planted = [c for c in concepts if c.get("name") == ctx.planted_concept]
    audit_summary = {
        "verdict": result["verdict"],
        "exit_code": outcome.exit_code,
        "worst_group_accuracy": result.get("worst_group_accuracy"),
        "top_concept": concepts[0].get("name") if concepts else None,
        "planted_concept_rank": planted[0]["rank"] if planted else None,
        "planted_concept_flagged": bool(planted and planted[0].get("flagged")),
        "planted_concept_delta_wga": planted[0].get("delta_wga") if planted else None,
        "reports": {k: str(v) for k, v in outcome.paths.items()},
    }
    return audit_summary


def _discover_step(ctx: DemoContext, progress: Progress | None = None) -> dict[str, Any]:
    """``msae-audit discover`` on the same probe and split with the spurious column dropped
    from the labels: the shortcut must be found with no one naming it."""
    from audit.discover import DiscoverSettings
    from audit.fairness import AuditSettings
    from audit.report.discover import discover_files
    from audit.store import open_store

    metadata = open_store(ctx.store).metadata
    assert metadata is not None
    labels = metadata.drop(columns=[ctx.spurious_column])
    base = AuditSettings(ctx.target_column, "", seed=ctx.settings.seed, split="test",
                         ablation="mean", device=ctx.device)  # fmt: skip
    outcome = discover_files(
        ctx.store, sae=ctx.sae, bank=ctx.bank, classifier=ctx.head, target=ctx.target_column,
        labels=labels, out_dir=ctx.out, stem="discover", settings=DiscoverSettings(base),
        extra={"demo": _demo_fields(ctx)}, progress=progress,
    )  # fmt: skip
    concepts = outcome.result.concepts
    planted = [c for c in concepts if c.name == ctx.planted_concept]
    return {
        "top_concept": concepts[0].name if concepts else None,
        "flagged": [c.name for c in concepts if c.flagged],
        "planted_concept_rank": planted[0].rank if planted else None,
        "planted_concept_flagged": bool(planted and planted[0].flagged),
        "planted_concept_delta_wga": planted[0].delta_wga if planted else None,
        "reports": {f"discover_{k}": str(v) for k, v in outcome.paths.items()},
    }


def _demo_fields(ctx: DemoContext) -> dict[str, Any]:
    return {
        "planted_concept": ctx.planted_concept,
        "target_column": ctx.target_column,
        "spurious_column": ctx.spurious_column,
        "target_classes": {"1": TARGET_SHAPES[0], "0": TARGET_SHAPES[1]},
        "audit_split": "test",
    }


def write_demo_json(ctx: DemoContext) -> None:
    document = {
        "schema": "msae-audit/demo",
        "version": 1,
        "msae_audit_version": __version__,
        "demo": _demo_fields(ctx),
        "paths": {
            **ctx.paths(),
            **ctx.summary.get("audit", {}).get("reports", {}),
            **{
                f"image_model_{k}": v
                for k, v in ctx.summary.get("image_model", {}).get("reports", {}).items()
            },
            **ctx.summary.get("discover", {}).get("reports", {}),
        },
        "summary": ctx.summary,
        "seconds": ctx.timings,
    }
    write_json(ctx.json_path, document)
