"""Image classifiers whose bias is known: small CNNs on the demo's circle-vs-square world.

:func:`build_cnn_world` trains two :class:`ShapeCNN` on rendered scenes (32 × 32 pixels) and
exports them as users export theirs:

* **biased** — trained on the task world's train split, where the label leaks through colour
  (circles are red 95 % of the time, squares 5 %) and only briefly, so it takes the cheap cue:
  on a balanced test split it errs on the circles that are not red and the squares that are;
* **balanced** — trained longer on freshly rendered scenes where colour says nothing about the
  shape (red with probability ½ for both): it learns the shape.

Each CNN takes float32 ``[B, 3, H, W]`` in [0, 1], normalises itself and returns ``[B, 2]``
class scores (index 1 = the first target shape, "circle"). The biased one is also exported with
:mod:`torch.export` (``.pt2``, dynamic batch size). A few seconds of training each on 2 CPU
cores; the tests and the demo both build their CNNs here.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor, nn

from audit.errors import InputError
from audit.fileio import ensure_dir, write_bytes

TARGET_SHAPES = ("circle", "square")  # class 1, class 0
SPURIOUS_COLOUR = "red"


class ShapeCNN(nn.Module):
    """Three 3 × 3 convolutions, a global max-pool (shape evidence such as a corner counts
    wherever it is) and a linear layer to two class scores."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * w, 2)

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] → ``[B, 2]`` class scores (the module normalises)."""
        return self.head(self.features((images - 0.5) / 0.25))


@dataclass(frozen=True)
class CNNSettings:
    width: int = 12
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0


@dataclass(frozen=True)
class CNNWorldSettings:
    seed: int = 0
    biased: CNNSettings = field(default_factory=lambda: CNNSettings(epochs=2))
    balanced: CNNSettings = field(default_factory=lambda: CNNSettings(epochs=5))
    n_balanced: int = 3000  # freshly rendered scenes the balanced CNN trains on


@dataclass(frozen=True)
class CNNWorld:
    biased: Path  # TorchScript
    biased_pt2: Path  # torch.export
    balanced: Path  # TorchScript
    summary: dict[str, Any]


def images_to_tensor(pixels: np.ndarray) -> Tensor:
    """``[N, H, W, 3]`` uint8 → float32 ``[N, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)


def read_images(paths: Sequence[str]) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 from image files of one size."""
    arrays = []
    for p in paths:
        with Image.open(p) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    return np.stack(arrays)


def train_shape_cnn(pixels: np.ndarray, y: np.ndarray, settings: CNNSettings) -> ShapeCNN:
    """Adam on the cross-entropy, ``settings.epochs`` passes in seeded random order, the learning
    rate decayed linearly to zero (a steadier final model than a constant rate); returned in
    eval mode."""
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    model = ShapeCNN(settings.width)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    x = images_to_tensor(pixels)
    target = torch.tensor(np.asarray(y), dtype=torch.long)  # a copy: y may be a read-only view
    steps = settings.epochs * -(-len(x) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            loss = nn.functional.cross_entropy(model(x[batch]), target[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def predict(model: nn.Module, pixels: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The class-1 decisions (0/1) of a CNN on ``[N, H, W, 3]`` uint8 images."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            scores = model(images_to_tensor(pixels[start : start + batch_size]))
            out.append((scores[:, 1] > scores[:, 0]).numpy())
    return np.concatenate(out).astype(np.int8)


def export_torchscript(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """``torch.jit.script`` the model and save it atomically."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9: jit is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model.eval())
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def export_program(model: nn.Module, path: str | os.PathLike[str], image_size: int) -> Path:
    """``torch.export`` the model with a dynamic batch size and save it atomically (``.pt2``)."""
    example = torch.rand(4, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def balanced_scenes(n: int, seed: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels, y)`` of ``n`` circle/square scenes where red says nothing about the shape."""
    from audit.data import world
    from audit.data.shortcuts import shortcut_scenes

    scenes = shortcut_scenes(
        n,
        seed,
        target_shapes=TARGET_SHAPES,
        spurious=SPURIOUS_COLOUR,
        p_spurious_given_a=0.5,
        p_spurious_given_b=0.5,
    )
    pixels = world.render_scenes(scenes, seed, image_size)
    return pixels, (scenes["shape"] == TARGET_SHAPES[0]).to_numpy().astype(np.int8)


def build_cnn_world(
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    settings: CNNWorldSettings | None = None,
    target_column: str = "is_circle",
) -> CNNWorld:
    """Train the biased CNN on ``manifest``'s train split (the demo world's, see
    :func:`audit.demo.make_world`) and the balanced one on fresh balanced scenes; export them
    to ``out_dir`` (``cnn_biased.pt``, ``cnn_biased.pt2``, ``cnn_balanced.pt``)."""
    settings = settings or CNNWorldSettings()
    if "split" not in manifest.columns or target_column not in manifest.columns:
        raise InputError(f"the world manifest needs 'split' and '{target_column}' columns")
    train = manifest[manifest["split"] == "train"]
    if train.empty:
        raise InputError("the world manifest has no train split")
    out = ensure_dir(Path(out_dir))
    pixels = read_images(train["path"].tolist())
    y = train[target_column].to_numpy().astype(np.int64)
    biased = train_shape_cnn(pixels, y, replace(settings.biased, seed=settings.seed))
    fresh, fresh_y = balanced_scenes(settings.n_balanced, settings.seed + 101, pixels.shape[1])
    balanced = train_shape_cnn(fresh, fresh_y, replace(settings.balanced, seed=settings.seed))
    summary = {
        "biased": {"train_rows": len(y), "train_accuracy": _accuracy(biased, pixels, y)},
        "balanced": {
            "train_rows": len(fresh_y),
            "train_accuracy": _accuracy(balanced, fresh, fresh_y),
        },
        "image_size": int(pixels.shape[1]),
    }
    return CNNWorld(
        biased=export_torchscript(biased, out / "cnn_biased.pt"),
        biased_pt2=export_program(biased, out / "cnn_biased.pt2", pixels.shape[1]),
        balanced=export_torchscript(balanced, out / "cnn_balanced.pt"),
        summary=summary,
    )


def _accuracy(model: nn.Module, pixels: np.ndarray, y: np.ndarray) -> float:
    return round(float((predict(model, pixels) == y).mean()), 4)
