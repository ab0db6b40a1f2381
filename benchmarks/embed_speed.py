"""Embedding throughput (images/s) of ``audit.encoders.embed_images`` against a naive loop.

    python benchmarks/embed_speed.py [--model ViT-B-32] [--images 512] [--batch-size 64]
                                     [--workers 1] [--device auto] [--precision auto]
                                     [--model-batches N] [--json OUT]

No weights are downloaded: the model is built from its open_clip config with random weights
(the cost of a forward pass does not depend on the weights). The images are JPEGs of random
noise at 256 × 256 written to a temporary folder, so decoding and resizing are timed too.

* **ours**: ``embed_images`` into a store — a ``DataLoader`` with workers decoding and
  preprocessing while the model runs, batched forward passes, shards written to disk.
* **naive**: what a first script does — for each image, open it, preprocess it and run the
  model on a batch of one, in the main process, collecting the rows in a list.

Both produce the same embeddings (checked); the script prints images/s of each and the ratio.

* **model only** (``--model-batches N``): N timed forward passes of random pixel tensors of
  the model's input size at ``--batch-size`` (after one warm-up pass): the model's own rate,
  with no decoding, resizing or copying. Where it is much higher than **ours**, the data
  loading limits (add ``--workers``).

On CUDA the peak memory the embedding run allocated is reported too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from device_stats import device_name, mib, peak_memory_bytes, reset_peak_memory
from PIL import Image

from audit.data.tinyclip import _model_image_size
from audit.encoders import embed_images, finish_store, load_clip
from audit.store import StoreWriter


def write_images(folder: Path, count: int, size: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def naive_embed(paths: list[str], clip) -> np.ndarray:  # type: ignore[no-untyped-def]
    rows = []
    with torch.no_grad():
        for path in paths:
            image = clip.preprocess(Image.open(path).convert("RGB"))[None].to(clip.device)
            rows.append(clip.model.encode_image(image).float().cpu().numpy()[0])
    return np.stack(rows)


@torch.no_grad()
def model_only_rate(clip, batch_size: int, batches: int) -> float:  # type: ignore[no-untyped-def]
    """Images/s of the model's forward pass alone on random input tensors."""
    side = _model_image_size(clip)
    pixels = torch.randn(batch_size, 3, side, side, device=clip.device)
    clip.encode_image_batch(pixels)  # warm-up: kernels chosen, memory allocated
    started = time.perf_counter()
    for _ in range(batches):
        clip.encode_image_batch(pixels)  # returns on the host: the device has finished
    return batch_size * batches / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--naive-images", type=int, default=None, help="Default: all.")
    parser.add_argument("--size", type=int, default=256, help="Side of the test JPEGs.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-batches", type=int, default=0, help="time the model alone")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    clip = load_clip(
        args.model, None, device=args.device, precision=args.precision, allow_random_init=True
    )
    figures: dict = {
        "model": args.model,
        "device": str(clip.device),
        "device_name": device_name(clip.device),
        "precision": clip.precision,
        "threads": torch.get_num_threads(),
        "images": args.images,
        "batch_size": args.batch_size,
        "workers": args.workers,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        paths = write_images(folder / "images", args.images, args.size)
        if args.model_batches:  # first: it also warms the model up for the timed runs
            figures["model_only_images_per_second"] = model_only_rate(
                clip, args.batch_size, args.model_batches
            )
        writer = StoreWriter(folder / "store", clip.embed_dim, model=args.model, modality="image")
        reset_peak_memory(clip.device)
        started = time.perf_counter()
        result = embed_images(
            paths, clip, writer, batch_size=args.batch_size, num_workers=args.workers
        )
        store = finish_store(writer, result)
        ours_seconds = time.perf_counter() - started
        figures["peak_memory_mib"] = mib(peak_memory_bytes(clip.device))
        ours = np.asarray(store.read())

        n_naive = min(args.naive_images or args.images, args.images)
        started = time.perf_counter()
        naive = naive_embed(paths[:n_naive], clip)
        naive_seconds = time.perf_counter() - started
    difference = float(np.abs(ours[:n_naive] - naive).max())
    figures["ours"] = {"seconds": ours_seconds, "images_per_second": args.images / ours_seconds}
    figures["naive"] = {"seconds": naive_seconds, "images_per_second": n_naive / naive_seconds}
    figures["speedup_vs_naive"] = (
        figures["ours"]["images_per_second"] / figures["naive"]["images_per_second"]
    )
    figures["max_abs_difference"] = difference
    print(
        f"{args.model} on {clip.device} ({clip.precision}, {torch.get_num_threads()} threads), "
        f"{args.images} JPEGs {args.size}×{args.size}:\n"
        f"  ours  {figures['ours']['images_per_second']:8.1f} images/s "
        f"(batch {args.batch_size}, {args.workers} workers)\n"
        f"  naive {figures['naive']['images_per_second']:8.1f} images/s (one at a time)\n"
        f"  {figures['speedup_vs_naive']:.2f}× faster than naive; "
        f"max |Δ| between the two {difference:.2e}"
    )
    if args.model_batches:
        print(f"  model only {figures['model_only_images_per_second']:8.1f} images/s (no decoding)")
    if figures["peak_memory_mib"] is not None:
        print(f"  peak memory {figures['peak_memory_mib']:,.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
