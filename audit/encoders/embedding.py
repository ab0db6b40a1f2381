"""Batched, resumable embedding of images and texts into a :class:`~audit.store.StoreWriter`."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from audit.encoders.clip import ClipEncoder, ProgressCallback, l2_normalize
from audit.errors import InputError
from audit.fileio import atomic_path, write_json
from audit.store import PARTIAL_DIR, StoreWriter

SKIPPED_FILE = "skipped.csv"
SKIPPED_EARLIER = "left out by an earlier run"
_EMBED_STATE = "embed-state.json"


@dataclass(frozen=True)
class SkippedImage:
    row: int  # position in the input list
    path: str
    error: str


@dataclass
class EmbedResult:
    rows: int  # rows in the store
    skipped: list[SkippedImage]
    seconds: float
    resumed_from: int  # input rows an earlier, interrupted run had already done
    truncated_texts: int = 0


class _ImageFiles(torch.utils.data.Dataset):
    """Loads and preprocesses one image; failures come back as an error string, not an
    exception, so a bad file never kills a worker and the caller decides what to do."""

    def __init__(
        self,
        paths: Sequence[str],
        rows: Sequence[int],
        transform: Callable,
        skipped: Collection[int] = (),
    ) -> None:
        self.paths, self.rows, self.transform = paths, rows, transform
        self.skipped = frozenset(skipped)  # rows an earlier run left out: not read again

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        row = self.rows[i]
        if row in self.skipped:
            return row, None, SKIPPED_EARLIER
        try:
            with warnings.catch_warnings():
                # Large but allowed images (above PIL's warning size, below its refusal size)
                # are read as they are; the warning would print two lines per image.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(self.paths[row]) as image:
                    image.load()
                    rgb = to_rgb(image)
            return row, self.transform(rgb), ""
        except FileNotFoundError:
            return row, None, "file not found"
        except Image.DecompressionBombError as exc:
            return row, None, f"refused: {exc}"
        except Exception as exc:  # PIL raises many types for damaged files
            message = (str(exc).strip().splitlines() or [""])[0][:200]
            return row, None, f"{type(exc).__name__}: {message}" if message else type(exc).__name__


_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``, as CLIP's preprocessing expects (alpha dropped, CMYK,
    palette and grey converted, as open_clip does).

    16-bit grey (PNG, TIFF) is scaled from its 0..65535 range: PIL's ``convert("RGB")`` clips
    it at 255 instead, turning almost every pixel white. 32-bit integer or float pixels (modes
    I and F) have no fixed range to scale from, so they raise :class:`ValueError`.
    """
    if image.mode in _SIXTEEN_BIT_GREY or (image.mode == "I" and image.format == "PNG"):
        grey = np.asarray(image).astype(np.uint32)  # a PNG's mode I is 16-bit grey
        return Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        kind = "integer" if image.mode == "I" else "floating-point"
        raise ValueError(
            f"32-bit {kind} pixels have no fixed range to read as colours "
            "(save the image with 8 or 16 bits per channel)"
        )
    return image.convert("RGB")


def _collate(
    items: list[tuple[int, torch.Tensor | None, str]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(row, tensor) for row, tensor, _ in items if tensor is not None]
    bad = [(row, error) for row, tensor, error in items if tensor is None]
    stacked = torch.stack([t for _, t in good]) if good else None
    return [row for row, _ in good], stacked, bad


def embed_images(
    paths: Sequence[str],
    clip: ClipEncoder,
    writer: StoreWriter,
    *,
    metadata: pd.DataFrame | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    normalize: bool = False,
    progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Embed ``paths`` in order into ``writer`` (resuming an interrupted run), without
    finalising it. ``metadata`` (row-aligned with ``paths``) goes into ``metadata.csv`` for
    the rows that are stored. An unreadable image raises an :class:`InputError` naming the
    file, or with ``skip_bad_images`` is left out and recorded (see :func:`finish_store`).
    """
    started = time.perf_counter()
    _check_writer(writer, clip, normalize)
    if metadata is not None and len(metadata) != len(paths):
        raise InputError(f"{len(metadata)} metadata rows for {len(paths)} images")
    state = _EmbedState.open(writer, _input_digest(paths, metadata))
    start = state.input_position(writer.rows_done, len(paths))
    # A resumed run starts reading at the batch the interruption fell in and drops the rows
    # already stored: its batches then hold the same images as an uninterrupted run's, so
    # every row is bit-identical (a row's embedding depends on its batch through the kernels).
    batch_size = max(1, batch_size)
    rows = range(start - start % batch_size, len(paths))
    dataset = _ImageFiles(list(map(str, paths)), rows, clip.preprocess, state.skipped_rows)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,  # row order is the input order
        num_workers=max(0, num_workers),
        collate_fn=_collate,
        pin_memory=clip.device.type == "cuda",
    )
    if progress is not None:
        progress(start, len(paths))
    for good_rows, images, bad in loader:
        for row, error in bad:
            if error == SKIPPED_EARLIER:
                continue
            if not skip_bad_images:
                raise InputError(
                    f"cannot read image {paths[row]}: {error} "
                    "(use --skip-bad-images to leave unreadable images out)"
                )
            state.add_skip(SkippedImage(row, str(paths[row]), error))
        new = [i for i, row in enumerate(good_rows) if row >= start]
        if new:
            features = clip.encode_image_batch(images)[new]
            if normalize:
                features = l2_normalize(features)
            meta = None if metadata is None else metadata.iloc[[good_rows[i] for i in new]]
            writer.append(features, meta)
        if progress is not None:
            last = max([*good_rows, *(r for r, _ in bad)])
            progress(last + 1, len(paths))
    return EmbedResult(
        rows=writer.rows_written,
        skipped=state.skipped,
        seconds=time.perf_counter() - started,
        resumed_from=start,
    )


def embed_texts(
    texts: Sequence[str],
    clip: ClipEncoder,
    writer: StoreWriter,
    *,
    metadata: pd.DataFrame | None = None,
    batch_size: int = 256,
    normalize: bool = False,
    progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Embed ``texts`` in order into ``writer`` (resuming), without finalising it."""
    started = time.perf_counter()
    _check_writer(writer, clip, normalize)
    if metadata is not None and len(metadata) != len(texts):
        raise InputError(f"{len(metadata)} metadata rows for {len(texts)} texts")
    _EmbedState.open(writer, _input_digest(texts, metadata))
    start = writer.rows_done
    truncated = 0
    batch_size = max(1, batch_size)
    for lo in range(start - start % batch_size, len(texts), batch_size):  # as embed_images
        hi = min(lo + batch_size, len(texts))
        features, full = clip.encode_text_batch(texts[lo:hi])
        truncated += full
        features, lo = features[max(lo, start) - lo :], max(lo, start)
        if normalize:
            features = l2_normalize(features)
        writer.append(features, None if metadata is None else metadata.iloc[lo:hi])
        if progress is not None:
            progress(hi, len(texts))
    return EmbedResult(writer.rows_written, [], time.perf_counter() - started, start, truncated)


def finish_store(writer: StoreWriter, result: EmbedResult) -> Any:
    """Record what was skipped (``skipped.csv`` and the manifest) and publish the store."""
    skipped_path = writer.out / SKIPPED_FILE
    if result.skipped:
        table = pd.DataFrame(
            {
                "row": [s.row for s in result.skipped],
                "path": [s.path for s in result.skipped],
                "error": [s.error for s in result.skipped],
            }
        )
        with atomic_path(skipped_path) as tmp:
            table.to_csv(tmp, index=False)
        writer.extra["skipped"] = len(result.skipped)
        writer.extra["skipped_file"] = SKIPPED_FILE
    else:
        skipped_path.unlink(missing_ok=True)
        writer.extra["skipped"] = 0
    if result.truncated_texts:
        writer.extra["texts_filling_context"] = result.truncated_texts
    return writer.finalize()


def _check_writer(writer: StoreWriter, clip: ClipEncoder, normalize: bool) -> None:
    if writer.params["dim"] != clip.embed_dim:
        raise InputError(
            f"the store expects dimension {writer.params['dim']} but the model gives "
            f"{clip.embed_dim}"
        )
    if bool(writer.params["normalized"]) != bool(normalize):
        # The manifest must say honestly whether rows are L2-normalised.
        raise InputError("the store's 'normalized' flag does not match the normalize option")


def _input_digest(items: Sequence[Any], metadata: pd.DataFrame | None) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(str(item).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    if metadata is not None:
        digest.update(",".join(map(str, metadata.columns)).encode())
    return digest.hexdigest()


def _read_record(path: Path) -> dict[str, Any]:
    """What an interrupted run recorded (its input digest, its skipped images), or ``{}`` when
    there is no record or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class _EmbedState:
    """What an interrupted run needs besides the writer's shards: which input it was reading
    and which images it skipped. Kept in the writer's partial folder, rewritten atomically
    whenever an image is skipped (before any later row can reach a finished shard)."""

    path: Path
    input_sha256: str
    skipped: list[SkippedImage]

    @property
    def skipped_rows(self) -> set[int]:
        return {s.row for s in self.skipped}

    @classmethod
    def open(cls, writer: StoreWriter, digest: str) -> _EmbedState:
        path = writer.out / PARTIAL_DIR / _EMBED_STATE
        state = cls(path, digest, [])
        data = _read_record(path) if writer.rows_done > 0 else {}
        if writer.overwrite and writer.rows_done > 0 and data.get("input_sha256") != digest:
            # --overwrite replaces what is in --out: an interrupted run of other inputs (or
            # one whose input record is gone) is discarded and this run starts from row 0.
            writer.start_over()
        if path.exists() and writer.rows_done > 0:
            if data.get("input_sha256") not in (None, digest):
                raise InputError(
                    f"{writer.out}: an interrupted run for a different input list exists "
                    f"(--overwrite starts over, or delete {writer.out / PARTIAL_DIR} or use "
                    "another --out)"
                )
            state.skipped = [SkippedImage(**s) for s in data.get("skipped", [])]
        elif writer.rows_done > 0 and not path.exists():
            raise InputError(
                f"{writer.out}: found an interrupted store without its input record "
                f"(delete {writer.out / PARTIAL_DIR} or use another --out)"
            )
        state.save()
        return state

    def add_skip(self, item: SkippedImage) -> None:
        if item.row not in self.skipped_rows:
            self.skipped.append(item)
            self.skipped.sort(key=lambda s: s.row)
            self.save()

    def save(self) -> None:
        write_json(
            self.path,
            {
                "input_sha256": self.input_sha256,
                "skipped": [s.__dict__ for s in self.skipped],
            },
        )

    def input_position(self, rows_done: int, n_inputs: int) -> int:
        """The first input row not yet stored: ``rows_done`` stored rows plus the skipped
        rows among them."""
        skipped = self.skipped_rows
        stored = 0
        for row in range(n_inputs):
            if stored == rows_done:
                return row
            if row not in skipped:
                stored += 1
        return n_inputs
