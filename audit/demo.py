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
7. the bias audit of the probe on the test split, with mean ablation (:func:`audit.demo_audits.audit_step`):
   ``audit.json``,
   ``audit.html`` and ``audit.xml``; the JSON records ``"demo": {"planted_concept": "red"}``;
8. ``demo.json``: every path, the summary of each step and its time (each step's time is also
   logged as it ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import __version__
from audit.demo_steps import (  # noqa: F401 (the demo's public names, as before)
    DEMO_VOCABULARIES,
    PLANTED_CONCEPT,
    SPURIOUS_COLUMN,
    TARGET_COLUMN,
    TARGET_SHAPES,
    DemoSettings,
    Progress,
    _tiny_image_size,
    build_demo_bank,
    check_scene_counts,
    embed_world,
    fit_probe,
    make_corpus,
    make_world,
    train_demo_sae,
)
from audit.errors import InputError
from audit.fileio import ensure_dir, write_json, write_text


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
    check_scene_counts(settings)  # before minutes of work that a later step would waste
    threads = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    try:
        return _run_steps(
            out, settings, log=log, cache_dir=cache_dir, device=device, progress=progress
        )
    finally:
        torch.set_num_threads(threads)


class _StepClock:
    """Times the demo's steps into ``timings`` and logs each step's time as it ends."""

    def __init__(self, say: Log, timings: dict[str, float]) -> None:
        self.say, self.timings = say, timings

    @contextmanager
    def step(self, name: str, message: str | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        if message is not None:
            self.say(message)
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"{name} took {self.timings[name]:.1f} s")


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
    root = _claim_folder(Path(out))
    started = time.perf_counter()
    clock = _StepClock(say, {})
    with clock.step("tiny_clip"):
        tc = tiny_clip(cache_dir=cache_dir, log=say)
    ctx = _demo_context(root, settings, tc, device, clock.timings)
    clip = tc.load(device=device)
    _data_steps(ctx, clip, clock, progress)
    _audit_steps(ctx, clock, progress)
    clock.timings["total"] = round(time.perf_counter() - started, 2)
    say(f"the demo took {clock.timings['total']:.1f} s")
    write_demo_json(ctx)
    return ctx


#: Written first into the demo's folder: later runs may overwrite what is there.
DEMO_MARKER = ".msae-audit-demo"


def _claim_folder(out: Path) -> Path:
    """``out``, created, if it is empty or the demo's own (its marker, or the ``demo.json`` of
    an earlier run): the demo replaces ``store/``, ``sae/``, ``head.npz``… there, so a folder
    holding anything else (a user's own store or SAE) is refused, not overwritten."""
    root = ensure_dir(out).resolve()
    ours = (root / DEMO_MARKER).exists() or (root / "demo.json").exists()
    if not ours and any(root.iterdir()):
        raise InputError(
            f"{root} is not empty and holds no earlier demo: the demo writes store/, sae/, "
            "head.npz and reports there, replacing what is there; give an empty or new --out"
        )
    write_text(root / DEMO_MARKER, "written by msae-audit demo; it may overwrite this folder\n")
    return root


def _demo_context(
    root: Path, settings: DemoSettings, tc: Any, device: str, timings: dict[str, float]
) -> DemoContext:
    """The demo's layout under ``root``, with the tiny CLIP's summary."""
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
    return ctx


def _data_steps(ctx: DemoContext, clip: Any, clock: _StepClock, progress: Progress | None) -> None:
    """The corpus and the task world embedded, the SAE, its bank, the probe."""
    settings = ctx.settings
    with clock.step(
        "corpus", f"rendering and embedding a corpus of {settings.n_corpus} scenes for the SAE"
    ):
        corpus = make_corpus(ctx.corpus_dir, settings)
        embed_world(corpus, clip, ctx.corpus_store, settings, _stage(progress, "embed corpus"))
    with clock.step(
        "world",
        "rendering the task world with a planted shortcut (train: circles red 95 %, squares 5 %)",
    ):
        manifest = make_world(ctx.world_dir, settings)
        embed_world(manifest, clip, ctx.store, settings, _stage(progress, "embed world"))
    with clock.step("sae", "training a Matryoshka SAE on the corpus"):
        ctx.summary["sae"] = train_demo_sae(
            ctx.corpus_store,
            ctx.sae,
            settings,
            device=ctx.device,
            progress=_stage(progress, "train SAE"),
        )
    with clock.step("bank", "naming latents (concept bank)"):
        ctx.summary["bank"] = build_demo_bank(
            ctx.sae, ctx.bank, clip, probe_images=ctx.corpus_store, progress=progress
        )
    with clock.step("probe", "fitting the logistic-regression probe on the train split"):
        ctx.summary["probe"] = fit_probe(ctx.store, ctx.head, settings)


def _audit_steps(ctx: DemoContext, clock: _StepClock, progress: Progress | None) -> None:
    """The probe's audit, discover without the spurious column, the own model's audit."""
    with clock.step(
        "audit",
        "auditing the probe on the test split (reports: audit.json, audit.html, audit.xml)",
    ):
        ctx.summary["audit"] = _audit_step(ctx, progress)
    with clock.step(
        "discover",
        f"discover without the {ctx.spurious_column!r} column (reports: discover.json, .html, .xml)",
    ):
        ctx.summary["discover"] = _discover_step(ctx, progress)
    with clock.step(
        "image_model",
        "your own model: a small CNN on the images, audited with --classifier-input image",
    ):
        from audit.demo_image_model import image_model_step

        ctx.summary["image_model"] = image_model_step(ctx, progress)


def _stage(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: progress(name, done, total)) if progress else None


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


# The audits live in their own module; the old private names stay for callers and tests.
from audit.demo_audits import audit_step as _audit_step, discover_step as _discover_step  # noqa: E402, I001
