"""Scoring every row of a store with the user's image model, streamed.

The images come from the store's metadata ``path`` column (relative paths are relative to the
store folder) or, for a CelebA store, from the CelebA root and the rows' ids
(:func:`image_paths`). :func:`score_images` reads them with a :class:`torch.utils.data.DataLoader`
(``num_workers`` processes decode and resize while the model runs), sends batches to the device
and keeps only the scores: memory holds the batch in the model and the two each worker
prepares ahead, whatever the size of the data set.

Images are converted to RGB and, given an image size, resized to cover it (aspect ratio kept)
and centre-cropped — torchvision's usual evaluation transform; without one they are used as
they are, so every image of a batch must have the same size.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from audit.device import resolve_device
from audit.encoders import ProgressCallback, _ImageFiles
from audit.errors import InputError
from audit.models.image_model import ImageModel
from audit.models.outputs import ModelDecisions, check_varied, interpret_scores, two_class_margins

ImageSize = int | tuple[int, int]


def image_paths(
    metadata: pd.DataFrame | None,
    store_dir: str | os.PathLike[str],
    celeba_root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """One image path per store row: from the CelebA root (matched by the rows' ``id``) or
    from the metadata's ``path`` column."""
    if metadata is None:
        raise InputError(
            f"{store_dir} has no metadata.csv: an image model needs each row's image "
            "(a 'path' column, or an 'id' column and the CelebA root)"
        )
    if celeba_root is not None:
        return _celeba_paths(metadata, celeba_root)
    if "path" not in metadata.columns:
        raise InputError(
            f"{store_dir}/metadata.csv has no 'path' column: the image model cannot find the "
            "images (embed them from a folder or a manifest with paths, or give the CelebA root)"
        )
    paths = metadata["path"]
    if paths.isna().any():
        row = int(paths.isna().to_numpy().argmax())
        raise InputError(f"{store_dir}/metadata.csv: row {row} has no image path")
    base = Path(store_dir).resolve()
    return [p if os.path.isabs(p) else str(base / p) for p in paths.astype(str)]


def _celeba_paths(metadata: pd.DataFrame, root: str | os.PathLike[str]) -> list[str]:
    from audit.data.celeba import read_celeba

    if "id" not in metadata.columns:
        raise InputError("the store's metadata has no 'id' column to find CelebA images by")
    table = read_celeba(root)
    by_id = dict(zip(table.table["id"].astype(str), table.table["path"], strict=True))
    ids = metadata["id"].astype(str)
    missing = ~ids.isin(by_id.keys())
    if missing.any():
        raise InputError(
            f"{int(missing.sum())} store rows are not images of the CelebA folder {root} "
            f"(first: id {ids[missing].iloc[0]!r})"
        )
    return [by_id[i] for i in ids]


class ToModelInput:
    """PIL image → float32 ``[3, H, W]`` in [0, 1], resized to cover ``size`` and centre-cropped.

    A square size is torchvision's evaluation transform exactly (``Resize(size)``, which scales
    the shorter side, then ``CenterCrop(size)`` and ``ToTensor()``), so a model's predictions
    written with that transform match these. A top-level class so DataLoader workers can
    pickle it.
    """

    def __init__(self, size: ImageSize | None = None) -> None:
        self.size = (size, size) if isinstance(size, int) else size

    def __call__(self, image: Image.Image) -> Tensor:
        from torchvision.transforms import functional as tf

        if self.size is not None and (image.height, image.width) != self.size:
            height, width = self.size
            if height == width:
                cover = [height]  # the shorter side, as torchvision's Resize(int)
            else:
                scale = max(height / image.height, width / image.width)
                cover = [
                    max(height, round(image.height * scale)),
                    max(width, round(image.width * scale)),
                ]
            image = tf.center_crop(tf.resize(image, cover), [height, width])
        return tf.pil_to_tensor(image).to(torch.float32).div_(255.0)


def _collate(
    items: list[tuple[int, Tensor | None, str]],
) -> tuple[list[int], Tensor | None, list[tuple[int, str]]]:
    """Stack the images of one batch; unreadable ones, and ones whose size differs from the
    batch's most common size (the odd one out, whichever comes first), come back as
    ``(row, error)``."""
    good = [(row, t) for row, t, _ in items if t is not None]
    bad = [(row, error) for row, t, error in items if t is None]
    if good:
        # most_common keeps the first seen among equally common sizes
        shape = Counter(t.shape for _, t in good).most_common(1)[0][0]
        for row, t in good:
            if t.shape != shape:
                size = f"{t.shape[2]}×{t.shape[1]}, not {shape[2]}×{shape[1]}"
                bad.append((row, f"its size is {size} like the others (set --image-size)"))
        good = [(row, t) for row, t in good if t.shape == shape]
    stacked = torch.stack([t for _, t in good]) if good else None
    return [row for row, _ in good], stacked, bad


def score_images(
    model: ImageModel,
    paths: Sequence[str],
    rows: Sequence[int] | np.ndarray | None = None,
    *,
    image_size: ImageSize | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    allow_constant: bool = False,
) -> ModelDecisions:
    """Run ``model`` on the images of store ``rows`` (default: every row; ``paths`` has one
    path per store row) and read its scores into decisions (see :mod:`audit.models.outputs`).

    A missing or unreadable image, a model that raises, returns the wrong shape or NaN/inf,
    and (unless ``allow_constant``) decisions that are all the same are each an
    :class:`InputError`.
    """
    wanted = np.arange(len(paths)) if rows is None else np.asarray(rows, dtype=np.int64)
    size = _image_size(model, image_size)
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    model.to(dev)
    batch = model.fixed_batch or max(1, int(batch_size))
    loader = torch.utils.data.DataLoader(
        _ImageFiles(list(map(str, paths)), wanted.tolist(), ToModelInput(size)),
        batch_size=batch,
        shuffle=False,
        num_workers=max(0, int(num_workers)),
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
    )
    outputs: list[np.ndarray] = []
    done = 0
    if progress is not None:
        progress(0, wanted.size)
    for good_rows, images, bad in loader:
        if bad:
            row, error = bad[0]
            raise InputError(f"cannot use image {paths[row]} (store row {row}): {error}")
        assert images is not None
        scores = model.scores(_pad(images, model.fixed_batch))[: len(good_rows)]
        _check_finite(scores, good_rows, paths, model.source)
        outputs.append(scores)
        done += len(good_rows)
        if progress is not None:
            progress(done, wanted.size)
    return _decisions(wanted, outputs, model.source, allow_constant)


def _image_size(model: ImageModel, image_size: ImageSize | None) -> ImageSize | None:
    if image_size is None:
        return model.fixed_size
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(size) < 1:
        raise InputError(f"--image-size must be a positive number of pixels, got {image_size}")
    if model.fixed_size is not None and size != model.fixed_size:
        h, w = model.fixed_size
        raise InputError(
            f"{model.source}: the exported model takes {h}×{w} images, not {size[0]}×{size[1]} "
            "(leave --image-size out to use its size)"
        )
    return size


def _pad(images: Tensor, fixed_batch: int | None) -> Tensor:
    """An exported program with a static batch size gets full batches (the last one padded by
    repeating its last image; the extra scores are dropped)."""
    if fixed_batch is None or images.shape[0] == fixed_batch:
        return images
    extra = images[-1:].expand(fixed_batch - images.shape[0], *images.shape[1:])
    return torch.cat([images, extra])


def _check_finite(scores: np.ndarray, rows: list[int], paths: Sequence[str], source: str) -> None:
    finite = np.isfinite(scores).reshape(len(rows), -1).all(1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(
            f"{source}: the model returned NaN or inf for {int((~finite).sum())} images of a "
            f"batch (first: {paths[rows[i]]})"
        )


def _check_two_signs(scores: np.ndarray, source: str) -> None:
    """A single output of one sign, not all in [0, 1], is neither a probability nor a usable
    logit (:func:`interpret_scores`). A predictions file is then usually percentages or
    log-probabilities; a model more often decides one class for every image because of what it
    is given (another image size, another pixel range), so say that first."""
    if scores.min() < 0.0 < scores.max() or (scores.min() >= 0.0 and scores.max() <= 1.0):
        return
    positive = scores.min() >= 0.0
    raise InputError(
        f"{source}: the model's output is {'≥' if positive else '≤'} 0 for all {scores.size} "
        f"images and not a probability (not all in [0, 1]), so read as a logit it decides the "
        f"{'positive' if positive else 'negative'} class for every image; check what it is "
        "given (--image-size; float32 pixels in [0, 1], normalised by the model itself), or "
        "make it return the logit or the probability if it returns log-probabilities or "
        "percentages"
    )


def _decisions(
    rows: np.ndarray, outputs: list[np.ndarray], source: str, allow_constant: bool
) -> ModelDecisions:
    if not outputs:
        raise InputError(f"{source}: no images to score")
    widths = {o.ndim for o in outputs}
    if len(widths) > 1:
        raise InputError(f"{source}: the model's output shape changed between batches")
    scores = np.concatenate(outputs)
    if scores.ndim == 2:
        decisions, margins, kind = two_class_margins(scores)
    else:
        _check_two_signs(scores, source)
        decisions, margins, kind = interpret_scores(scores, source)
    if not allow_constant:
        check_varied(decisions, source)
    return ModelDecisions(rows, decisions, margins, kind)
