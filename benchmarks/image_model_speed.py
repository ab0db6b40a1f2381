"""Image-model scoring throughput (images/s) and memory of ``audit.models.score_images``.

    python benchmarks/image_model_speed.py [--arch resnet18] [--images 2000] [--image-size 128]
                                           [--batch-size 64] [--workers 2] [--device auto]
                                           [--format torchscript|pt2] [--json OUT]

The model is a torchvision ResNet with random weights (the cost of a forward pass does not
depend on them) and two outputs, wrapped with its ImageNet normalisation as a user exports it,
saved as TorchScript (or ``torch.export`` ``.pt2``) and loaded back through
:func:`audit.models.load_image_model`. The images are CelebA-shaped JPEGs (178 × 218) of random
noise, so decoding, resizing and cropping are timed too.

* **ours**: ``score_images`` — a ``DataLoader`` whose workers decode and resize while the model
  runs batched forward passes.
* **naive**: what a first script does — for each image, open it, transform it and run the model
  on a batch of one, in the main process.

Both give the same scores (checked; a random model may decide one class for every noise
image, which the benchmark allows). Memory: the main process's resident set is sampled
while scoring a quarter of the images and all of them; streaming keeps the two peaks alike.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from audit.device import resolve_device
from audit.models import load_image_model, score_images
from audit.models.image_scoring import ToModelInput


class Normalised(torch.nn.Module):
    """``[B, 3, H, W]`` in [0, 1] → the backbone on ImageNet-normalised input."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)


def export_model(arch: str, size: int, fmt: str, folder: Path) -> Path:
    import warnings

    import torchvision

    torch.manual_seed(0)
    model = Normalised(getattr(torchvision.models, arch)(weights=None, num_classes=2)).eval()
    example = torch.rand(2, 3, size, size)
    if fmt == "pt2":
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        path = folder / "model.pt2"
        torch.export.save(program, str(path))
        return path
    path = folder / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(str(path))
    return path


def write_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


class PeakRSS:
    """The main process's peak resident set (MiB) while the block runs, sampled every 10 ms."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def naive_scores(paths: list[str], model, size: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    transform = ToModelInput(size)
    out = []
    with torch.inference_mode():
        for path in paths:
            with Image.open(path) as image:
                x = transform(image.convert("RGB"))[None].to(model.device)
            scores = model.module(x)
            out.append(float(scores[0, 1] - scores[0, 0]))
    return np.array(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--naive-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--format", choices=("torchscript", "pt2"), default="torchscript")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    """Seconds and memory of ours (a quarter of the images, then all) and of the naive loop."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        paths = write_images(folder / "images", args.images)
        model = load_image_model(export_model(args.arch, args.image_size, args.format, folder))

        def ours(count: int) -> tuple[float, float, np.ndarray]:
            with PeakRSS() as rss:
                started = time.perf_counter()
                result = score_images(
                    model, paths[:count], image_size=args.image_size, device=device,
                    batch_size=args.batch_size, num_workers=args.workers, allow_constant=True,
                )  # fmt: skip
                seconds = time.perf_counter() - started
            return seconds, rss.peak - rss.start, result.margins

        ours(min(args.batch_size, args.images))  # warm-up: first-call overheads
        _, quarter_mib, _ = ours(max(1, args.images // 4))
        seconds, growth_mib, margins = ours(args.images)
        n_naive = min(args.naive_images, args.images)
        started = time.perf_counter()
        naive = naive_scores(paths[:n_naive], model, args.image_size)
        naive_seconds = time.perf_counter() - started
    ours_rate, naive_rate = args.images / seconds, n_naive / naive_seconds
    return {
        "ours": {"seconds": seconds, "images_per_second": ours_rate},
        "naive": {"seconds": naive_seconds, "images_per_second": naive_rate},
        "speedup_vs_naive": ours_rate / naive_rate,
        "rss_growth_mib": {"quarter": quarter_mib, "all": growth_mib},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "max_abs_difference": float(np.abs(margins[:n_naive] - naive).max()),
        "same_decisions": bool(((margins[:n_naive] > 0) == (naive > 0)).all()),
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    f: dict = {
        "arch": args.arch,
        "format": args.format,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images": args.images,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        **measure(args, device),
    }
    growth = f["rss_growth_mib"]
    print(
        f"{args.arch} ({args.format}) on {device} ({f['threads']} threads), "
        f"{args.images} JPEGs 178×218 → {args.image_size}×{args.image_size}:\n"
        f"  ours  {f['ours']['images_per_second']:8.1f} images/s "
        f"(batch {args.batch_size}, workers: {args.workers})\n"
        f"  naive {f['naive']['images_per_second']:8.1f} images/s (one at a time)\n"
        f"  {f['speedup_vs_naive']:.2f}× faster than naive; same decisions: "
        f"{f['same_decisions']}; max |Δ margin| {f['max_abs_difference']:.2e}\n"
        f"  memory: main process +{growth['quarter']:.0f} MiB over {args.images // 4} images, "
        f"+{growth['all']:.0f} MiB over {args.images}; peak RSS {f['peak_rss_mib']:.0f} MiB "
        f"(main), {f['peak_worker_rss_mib']:.0f} MiB (largest worker)"
    )
    if args.json:
        args.json.write_text(json.dumps(f, indent=2))


if __name__ == "__main__":
    main()
