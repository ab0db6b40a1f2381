"""A tiny open_clip model trained on the synthetic world, cached, and loaded like any CLIP.

The model is a custom open_clip config (a narrow ModifiedResNet on 32×32 images and a 2-layer
text transformer with a 24-token context), trained from scratch with open_clip's own
``ClipLoss`` on rendered scenes and their template captions. Colour and background are the
easiest cues, so in 60 % of the batches three quarters of the scenes share one colour and one
background (hard negatives): their captions can only be told apart by shape, texture, size,
position and marker. The other quarter stays random, which keeps BatchNorm's batch statistics
from erasing colour (in a batch of a single colour, batch normalisation removes it).

The trained weights ship with the package (``assets/tinyclip-v<N>.safetensors.gz``, 2.6 MB:
float16, and the token-embedding rows of tokens the world never uses are zero, which compress),
with ``assets/tinyclip-v<N>.json`` recording their sha256, the settings and what the training
measured. :func:`tiny_clip` checks the sha256 and unpacks them once into a cache folder —
``$MSAE_AUDIT_CACHE/tinyclip/v<N>-<sha256 prefix>/`` or ``~/.cache/msae-audit/tinyclip/…`` — as
``tinyclip.json`` (the open_clip model config), ``tinyclip.safetensors`` (the weights) and
``info.json``. Everything downstream loads it through exactly the user path,
``--model tinyclip.json --pretrained tinyclip.safetensors``. Training happens only when the
weights are regenerated (``scripts/train_tinyclip.py --version N``, with ``ASSET_VERSION``
raised to ``N``, whenever the world or the training changes).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from audit.data import world
from audit.errors import InputError
from audit.fileio import cache_root, ensure_dir, write_bytes, write_json, write_safetensors

CONFIG_FILE = "tinyclip.json"
WEIGHTS_FILE = "tinyclip.safetensors"
INFO_FILE = "info.json"
#: The shipped weights: bump the version whenever they are regenerated.
ASSET_VERSION = 1
ASSET_DIR = Path(__file__).resolve().parent / "assets"


def asset_paths(version: int = ASSET_VERSION, directory: Path = ASSET_DIR) -> tuple[Path, Path]:
    """``(weights .safetensors.gz, record .json)`` of shipped version ``version``."""
    stem = directory / f"tinyclip-v{version}"
    return stem.with_name(stem.name + ".safetensors.gz"), stem.with_name(stem.name + ".json")


#: The open_clip model config (written verbatim as ``tinyclip.json``).
MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {
        "context_length": 24,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}


@dataclass(frozen=True)
class TinyClipSettings:
    seed: int = 0
    train_scenes: int = 6000
    steps: int = 1600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    hard_fraction: float = 0.6  # batches built around one colour and background
    hard_share: float = 0.75  # of such a batch, the share drawn from that colour/background
    eval_scenes: int = 600


@dataclass(frozen=True)
class TinyClip:
    """Paths of a trained tiny CLIP and what its training reported."""

    directory: Path
    info: dict[str, Any]

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / WEIGHTS_FILE

    @property
    def zero_shot(self) -> dict[str, float]:
        return dict(self.info.get("zero_shot_accuracy", {}))

    def load(self, device: str = "auto"):  # type: ignore[no-untyped-def]
        """The model as a :class:`~audit.encoders.ClipEncoder`, through the user path."""
        from audit.encoders import load_clip

        return load_clip(str(self.config_path), str(self.checkpoint_path), device=device)


def tiny_clip(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
    assets: Path = ASSET_DIR,
) -> TinyClip:
    """The shipped tiny CLIP, unpacked into the cache on first use (after its sha256 check)."""
    weights, record_path = asset_paths(directory=assets)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        blob = weights.read_bytes()
    except (OSError, ValueError) as exc:
        raise InputError(f"the tiny CLIP's shipped weights are unreadable ({exc})") from None
    root = ensure_dir(Path(cache_dir) if cache_dir is not None else cache_root()) / "tinyclip"
    final = root / f"v{record['version']}-{record['sha256'][:16]}"
    if _complete(final):
        return TinyClip(final, json.loads((final / INFO_FILE).read_text(encoding="utf-8")))
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise InputError(
            f"{weights} does not match the sha256 recorded in {record_path.name} "
            "(a damaged install: reinstall msae-audit)"
        )
    say = log or (lambda message: None)
    say(f"unpacking the tiny CLIP's weights (v{record['version']}) into {final}")
    staging = ensure_dir(root / f".staging-{final.name}-{os.getpid()}")
    try:
        write_bytes(staging / WEIGHTS_FILE, gzip.decompress(blob))
        write_json(staging / CONFIG_FILE, record["model_config"])
        info = {**record, "source": str(weights)}
        write_json(staging / INFO_FILE, info)
        try:
            os.replace(staging, final)  # atomic publish of the whole folder
        except OSError:
            if not _complete(final):  # another process won the race with a complete copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TinyClip(final, info)


def pack_weights(
    trained: str | os.PathLike[str],
    version: int = ASSET_VERSION,
    directory: Path = ASSET_DIR,
) -> dict[str, Any]:
    """Write a trained folder (from :func:`train_tiny_clip`) as the shipped asset of
    ``version``: the weights gzip-compressed (no timestamp, so the bytes are reproducible)
    and a record with their sha256 and the training's ``info.json``. Returns the record."""
    trained = Path(trained)
    info = json.loads((trained / INFO_FILE).read_text(encoding="utf-8"))
    blob = gzip.compress((trained / WEIGHTS_FILE).read_bytes(), compresslevel=9, mtime=0)
    weights, record_path = asset_paths(version, ensure_dir(directory))
    write_bytes(weights, blob)
    record = {
        "version": version,
        "file": weights.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        **info,
    }
    write_json(record_path, record)
    return record


def _complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in (CONFIG_FILE, WEIGHTS_FILE, INFO_FILE))


def _normalise(pixels: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def train_tiny_clip(
    settings: TinyClipSettings,
    out_dir: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train from scratch, write config + weights + ``info.json`` into ``out_dir``;
    ``progress(step, total)`` is called after every step."""
    from audit.encoders import load_clip

    out = ensure_dir(Path(out_dir))
    started = time.perf_counter()
    config_path = out / CONFIG_FILE
    config_path.write_text(json.dumps(MODEL_CONFIG, indent=2) + "\n", encoding="utf-8")
    torch.manual_seed(settings.seed)
    clip = load_clip(str(config_path), None, device="cpu", allow_random_init=True)
    model, tokenizer = clip.model, clip.tokenizer
    size = int(MODEL_CONFIG["vision_cfg"]["image_size"])

    scenes, images = _training_images(settings, size)
    losses, seen_tokens = _train_steps(model, tokenizer, scenes, images, settings, progress)
    train_seconds = time.perf_counter() - started
    _write_trained_weights(model, seen_tokens, out / WEIGHTS_FILE)
    # Measure what users get: reload through --model/--pretrained, images through PIL.
    reloaded = load_clip(str(config_path), str(out / WEIGHTS_FILE), device="cpu")
    accuracy = zero_shot_accuracy(reloaded, settings.eval_scenes, seed=settings.seed + 1000)
    info = {
        "model_config": MODEL_CONFIG,
        "settings": asdict(settings),
        "train_seconds": round(train_seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "trained_tokens": int(seen_tokens.sum()),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "zero_shot_accuracy": accuracy,
        "eval": f"{settings.eval_scenes} held-out scenes (seed {settings.seed + 1000}), one "
        "prompt per attribute value (audit.data.world.PROMPTS), argmax of cosine",
    }
    write_json(out / INFO_FILE, info)
    return info


def _training_images(settings: TinyClipSettings, size: int) -> tuple[pd.DataFrame, torch.Tensor]:
    """The training scenes and their normalised images."""
    import open_clip

    scenes = world.sample_scenes(settings.train_scenes, seed=settings.seed)
    pixels = world.render_scenes(scenes, seed=settings.seed, image_size=size)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return scenes, _normalise(pixels, mean, std)


def _train_steps(
    model: torch.nn.Module,
    tokenizer: Any,
    scenes: pd.DataFrame,
    images: torch.Tensor,
    settings: TinyClipSettings,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[float], torch.Tensor]:
    """The contrastive training loop; returns each step's loss and which tokens the captions
    used."""
    import open_clip

    records = scenes.to_dict("records")
    rng = np.random.default_rng([settings.seed, 0x7C11])
    hard_pools = _hard_negative_pools(scenes, settings.batch_size)
    seen_tokens = torch.zeros(int(MODEL_CONFIG["text_cfg"]["vocab_size"]), dtype=torch.bool)
    model.train()
    optimizer = _adamw(model, settings)
    loss_fn = open_clip.ClipLoss()
    max_logit_scale = float(np.log(100.0))
    losses = []
    for step in range(settings.steps):
        rows = rng.choice(len(records), settings.batch_size, replace=False)
        if rng.random() < settings.hard_fraction:
            pool = hard_pools[int(rng.integers(len(hard_pools)))]
            n_hard = int(settings.batch_size * settings.hard_share)
            rows[:n_hard] = rng.choice(pool, n_hard, replace=len(pool) < n_hard)
        tokens = tokenizer([world.caption(records[i], rng) for i in rows])
        seen_tokens[tokens.flatten()] = True
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * _lr_factor(step, settings)
        image_features, text_features, logit_scale = model(images[rows], tokens)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_logit_scale)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, settings.steps)
    return losses, seen_tokens


def _write_trained_weights(model: torch.nn.Module, seen_tokens: torch.Tensor, path: Path) -> None:
    """The trained weights as the shipped safetensors file (float16, unused tokens zeroed)."""
    model.eval()
    with torch.no_grad():
        # Rows of tokens no caption used were never trained (weight decay only shrank their
        # random start); zeros say "unknown word" as well and make the file compress ~10×.
        model.token_embedding.weight[~seen_tokens] = 0.0
    # float16 storage: halves the shipped file; the zero-shot accuracy is measured on
    # these rounded weights, reloaded into the float32 model as users load them.
    weights = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    write_safetensors(path, weights, metadata={"format": "open_clip state_dict"})


def _adamw(model: torch.nn.Module, settings: TinyClipSettings) -> torch.optim.Optimizer:
    kwargs = {"lr": settings.lr, "weight_decay": settings.weight_decay}
    try:
        # The fused kernel matters on CPU: the 49408-token embedding is updated every step.
        return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), **kwargs)


def _lr_factor(step: int, settings: TinyClipSettings) -> float:
    """Linear warm-up, then cosine decay to 0."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1.0 + float(np.cos(np.pi * progress)))


def _hard_negative_pools(scenes: pd.DataFrame, batch_size: int) -> list[np.ndarray]:
    """Row sets sharing colour and background: in such a batch only the other attributes
    separate the captions."""
    keys = scenes["colour"] + "|" + scenes["background"]
    pools = [np.nonzero((keys == k).to_numpy())[0] for k in sorted(keys.unique())]
    return [p for p in pools if len(p) >= 8] or [np.arange(len(scenes))]


def zero_shot_accuracy(clip: Any, n_scenes: int = 600, seed: int = 1000) -> dict[str, float]:
    """Zero-shot accuracy per attribute on freshly rendered scenes: each image is assigned the
    attribute value whose prompt (``world.PROMPTS``) has the highest cosine similarity."""
    size = _model_image_size(clip)
    scenes = world.sample_scenes(n_scenes, seed=seed)
    pixels = world.render_scenes(scenes, seed=seed, image_size=size)
    batch = torch.stack([clip.preprocess(Image.fromarray(p)) for p in pixels])
    image_features = _unit(clip.encode_image_batch(batch))
    result = {}
    for attribute, values in world.ATTRIBUTES.items():
        prompts = [world.prompt_for(attribute, v) for v in values]
        text_features = _unit(clip.encode_texts(prompts))
        predicted = np.asarray(values)[(image_features @ text_features.T).argmax(1)]
        result[attribute] = round(float((predicted == scenes[attribute].to_numpy()).mean()), 4)
    return result


def _model_image_size(clip: Any) -> int:
    size = getattr(clip.model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def describe(tc: TinyClip) -> str:
    acc = ", ".join(f"{k} {v:.0%}" for k, v in tc.zero_shot.items())
    return f"tiny CLIP {tc.directory.name}: trained in {tc.info.get('train_seconds')} s; zero-shot {acc}"


__all__ = [
    "ASSET_VERSION",
    "MODEL_CONFIG",
    "TinyClip",
    "TinyClipSettings",
    "asset_paths",
    "cache_root",
    "pack_weights",
    "tiny_clip",
    "train_tiny_clip",
    "zero_shot_accuracy",
]
